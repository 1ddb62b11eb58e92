//! A session's head object, `PREFIX/<session>/head.json`: the list of the session's committed
//! snapshots, and the one object a commit replaces (by compare-and-swap on its ETag). Pure: its
//! JSON format, and what a [`Plan`] makes of it.
//!
//! ```json
//! {
//!   "snapkeep": 1,
//!   "generation": 3,
//!   "usedAt": "2026-12-04T18:22:16Z",
//!   "snapshots": [
//!     {"id": "20261204T182216.123456Z-9f86d081884c7d65", "bytes": 17, "sha256": "9f86d08…"}
//!   ]
//! }
//! ```
//! Snapshots are listed newest first. `generation` goes up by one with every commit, so no two
//! heads of a session are ever the same bytes (an ETag is a digest of the bytes: a head that
//! came back to an earlier state must not pass for it). `usedAt` is when a save last found the
//! content unchanged (for `SNAPKEEP_SESSION_TTL`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::store::SnapshotInfo;
use crate::store::name::SnapshotId;
use crate::store::seam::Plan;

/// The format's version, written as `"snapkeep"`.
const FORMAT: u32 = 1;

/// How stale `usedAt` may get before a save of unchanged content writes the head again: one
/// write a minute at most, however often an app saves the same state.
const USED_AT_GRANULARITY: time::Duration = time::Duration::MINUTE;

/// A snapshot object that no head lists and is younger than this (by the bucket's clock) may
/// belong to a write in progress; older, it is what a write left that lost its race or was
/// killed before its commit.
pub const IN_FLIGHT_SECS: i64 = 3600;

/// One committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: SnapshotId,
    pub bytes: u64,
    /// The full SHA-256 of its content, which is what dedup compares.
    pub sha256: String,
}

/// A session's head, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub generation: u64,
    pub used_at: Option<OffsetDateTime>,
    /// Newest first.
    pub snapshots: Vec<Entry>,
    /// The snapshots' ids, in the same order (what a decision's view lists).
    pub ids: Vec<SnapshotId>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    snapkeep: u32,
    generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_at: Option<String>,
    snapshots: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    id: String,
    bytes: u64,
    sha256: String,
}

impl Head {
    /// Reads a head object; the error says what is wrong with it.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let file: File = serde_json::from_slice(bytes).map_err(|err| err.to_string())?;
        if file.snapkeep != FORMAT {
            return Err(format!("unknown head format {}", file.snapkeep));
        }
        let used_at = match file.used_at {
            Some(text) => Some(
                OffsetDateTime::parse(&text, &Rfc3339)
                    .map_err(|err| format!("usedAt {text:?}: {err}"))?,
            ),
            None => None,
        };
        let mut snapshots = Vec::with_capacity(file.snapshots.len());
        for entry in file.snapshots {
            let id =
                SnapshotId::parse(&entry.id).map_err(|err| format!("{:?}: {err}", entry.id))?;
            snapshots.push(Entry {
                id,
                bytes: entry.bytes,
                sha256: entry.sha256,
            });
        }
        Ok(Self::new(file.generation, used_at, snapshots))
    }

    fn new(generation: u64, used_at: Option<OffsetDateTime>, mut snapshots: Vec<Entry>) -> Self {
        snapshots.sort_unstable_by(|a, b| b.id.cmp(&a.id));
        let ids = snapshots.iter().map(|e| e.id.clone()).collect();
        Self {
            generation,
            used_at,
            snapshots,
            ids,
        }
    }

    /// The head object's bytes: indented JSON, for a person who opens it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let file = File {
            snapkeep: FORMAT,
            generation: self.generation,
            used_at: self
                .used_at
                .map(|t| t.format(&Rfc3339).expect("a valid time")),
            snapshots: self
                .snapshots
                .iter()
                .map(|e| FileEntry {
                    id: e.id.to_string(),
                    bytes: e.bytes,
                    sha256: e.sha256.clone(),
                })
                .collect(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("a head always serializes");
        bytes.push(b'\n');
        bytes
    }

    pub fn newest(&self) -> Option<&Entry> {
        self.snapshots.first()
    }

    pub fn find(&self, id: &SnapshotId) -> Option<&Entry> {
        self.snapshots.iter().find(|e| &e.id == id)
    }

    /// The snapshots as the store lists them, newest first.
    pub fn infos(&self) -> Vec<SnapshotInfo> {
        self.snapshots
            .iter()
            .map(|e| SnapshotInfo {
                id: e.id.clone(),
                bytes: e.bytes,
            })
            .collect()
    }

    /// Of a session's snapshot objects, given with their age in seconds, those that this head
    /// does not list and that are too old to be a write in progress: leftovers.
    pub fn leftovers(
        &self,
        objects: impl IntoIterator<Item = (SnapshotId, i64)>,
    ) -> Vec<SnapshotId> {
        objects
            .into_iter()
            .filter(|(id, age)| *age > IN_FLIGHT_SECS && self.find(id).is_none())
            .map(|(id, _)| id)
            .collect()
    }

    /// The head after `plan`, made at `now`; `None` when the plan changes nothing worth a
    /// commit (it removes nothing listed, writes nothing, and the last use is recent).
    pub fn next(&self, plan: &Plan, now: OffsetDateTime) -> Option<Self> {
        let removes = plan.remove.iter().any(|id| self.find(id).is_some());
        let stale_use = plan.mark_used
            && self
                .used_at
                .is_none_or(|used| now - used >= USED_AT_GRANULARITY);
        if plan.write.is_none() && !removes && !stale_use {
            return None;
        }
        let mut snapshots: Vec<Entry> = self
            .snapshots
            .iter()
            .filter(|e| !plan.remove.contains(&e.id))
            .cloned()
            .collect();
        if let Some(new) = &plan.write {
            snapshots.push(Entry {
                id: new.id.clone(),
                bytes: new.content.len(),
                sha256: new.sha256.clone(),
            });
        }
        let used_at = match stale_use {
            true => Some(now.replace_nanosecond(0).unwrap_or(now)),
            false => self.used_at,
        };
        Some(Self::new(self.generation + 1, used_at, snapshots))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use time::macros::datetime;

    use super::*;
    use crate::store::name::sha256_hex;
    use crate::store::seam::{Content, NewSnapshot};

    const NOW: OffsetDateTime = datetime!(2026-12-04 12:00 UTC);

    fn write(text: &str, previous: Option<&SnapshotId>) -> Plan {
        let sha256 = sha256_hex(text.as_bytes());
        Plan {
            write: Some(NewSnapshot {
                id: SnapshotId::next(NOW, previous, &sha256).unwrap(),
                sha256,
                content: Content::Bytes(Bytes::from(text.to_string())),
            }),
            ..Plan::default()
        }
    }

    #[test]
    fn a_head_survives_its_own_bytes() {
        let first = Head::default().next(&write("[1]", None), NOW).unwrap();
        let second = first.next(&write("[2]", first.ids.first()), NOW).unwrap();
        assert_eq!(Head::parse(&second.to_bytes()).unwrap(), second);
        assert_eq!(second.generation, 2);
        assert!(second.ids[0] > second.ids[1], "newest first");
    }

    #[test]
    fn every_commit_changes_the_bytes_even_back_to_an_earlier_list() {
        let one = Head::default().next(&write("[1]", None), NOW).unwrap();
        let two = one.next(&write("[2]", one.ids.first()), NOW).unwrap();
        let remove_newest = Plan {
            remove: vec![two.ids[0].clone()],
            ..Plan::default()
        };
        let back = two.next(&remove_newest, NOW).unwrap();
        assert_eq!(back.snapshots, one.snapshots);
        assert_ne!(back.to_bytes(), one.to_bytes());
    }

    #[test]
    fn nothing_to_commit_for_unknown_removals_or_a_recent_use() {
        let one = Head::default().next(&write("[1]", None), NOW).unwrap();
        let unknown = SnapshotId::parse("20261204T090000.000000Z-0123456789abcdef").unwrap();
        let plan = Plan {
            remove: vec![unknown],
            ..Plan::default()
        };
        assert!(one.next(&plan, NOW).is_none());
        let used = Plan {
            mark_used: true,
            ..Plan::default()
        };
        let marked = one
            .next(&used, NOW + time::Duration::milliseconds(500))
            .unwrap();
        assert_eq!(marked.used_at, Some(NOW), "to the second");
        assert!(marked.next(&used, NOW + time::Duration::SECOND).is_none());
        assert!(marked.next(&used, NOW + time::Duration::HOUR).is_some());
    }

    #[test]
    fn leftovers_are_old_objects_that_no_commit_listed() {
        let head = Head::default().next(&write("[1]", None), NOW).unwrap();
        let listed = head.ids[0].clone();
        let other = SnapshotId::parse("20261204T090000.000000Z-0123456789abcdef").unwrap();
        let objects = [
            (listed.clone(), 2 * IN_FLIGHT_SECS), // committed, however old
            (other.clone(), 60),                  // maybe a write in progress
        ];
        assert!(head.leftovers(objects).is_empty());
        let old = [
            (listed, 2 * IN_FLIGHT_SECS),
            (other.clone(), IN_FLIGHT_SECS + 1),
        ];
        assert_eq!(head.leftovers(old), vec![other.clone()]);
        // A session whose head is gone (deleted by hand) lists nothing.
        let gone = [(other.clone(), IN_FLIGHT_SECS + 1)];
        assert_eq!(Head::default().leftovers(gone), vec![other]);
    }

    #[test]
    fn foreign_or_broken_heads_are_refused_with_a_reason() {
        assert!(Head::parse(b"{}").is_err());
        let wrong = br#"{"snapkeep":2,"generation":1,"snapshots":[]}"#;
        assert!(Head::parse(wrong).unwrap_err().contains("format"));
        let bad_id =
            br#"{"snapkeep":1,"generation":1,"snapshots":[{"id":"x","bytes":1,"sha256":""}]}"#;
        assert!(Head::parse(bad_id).unwrap_err().contains("\"x\""));
    }
}
