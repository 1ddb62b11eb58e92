//! Large uploads, written to a temp file as they arrive, so that a body of hundreds of MiB is
//! never held in memory. [`Store::spool`] starts one; the HTTP layer writes the decoded bytes
//! in; [`Spool::finish`] checks that they are one JSON document; [`Store::save_spooled`] then
//! makes a snapshot of it under the same rules as any write. Where the file lives is the
//! backend's choice: the directory backend puts it at the top of the data directory, so that
//! the snapshot is made with one rename; the S3 backend uses an unnamed temp file (in `TMPDIR`),
//! which it uploads and which disappears with its last handle, a crash included. A spool that
//! is dropped before it is saved (a refused or broken-off upload) removes its file.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::name::hex;
use super::{Store, StoreError, blocking};

/// An upload on its way in.
#[derive(Debug)]
pub struct Spool {
    file: tokio::fs::File,
    hasher: Sha256,
    bytes: u64,
    temp: Temp,
    fsync: bool,
}

/// A finished upload that is one JSON document, synced to disk when fsync is on, with its size
/// and SHA-256.
#[derive(Debug)]
pub struct Spooled {
    pub bytes: u64,
    pub sha256: String,
    temp: Temp,
}

/// Where an upload's bytes are.
#[derive(Debug)]
enum Temp {
    /// A named file, removed when dropped; after its rename into place there is nothing left to
    /// remove.
    Named(PathBuf),
    /// A file with no name, gone with its last handle.
    Unnamed(File),
}

impl Drop for Temp {
    fn drop(&mut self) {
        if let Temp::Named(path) = self {
            let _ = fs::remove_file(path);
        }
    }
}

/// Why a finished upload cannot be saved.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Not one JSON document: the sentence for the client, with line and column.
    #[error("{0}")]
    NotJson(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Spool {
    /// A spool into a new named file at `path`, already created.
    pub(super) fn named(path: PathBuf, file: File, fsync: bool) -> Self {
        Self::new(file, Temp::Named(path), fsync)
    }

    /// A spool into an unnamed temp file (in `TMPDIR`).
    pub(super) async fn anonymous() -> Result<Self, StoreError> {
        let (file, handle) = blocking(|| {
            let file = tempfile::tempfile()?;
            let handle = file.try_clone()?;
            Ok((file, handle))
        })
        .await?;
        Ok(Self::new(file, Temp::Unnamed(handle), false))
    }

    fn new(file: File, temp: Temp, fsync: bool) -> Self {
        Self {
            file: tokio::fs::File::from_std(file),
            hasher: Sha256::new(),
            bytes: 0,
            temp,
            fsync,
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes).await?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Flushes the file (and syncs it, when fsync is on), then checks that it holds one JSON
    /// document; a spool that fails is removed.
    pub async fn finish(mut self) -> Result<Spooled, SpoolError> {
        self.file.flush().await.map_err(StoreError::from)?;
        if self.fsync {
            self.file.sync_all().await.map_err(StoreError::from)?;
        }
        let spooled = Spooled {
            bytes: self.bytes,
            sha256: hex(&self.hasher.finalize()),
            temp: self.temp,
        };
        let (spooled, checked) = tokio::task::spawn_blocking(move || {
            let checked = crate::json::check_json_stream(|| spooled.reader());
            (spooled, checked)
        })
        .await
        .expect("the JSON check does not panic");
        match checked.map_err(StoreError::from)? {
            Ok(()) => Ok(spooled),
            Err(why) => Err(SpoolError::NotJson(why)),
        }
    }
}

impl Spooled {
    /// A fresh reader of the upload, from its first byte.
    pub(super) fn reader(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(match &self.temp {
            Temp::Named(path) => Box::new(File::open(path)?),
            Temp::Unnamed(file) => Box::new(ReadAt {
                file: file.try_clone()?,
                offset: 0,
            }),
        })
    }

    /// The named file's path (the directory backend renames it into place).
    pub(super) fn path(&self) -> Option<&Path> {
        match &self.temp {
            Temp::Named(path) => Some(path),
            Temp::Unnamed(_) => None,
        }
    }
}

/// Reads a file from its start by offset, so that several readers of one file (a check, then
/// an upload) never share a position.
struct ReadAt {
    file: File,
    offset: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buf, self.offset)?;
        self.offset += read as u64;
        Ok(read)
    }
}

impl Store {
    /// Starts an upload. Waits for start-up's preparation, whose cleanup would take the file
    /// for a crash's leftover.
    pub async fn spool(&self) -> Result<Spool, StoreError> {
        drop(self.enter().await?);
        self.backend.spool().await
    }
}
