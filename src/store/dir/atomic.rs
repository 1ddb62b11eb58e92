//! Durable, atomic file writes: a reader (or a crash) sees either no file or the whole file.
//!
//! The sequence, all blocking `std::fs`, meant to run inside `spawn_blocking`:
//! 1. create the temp file in the destination directory with `O_EXCL` (never clobber anything);
//! 2. write the bytes and `fsync` the file;
//! 3. `rename` it to its final name (atomic within one directory);
//! 4. `fsync` the directory, so the rename itself survives a power cut.
//!
//! On any error the temp file is removed. With `fsync` off (tmpfs, tests) steps 2 and 4 skip
//! the syncs, and a write is atomic but not durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `dir/name` through the temp file `dir/temp_name`.
pub fn write(dir: &Path, name: &str, temp_name: &str, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let temp = dir.join(temp_name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)?;
    if let Err(err) = fill_and_rename(file, &temp, &dir.join(name), bytes, fsync) {
        // The temp file is ours and may be half written: it must not outlive the request.
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    if fsync {
        sync_dir(dir)?;
    }
    Ok(())
}

fn fill_and_rename(
    mut file: File,
    temp: &Path,
    dest: &Path,
    bytes: &[u8],
    fsync: bool,
) -> io::Result<()> {
    file.write_all(bytes)?;
    if fsync {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(temp, dest)
}

/// Makes the directory's entries (a rename, a new subdirectory) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_bytes_under_the_final_name_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.json", ".a.tmp", b"{\"x\":1}", true).unwrap();
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"{\"x\":1}");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn an_existing_temp_file_is_never_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".a.tmp"), b"someone else's").unwrap();
        let err = write(dir.path(), "a.json", ".a.tmp", b"{}", false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!dir.path().join("a.json").exists());
        assert_eq!(
            fs::read(dir.path().join(".a.tmp")).unwrap(),
            b"someone else's"
        );
    }

    #[test]
    fn a_failed_rename_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory in the way makes the rename fail after the temp was written.
        fs::create_dir_all(dir.path().join("a.json/occupied")).unwrap();
        assert!(write(dir.path(), "a.json", ".a.tmp", b"{}", false).is_err());
        assert!(!dir.path().join(".a.tmp").exists());
    }
}
