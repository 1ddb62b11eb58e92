//! The S3 backend: snapshots as objects in an S3-compatible bucket (AWS S3, MinIO, Garage,
//! Ceph RGW, R2, ...), through `object_store`, so that several snapkeep instances can serve one
//! set of sessions.
//!
//! Layout, under `PREFIX/`:
//! - `<session>/<id>.json`: a snapshot, exactly the bytes that were sent, as in a data directory;
//! - `<session>/head.json`: the session's head, the list of its committed snapshots (`head.rs`).
//!
//! What the seam's words mean here:
//! - **The truth** is the heads. A snapshot object that no head lists is not served: it is what
//!   a write left that lost its race or was killed before its commit, and the sweep removes it
//!   once it is an hour old. So a snapshot put into the bucket by hand is not seen; `POST` its
//!   bytes (or `snapkeep restore` an old one) instead.
//! - **A transaction** stages the new snapshot (`PUT` with `If-None-Match: *`, so no write ever
//!   replaces another's object), then commits by replacing the head with a conditional `PUT`
//!   (`If-Match` the ETag it was decided on; `If-None-Match: *` for a session's first). A
//!   commit refused by the bucket means another writer committed first: the head is read again
//!   and the decision taken again (a conditional request then usually gets its `412`), and the
//!   staged object is removed. Snapshots the commit dropped are deleted after it.
//! - **A deleted session** keeps its head, empty: S3 cannot delete an object only if it is
//!   unchanged, and a head deleted while another instance commits to it would lose that write.
//! - **Last used** is the head's `usedAt`, written by a save of unchanged content at most once a
//!   minute.
//! - **The latest kept in memory**: each session's head (with its ETag) and small newest
//!   snapshot; every read revalidates the head with a conditional `GET` (`If-None-Match`), so a
//!   write through any instance is seen by the next read on every other.
//! - **Count** (quotas) lists the bucket: each instance counts what the bucket holds once a
//!   minute and books its own writes in between, so a quota may be passed by what other
//!   instances wrote in the last minute.
//! - **Sweep** and **verify** walk the bucket; **probe** lists the prefix, or writes and
//!   deletes a probe object.
//! - **Faults**: every request has a timeout (`SNAPKEEP_STORAGE_TIMEOUT`) and two retries within
//!   it; a store that is down, slow or failing is [`StoreError::Unavailable`], never a success.

mod head;
mod settings;

pub use self::settings::Settings;

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{
    GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    UpdateVersion, WriteMultipart,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use self::head::{Head, IN_FLIGHT_SECS};
use super::name::{SessionId, SnapshotId, hex, sha256_hex};
use super::seam::{Content, Done, Need, NewSnapshot, Plan, View};
use super::{
    Counts, Expected, Opened, Report, SessionSummary, Snapshot, SnapshotBody, SnapshotInfo,
    StoreError, Which,
};

/// The head's name in a session's prefix (no snapshot id looks like it).
const HEAD: &str = "head.json";
/// Probe objects, at the top of the prefix (no session id starts with a dot).
const PROBE_PREFIX: &str = ".snapkeep-probe-";
/// How many times a read follows its snapshot being pruned under it before it is a `404`.
const PRUNED_UNDER_A_READ: usize = 5;
/// Snapshots up to this size are read whole; larger ones go through a temp file.
const READ_WHOLE_UP_TO: u64 = 256 * 1024;
/// Only latest snapshots up to this size are kept in memory...
const KEEP_UP_TO: usize = 64 * 1024;
/// ... all of them together under this many bytes...
const KEEP_BUDGET: usize = 8 * 1024 * 1024;
/// ... and heads of at most this many sessions.
const KEEP_SESSIONS: usize = 4096;

pub struct S3 {
    store: Arc<dyn ObjectStore>,
    url: String,
    prefix: String,
    /// Heads as last seen, with their versions, and the small latest snapshots.
    kept: Mutex<Kept>,
    /// Reads of a latest answered from memory.
    hits: AtomicU64,
    probes: AtomicU64,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3").field("url", &self.url).finish()
    }
}

/// A session's head as this instance last saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: Arc<Head>,
    version: UpdateVersion,
    /// The newest snapshot's content, when it is small and was read or written here.
    latest: Option<Bytes>,
}

#[derive(Debug, Default)]
struct Kept {
    sessions: HashMap<SessionId, Seen>,
    /// Bytes of the latest contents held.
    bytes: usize,
}

/// A commit's answer from the bucket.
enum Commit {
    Done(UpdateVersion),
    /// Another writer changed the head first.
    Lost,
}

impl S3 {
    pub fn new(settings: &Settings) -> Self {
        let client = settings
            .client()
            .expect("checked when the settings were read");
        Self {
            store: Arc::new(client),
            url: settings.url(),
            prefix: settings.prefix.clone(),
            kept: Mutex::default(),
            hits: AtomicU64::new(0),
            probes: AtomicU64::new(0),
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn latest_reads_from_memory(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    fn key(&self, rest: &str) -> Path {
        match self.prefix.is_empty() {
            true => Path::from(rest),
            false => Path::from(format!("{}/{rest}", self.prefix)),
        }
    }

    fn head_key(&self, session: &SessionId) -> Path {
        self.key(&format!("{session}/{HEAD}"))
    }

    fn snapshot_key(&self, session: &SessionId, id: &SnapshotId) -> Path {
        self.key(&format!("{session}/{id}.json"))
    }

    pub async fn transact<R, F>(
        &self,
        session: &SessionId,
        need: Need,
        mut decide: F,
    ) -> Result<Done<R>, StoreError>
    where
        F: FnMut(&dyn View) -> Result<(Plan, R), StoreError> + Send + 'static,
        R: Send + 'static,
    {
        // Start from what this instance saw last: if another wrote since, the commit is
        // refused and costs one round trip more.
        let mut seen = match self.kept(session) {
            Some(seen) => Some(seen),
            None => self.fetch_head(session, None).await?.unwrap_or(None),
        };
        loop {
            let head = seen.as_ref().map(|s| s.head.clone()).unwrap_or_default();
            let latest = match (need.latest_content, head.newest()) {
                (true, Some(newest)) => Some(
                    self.latest_content(session, seen.as_ref(), &newest.id)
                        .await?,
                ),
                _ => None,
            };
            let view = S3View {
                head: &head,
                latest,
            };
            let (plan, outcome) = decide(&view)?;
            let now = OffsetDateTime::now_utc();
            let Some(next) = head.next(&plan, now) else {
                return Ok(Done {
                    outcome,
                    not_removed: Vec::new(),
                });
            };
            if let Some(new) = &plan.write
                && !self.stage(session, new).await?
            {
                continue; // that id is taken: decide again, at a later time
            }
            let version = seen.as_ref().map(|s| &s.version);
            match self.commit(session, &next, version).await? {
                Commit::Done(version) => {
                    self.committed(session, next, version, &plan);
                    self.remove_objects(session, &plan.remove).await;
                    return Ok(Done {
                        outcome,
                        not_removed: Vec::new(),
                    });
                }
                Commit::Lost => {
                    seen = self.fetch_head(session, None).await?.unwrap_or(None);
                    let staged = plan.write.as_ref().map(|new| &new.id);
                    let ours = staged
                        .is_some_and(|id| seen.as_ref().is_some_and(|s| s.head.find(id).is_some()));
                    if ours {
                        // An earlier try of this very commit got through, and only its answer
                        // was lost (the client retried it): it is committed.
                        self.remove_objects(session, &plan.remove).await;
                        return Ok(Done {
                            outcome,
                            not_removed: Vec::new(),
                        });
                    }
                    if let Some(id) = staged {
                        self.remove_objects(session, std::slice::from_ref(id)).await;
                    }
                    // Dropping the outcome takes back its quota booking.
                }
            }
        }
    }

    /// Writes a new snapshot's object, if no object has its name; `false` when one has.
    async fn stage(&self, session: &SessionId, new: &NewSnapshot) -> Result<bool, StoreError> {
        let key = self.snapshot_key(session, &new.id);
        let put = match &new.content {
            Content::Bytes(bytes) => {
                let options = PutOptions::from(PutMode::Create);
                let payload = PutPayload::from_bytes(bytes.clone());
                self.store.put_opts(&key, payload, options).await.map(drop)
            }
            // A multipart upload cannot be made conditional; an id is made of the time to the
            // microsecond and the content's digest, so no other write picks the same one.
            Content::Upload(upload) => self.upload(&key, upload.reader()?).await,
        };
        match put {
            Ok(()) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Uploads a large snapshot from `reader` in parts, never holding it whole.
    async fn upload(
        &self,
        key: &Path,
        mut reader: Box<dyn Read + Send>,
    ) -> object_store::Result<()> {
        let mut upload = WriteMultipart::new(self.store.put_multipart(key).await?);
        let mut buf = vec![0; 1 << 20];
        loop {
            upload.wait_for_capacity(2).await?;
            let read;
            (reader, buf, read) = tokio::task::spawn_blocking(move || {
                let read = reader.read(&mut buf);
                (reader, buf, read)
            })
            .await
            .expect("reading a temp file does not panic");
            let read = read.map_err(|err| object_store::Error::Generic {
                store: "S3",
                source: Box::new(err),
            })?;
            if read == 0 {
                break;
            }
            upload.write(&buf[..read]);
        }
        upload.finish().await.map(drop)
    }

    /// Replaces the session's head with `next`, if it is still at `version` (no head at all
    /// when `None`).
    async fn commit(
        &self,
        session: &SessionId,
        next: &Head,
        version: Option<&UpdateVersion>,
    ) -> Result<Commit, StoreError> {
        let mode = match version {
            Some(version) => PutMode::Update(version.clone()),
            None => PutMode::Create,
        };
        let payload = PutPayload::from(next.to_bytes());
        match self
            .store
            .put_opts(&self.head_key(session), payload, PutOptions::from(mode))
            .await
        {
            Ok(put) => Ok(Commit::Done(UpdateVersion::from(put))),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::NotFound { .. },
            ) => Ok(Commit::Lost),
            // The head may or may not have been written: the staged object stays (the sweep
            // takes it if it is not listed), and the client hears the store failed.
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Keeps a committed head; the new snapshot's content too, when it is small.
    fn committed(&self, session: &SessionId, head: Head, version: UpdateVersion, plan: &Plan) {
        let latest = match plan.write.as_ref().map(|new| &new.content) {
            Some(Content::Bytes(bytes)) if bytes.len() <= KEEP_UP_TO => Some(bytes.clone()),
            _ => None,
        };
        // A commit that wrote nothing leaves the newest as it was.
        let latest = match plan.write.is_some() {
            true => latest,
            false => self
                .kept(session)
                .filter(|seen| seen.head.newest() == head.newest())
                .and_then(|seen| seen.latest),
        };
        self.keep(session, Arc::new(head), version, latest);
    }

    /// Deletes objects a commit dropped. One that cannot be deleted now is left for the sweep:
    /// no head lists it any more.
    async fn remove_objects(&self, session: &SessionId, ids: &[SnapshotId]) {
        for id in ids {
            match self.store.delete(&self.snapshot_key(session, id)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => {
                    tracing::warn!(%session, snapshot = %id, error = %err, "could not delete a snapshot object; the sweep will");
                }
            }
        }
    }

    /// Reads the session's head. With `known`, asks only for a head that differs from it:
    /// `Ok(None)` then means it is unchanged. `Ok(Some(None))`: the session has no head.
    async fn fetch_head(
        &self,
        session: &SessionId,
        known: Option<&Seen>,
    ) -> Result<Option<Option<Seen>>, StoreError> {
        let options = GetOptions {
            if_none_match: known.and_then(|seen| seen.version.e_tag.clone()),
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(&self.head_key(session), options).await {
            Ok(got) => got,
            Err(object_store::Error::NotModified { .. }) => return Ok(None),
            Err(object_store::Error::NotFound { .. }) => {
                self.forget(session);
                return Ok(Some(None));
            }
            Err(err) => return Err(unavailable(err)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got.bytes().await.map_err(unavailable)?;
        let head = Head::parse(&bytes).map_err(|why| {
            StoreError::Io(std::io::Error::other(format!(
                "the head object of session {session} is not snapkeep's: {why}"
            )))
        })?;
        // The latest content stays valid while the newest snapshot is the same one.
        let latest = known
            .filter(|seen| seen.head.newest() == head.newest())
            .and_then(|seen| seen.latest.clone());
        let head = Arc::new(head);
        self.keep(session, head.clone(), version.clone(), latest.clone());
        Ok(Some(Some(Seen {
            head,
            version,
            latest,
        })))
    }

    /// The session's current head, revalidated against the bucket (one conditional `GET`).
    async fn current(&self, session: &SessionId) -> Result<Option<Seen>, StoreError> {
        let known = self.kept(session);
        match self.fetch_head(session, known.as_ref()).await? {
            None => Ok(known),
            Some(fresh) => Ok(fresh),
        }
    }

    /// The content of the session's newest snapshot `id`, from memory if kept.
    async fn latest_content(
        &self,
        session: &SessionId,
        seen: Option<&Seen>,
        id: &SnapshotId,
    ) -> Result<Bytes, StoreError> {
        if let Some(latest) = seen.and_then(|s| s.latest.clone()) {
            return Ok(latest);
        }
        let got = self.store.get(&self.snapshot_key(session, id)).await;
        got.map_err(not_found)?.bytes().await.map_err(unavailable)
    }

    pub async fn list(&self, session: &SessionId) -> Result<Vec<SnapshotInfo>, StoreError> {
        Ok(self
            .current(session)
            .await?
            .map_or_else(Vec::new, |seen| seen.head.infos()))
    }

    pub async fn open(
        &self,
        session: &SessionId,
        which: Which,
        unless: Option<Expected>,
    ) -> Result<Opened, StoreError> {
        // A snapshot pruned by a write between the head's read and the object's is read again
        // from the new head; a few times at most, then it is gone.
        for _ in 0..PRUNED_UNDER_A_READ {
            if let Some(opened) = self.try_open(session, &which, unless.as_ref()).await? {
                return Ok(opened);
            }
        }
        Err(StoreError::NotFound)
    }

    /// One try of [`S3::open`]; `None` when the object went after its head was read.
    async fn try_open(
        &self,
        session: &SessionId,
        which: &Which,
        unless: Option<&Expected>,
    ) -> Result<Option<Opened>, StoreError> {
        let seen = self.current(session).await?.ok_or(StoreError::NotFound)?;
        let entry = match which {
            Which::Latest => seen.head.newest(),
            Which::Id(id) => seen.head.find(id),
        };
        let entry = entry.ok_or(StoreError::NotFound)?.clone();
        let info = SnapshotInfo {
            id: entry.id.clone(),
            bytes: entry.bytes,
        };
        if unless.is_some_and(|tags| tags.matches(Some(&info.id))) {
            return Ok(Some(Opened::Unchanged(info)));
        }
        let is_latest = seen.head.newest() == Some(&entry);
        if is_latest && let Some(content) = seen.latest.clone() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            let body = SnapshotBody::Whole(content);
            let snapshot = Snapshot {
                info,
                intact: true,
                body,
            };
            return Ok(Some(Opened::Snapshot(snapshot)));
        }
        let got = match self.store.get(&self.snapshot_key(session, &info.id)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) if self.changed(session, &seen).await? => {
                return Ok(None);
            }
            Err(err) => return Err(not_found(err)),
        };
        let (intact, body, info) = if got.meta.size <= READ_WHOLE_UP_TO {
            let bytes = got.bytes().await.map_err(unavailable)?;
            let intact = info.id.digest_matches(&sha256_hex(&bytes));
            if is_latest && intact && bytes.len() <= KEEP_UP_TO {
                let kept = Some(bytes.clone());
                self.keep(session, seen.head.clone(), seen.version.clone(), kept);
            }
            let info = SnapshotInfo {
                bytes: bytes.len() as u64,
                ..info
            };
            (intact, SnapshotBody::Whole(bytes), info)
        } else {
            self.through_temp_file(got, info).await?
        };
        Ok(Some(Opened::Snapshot(Snapshot { info, intact, body })))
    }

    /// Whether the session's head has changed since `seen`.
    async fn changed(&self, session: &SessionId, seen: &Seen) -> Result<bool, StoreError> {
        Ok(self.fetch_head(session, Some(seen)).await?.is_some())
    }

    /// A large snapshot: downloaded into an unnamed temp file while its digest is computed (the
    /// answer says whether it is intact before its first byte), then streamed from there.
    async fn through_temp_file(
        &self,
        got: object_store::GetResult,
        info: SnapshotInfo,
    ) -> Result<(bool, SnapshotBody, SnapshotInfo), StoreError> {
        let file = tokio::task::spawn_blocking(tempfile::tempfile)
            .await
            .expect("creating a temp file does not panic")?;
        let mut file = tokio::fs::File::from_std(file);
        let (mut hasher, mut bytes) = (Sha256::new(), 0u64);
        let mut stream = got.into_stream();
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(unavailable)?;
            hasher.update(&piece);
            bytes += piece.len() as u64;
            file.write_all(&piece).await?;
        }
        file.rewind().await?;
        let intact = info.id.digest_matches(&hex(&hasher.finalize()));
        let body = SnapshotBody::Stream(Box::pin(file));
        Ok((intact, body, SnapshotInfo { bytes, ..info }))
    }

    /// Every object under the prefix (paged by the client).
    async fn objects(&self) -> Result<Vec<ObjectMeta>, StoreError> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        let mut listed = self.store.list(prefix.as_ref());
        let mut objects = Vec::new();
        while let Some(meta) = listed.next().await {
            objects.push(meta.map_err(unavailable)?);
        }
        Ok(objects)
    }

    /// An object's name below the prefix: `<session>/<name>`, or a top-level name.
    fn relative(&self, key: &Path) -> String {
        let key = key.as_ref();
        match self.prefix.is_empty() {
            true => key.to_owned(),
            false => key
                .strip_prefix(&self.prefix)
                .map_or(key, |rest| rest.trim_start_matches('/'))
                .to_owned(),
        }
    }

    /// The sessions that have objects, with their objects.
    async fn by_session(&self) -> Result<Sessions, StoreError> {
        let mut sessions = Sessions::default();
        for meta in self.objects().await? {
            let relative = self.relative(&meta.location);
            let parsed = relative.split_once('/').and_then(|(session, name)| {
                Some((SessionId::parse(session).ok()?, name.to_owned()))
            });
            match parsed {
                Some((session, name)) => sessions.of.entry(session).or_default().push((name, meta)),
                None => sessions.other.push((relative, meta)),
            }
        }
        Ok(sessions)
    }

    pub async fn sessions(&self) -> Result<Vec<SessionSummary>, StoreError> {
        let mut summaries = Vec::new();
        for session in self.by_session().await?.of.into_keys() {
            let Some(seen) = self.current(&session).await? else {
                continue;
            };
            let head = &seen.head;
            if head.snapshots.is_empty() {
                continue;
            }
            summaries.push(SessionSummary {
                snapshots: head.snapshots.len(),
                bytes: head.snapshots.iter().map(|e| e.bytes).sum(),
                newest: head.infos().into_iter().next(),
                session,
            });
        }
        summaries.sort_by(|a, b| a.session.cmp(&b.session));
        Ok(summaries)
    }

    /// What the bucket holds, by its listing alone (no head is read): snapshot objects' bytes,
    /// and the sessions that have any.
    pub async fn count(&self) -> Result<Counts, StoreError> {
        let mut counts = Counts::default();
        for objects in self.by_session().await?.of.values() {
            let snapshots = objects
                .iter()
                .filter(|(name, _)| snapshot_name(name).is_some());
            let (mut any, mut bytes) = (false, 0);
            for (_, meta) in snapshots {
                (any, bytes) = (true, bytes + meta.size);
            }
            counts.bytes += bytes;
            counts.sessions += u64::from(any);
        }
        Ok(counts)
    }

    /// Deletes snapshot objects that no head lists and that are older than an hour: what a
    /// write left that lost its race or was killed before its commit. Returns how many.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut removed = 0;
        for (session, objects) in self.by_session().await?.of {
            let aged: Vec<(SnapshotId, i64)> = objects
                .iter()
                .filter_map(|(name, meta)| {
                    Some((snapshot_name(name)?, now - meta.last_modified.timestamp()))
                })
                .filter(|(_, age)| *age > IN_FLIGHT_SECS)
                .collect();
            if aged.is_empty() {
                continue;
            }
            // Read now, after the listing: a head that lists an object committed it.
            let head = self.fetch_head(&session, None).await?.flatten();
            let head = head.map(|seen| seen.head).unwrap_or_default();
            for id in head.leftovers(aged) {
                self.remove_objects(&session, std::slice::from_ref(&id))
                    .await;
                tracing::info!(%session, snapshot = %id, "removed a snapshot object that no commit listed");
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub async fn probe(&self, writable: bool) -> Result<(), StoreError> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        if !writable {
            self.store
                .list_with_delimiter(prefix.as_ref())
                .await
                .map_err(unavailable)?;
            return Ok(());
        }
        let n = self.probes.fetch_add(1, Ordering::Relaxed);
        let key = self.key(&format!("{PROBE_PREFIX}{}-{n}", std::process::id()));
        self.store
            .put(&key, PutPayload::from_static(b"{}"))
            .await
            .map_err(unavailable)?;
        self.store.delete(&key).await.map_err(unavailable)
    }

    pub async fn verify(&self) -> Result<Report, StoreError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut report = Report::default();
        let sessions = self.by_session().await?;
        for (name, _) in sessions.other {
            if !name.starts_with(PROBE_PREFIX) {
                report.stray.push(name.into());
            }
        }
        for (session, objects) in sessions.of {
            let head = self.fetch_head(&session, None).await?.flatten();
            let head = head.map(|seen| seen.head).unwrap_or_default();
            let path = |name: &str| std::path::PathBuf::from(format!("{session}/{name}"));
            for entry in &head.snapshots {
                let name = format!("{}.json", entry.id);
                if !objects.iter().any(|(n, _)| *n == name) {
                    report.missing.push(path(&name));
                }
            }
            for (name, meta) in &objects {
                if name == HEAD {
                    continue;
                }
                let Some(id) = snapshot_name(name) else {
                    report.stray.push(path(name));
                    continue;
                };
                if head.find(&id).is_none() {
                    let age = now - meta.last_modified.timestamp();
                    if !head.leftovers([(id, age)]).is_empty() {
                        report.temp.push(path(name));
                    }
                    continue;
                }
                match self.digest_of(&meta.location).await? {
                    Some(digest) if id.digest_matches(&digest) => report.good += 1,
                    Some(_) => report.corrupt.push(path(name)),
                    None => report.missing.push(path(name)),
                }
            }
        }
        Ok(report)
    }

    /// An object's SHA-256, read as a stream; `None` when it is gone.
    async fn digest_of(&self, key: &Path) -> Result<Option<String>, StoreError> {
        let got = match self.store.get(key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(unavailable(err)),
        };
        let mut hasher = Sha256::new();
        let mut stream = got.into_stream();
        while let Some(piece) = stream.next().await {
            hasher.update(&piece.map_err(unavailable)?);
        }
        Ok(Some(hex(&hasher.finalize())))
    }

    fn kept(&self, session: &SessionId) -> Option<Seen> {
        self.lock().sessions.get(session).cloned()
    }

    /// Keeps a session's head (and small latest content), making room by forgetting others.
    fn keep(
        &self,
        session: &SessionId,
        head: Arc<Head>,
        version: UpdateVersion,
        latest: Option<Bytes>,
    ) {
        let mut kept = self.lock();
        if let Some(old) = kept.sessions.remove(session) {
            kept.bytes -= old.latest.map_or(0, |l| l.len());
        }
        let size = latest.as_ref().map_or(0, |l| l.len());
        while kept.bytes + size > KEEP_BUDGET || kept.sessions.len() >= KEEP_SESSIONS {
            let Some(victim) = kept.sessions.keys().next().cloned() else {
                break;
            };
            let old = kept
                .sessions
                .remove(&victim)
                .expect("the key was just seen");
            kept.bytes -= old.latest.map_or(0, |l| l.len());
        }
        kept.bytes += size;
        let seen = Seen {
            head,
            version,
            latest,
        };
        kept.sessions.insert(session.clone(), seen);
    }

    fn forget(&self, session: &SessionId) {
        let mut kept = self.lock();
        if let Some(old) = kept.sessions.remove(session) {
            kept.bytes -= old.latest.map_or(0, |l| l.len());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The bucket's objects by session; `other` holds those outside any session's prefix.
#[derive(Default)]
struct Sessions {
    of: std::collections::BTreeMap<SessionId, Vec<(String, ObjectMeta)>>,
    other: Vec<(String, ObjectMeta)>,
}

/// A session's head, as a decision sees it.
struct S3View<'a> {
    head: &'a Head,
    /// The newest snapshot's content, when the decision needs it.
    latest: Option<Bytes>,
}

impl View for S3View<'_> {
    fn ids(&self) -> &[SnapshotId] {
        &self.head.ids
    }

    fn size(&self, id: &SnapshotId) -> Result<u64, StoreError> {
        Ok(self.head.find(id).map_or(0, |e| e.bytes))
    }

    fn holds(&self, id: &SnapshotId, sha256: &str) -> Result<bool, StoreError> {
        Ok(self.head.find(id).is_some_and(|e| e.sha256 == sha256))
    }

    fn latest_content(&self) -> Result<Bytes, StoreError> {
        self.latest.clone().ok_or(StoreError::NotFound)
    }

    fn last_used(&self) -> Option<OffsetDateTime> {
        self.head.used_at
    }
}

/// `<id>.json` -> the id.
fn snapshot_name(name: &str) -> Option<SnapshotId> {
    SnapshotId::parse(name.strip_suffix(".json")?).ok()
}

fn unavailable(err: object_store::Error) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

/// A snapshot object that its head lists but the bucket does not have is a `404`, and worth a
/// warning: someone deleted it by hand.
fn not_found(err: object_store::Error) -> StoreError {
    match err {
        object_store::Error::NotFound { path, .. } => {
            tracing::warn!(object = %path, "a snapshot listed in its session's head is not in the bucket");
            StoreError::NotFound
        }
        err => unavailable(err),
    }
}
