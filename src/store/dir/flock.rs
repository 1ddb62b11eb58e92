//! A session's lock across processes: `flock` on the session's own directory. Every change of a
//! session holds it exclusively, from the listing its decision is made on to its last rename or
//! removal, so that the check of a conditional write and the write are one step for every
//! process on the data directory (a second server, the CLI). Readers hold it shared while they
//! list: a listing taken while a write renames in the new snapshot and prunes the old one may
//! show neither (readdir promises nothing about entries changed during the scan).
//!
//! The lock is the directory itself, so the layout gains no file. A directory can be removed
//! while someone waits for its lock (its session deleted); whoever gets the lock then checks that
//! the path still leads to the directory it locked, and starts over if not. `flock` locks belong
//! to an open file, so two threads of one process exclude each other just as two processes do.
//! It is advisory, and honoured by local filesystems; on NFS, run one writer per directory.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A session directory, locked until dropped.
#[derive(Debug)]
pub struct SessionLock {
    dir: File,
    /// The directory was made for this lock (a session's first write): if nothing is written,
    /// it goes again.
    pub created: bool,
}

impl SessionLock {
    /// The locked directory, open (to sync it, or to set its times).
    pub fn dir(&self) -> &File {
        &self.dir
    }
}

/// Locks the session directory `path` exclusively, creating it if there is none. A name taken
/// by something that is not a directory is `NotADirectory`.
pub fn exclusive(path: &Path) -> io::Result<SessionLock> {
    loop {
        let (dir, created) = match File::open(path) {
            Ok(dir) => (dir, false),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let created = match fs::create_dir_all(path) {
                    Ok(()) => true,
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(err) => return Err(err),
                };
                match File::open(path) {
                    Ok(dir) => (dir, created),
                    // Removed again by another process's delete: start over.
                    Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                }
            }
            Err(err) => return Err(err),
        };
        if !dir.metadata()?.is_dir() {
            return Err(io::ErrorKind::NotADirectory.into());
        }
        dir.lock()?;
        if still_at(&dir, path)? {
            return Ok(SessionLock { dir, created });
        }
    }
}

/// Locks the session directory `path` shared; `None` when there is no directory of that name
/// (the session has no snapshots).
pub fn shared(path: &Path) -> io::Result<Option<SessionLock>> {
    loop {
        let dir = match File::open(path) {
            Ok(dir) => dir,
            Err(err) if super::disk::no_session(&err) => return Ok(None),
            Err(err) => return Err(err),
        };
        if !dir.metadata()?.is_dir() {
            return Ok(None);
        }
        dir.lock_shared()?;
        if still_at(&dir, path)? {
            let created = false;
            return Ok(Some(SessionLock { dir, created }));
        }
    }
}

/// Whether `path` still leads to the open directory `dir`.
fn still_at(dir: &File, path: &Path) -> io::Result<bool> {
    let held = dir.metadata()?;
    match fs::metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_exclusive_lock_excludes_every_other_open_of_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("s");
        let held = exclusive(&path).unwrap();
        assert!(held.created && path.is_dir());
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let lock = exclusive(&path).unwrap();
                tx.send(lock.created).unwrap();
            })
        };
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
        drop(held);
        assert!(!rx.recv_timeout(Duration::from_secs(5)).unwrap());
        waiter.join().unwrap();
    }

    #[test]
    fn a_waiter_on_a_removed_directory_starts_over() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("s");
        let held = exclusive(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || tx.send(exclusive(&path).unwrap().created).unwrap())
        };
        std::thread::sleep(Duration::from_millis(50));
        fs::remove_dir(&path).unwrap(); // the session deleted under the lock
        drop(held);
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            "made anew"
        );
        waiter.join().unwrap();
    }

    #[test]
    fn readers_share_and_find_no_directory_for_an_unknown_session() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("s");
        assert!(shared(&path).unwrap().is_none());
        fs::write(&path, "not a directory").unwrap();
        assert!(shared(&path).unwrap().is_none());
        let err = exclusive(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory);
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        let first = shared(&path).unwrap().unwrap();
        let second = shared(&path).unwrap().unwrap();
        drop((first, second));
    }
}
