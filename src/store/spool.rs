//! Large uploads, written to a temp file at the top of the data directory as they arrive, so
//! that a body of hundreds of MiB is never held in memory. [`Store::spool`] starts one; the
//! HTTP layer writes the decoded bytes in and checks the JSON; [`Store::save_spooled`] then
//! moves the file into place with one rename, under the same rules as any write. A spool that
//! is dropped before that (a refused or broken-off upload) removes its file.

use std::fs;
use std::io;
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
    temp: TempFile,
}

/// A finished upload, synced to disk when fsync is on, with its size and SHA-256.
#[derive(Debug)]
pub struct Spooled {
    pub bytes: u64,
    pub sha256: String,
    temp: TempFile,
}

/// Removes its file when dropped; after the rename into place there is nothing left to remove.
#[derive(Debug)]
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

impl Spool {
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes).await?;
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Flushes the file (and syncs it, when `fsync`), ready to be saved.
    pub async fn finish(mut self, fsync: bool) -> io::Result<Spooled> {
        self.file.flush().await?;
        if fsync {
            self.file.sync_all().await?;
        }
        Ok(Spooled {
            bytes: self.bytes,
            sha256: hex(&self.hasher.finalize()),
            temp: self.temp,
        })
    }
}

impl Spooled {
    /// A fresh reader of the upload (to check its content).
    pub fn open(&self) -> io::Result<fs::File> {
        fs::File::open(&self.temp.0)
    }

    pub(super) fn path(&self) -> &Path {
        &self.temp.0
    }
}

impl Store {
    /// Starts an upload. Waits for start-up's preparation, whose cleanup would take the file
    /// for a crash's leftover.
    pub async fn spool(&self) -> Result<Spool, StoreError> {
        drop(self.enter().await?);
        let disk = self.disk.clone();
        let (path, file) = blocking(move || Ok(disk.create_upload()?)).await?;
        Ok(Spool {
            file: tokio::fs::File::from_std(file),
            hasher: Sha256::new(),
            bytes: 0,
            temp: TempFile(path),
        })
    }
}
