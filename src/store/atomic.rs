//! Durable, atomic file writes: a reader (or a crash) sees either no file or the whole file.
//!
//! The sequence, all blocking `std::fs`, meant to run inside `spawn_blocking`:
//! 1. create the temp file in the destination directory with `O_EXCL` (never clobber anything),
//!    or take the directory's empty spare file under the temp name (see [`take_spare`]);
//! 2. write the bytes and `fsync` the file;
//! 3. `rename` it to its final name (atomic within one directory);
//! 4. `fsync` the directory, so the rename itself survives a power cut.
//!
//! On any error the temp file is removed. With `fsync` off (tmpfs, tests) steps 2 and 4 skip
//! the syncs, and a write is atomic but not durable.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Writes `bytes` to `dir/name` through the temp file `dir/temp_name`, which is the empty file
/// `spare` when there is one.
pub fn write(
    dir: &Path,
    name: &str,
    temp_name: &str,
    bytes: &[u8],
    fsync: bool,
    spare: Option<&Path>,
) -> io::Result<()> {
    let temp = dir.join(temp_name);
    let file = match spare.and_then(|spare| take_spare(spare, &temp)) {
        Some(file) => file,
        None => OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?,
    };
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

/// Takes the empty file `spare` (what retention left of a pruned snapshot: see `Disk::prune`)
/// as the new temp file `temp`: a new file without a new inode, which on some filesystems
/// costs far more than the write itself (ext4 without a journal scans past every recently
/// freed inode). `temp` is linked first, so an existing file is never replaced, and only an
/// empty regular file with no other name is used; anything else leaves `None`: make a new
/// file. (Opened without `O_TRUNC`: on ext4 a truncation to zero makes the next close start
/// writing the file back at once.)
pub fn take_spare(spare: &Path, temp: &Path) -> Option<File> {
    fs::hard_link(spare, temp).ok()?;
    let usable = fs::remove_file(spare).is_ok()
        && fs::symlink_metadata(temp)
            .is_ok_and(|meta| meta.is_file() && meta.nlink() == 1 && meta.len() == 0);
    let file = match usable {
        true => OpenOptions::new().write(true).open(temp),
        false => Err(io::ErrorKind::Other.into()),
    };
    match file {
        Ok(file) => Some(file),
        Err(_) => {
            let _ = fs::remove_file(temp);
            None
        }
    }
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
        write(dir.path(), "a.json", ".a.tmp", b"{\"x\":1}", true, None).unwrap();
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"{\"x\":1}");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn an_existing_temp_file_is_never_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".a.tmp"), b"someone else's").unwrap();
        let err = write(dir.path(), "a.json", ".a.tmp", b"{}", false, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(!dir.path().join("a.json").exists());
        assert_eq!(
            fs::read(dir.path().join(".a.tmp")).unwrap(),
            b"someone else's"
        );
    }

    #[test]
    fn an_empty_spare_file_becomes_the_new_file_and_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join("spare");
        fs::write(&spare, b"").unwrap();
        let inode = fs::metadata(&spare).unwrap().ino();
        write(dir.path(), "a.json", ".a.tmp", b"{}", true, Some(&spare)).unwrap();
        assert_eq!(fs::read(dir.path().join("a.json")).unwrap(), b"{}");
        assert_eq!(
            fs::metadata(dir.path().join("a.json")).unwrap().ino(),
            inode
        );
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no spare, no temp left");
        // No spare: a new file, as always.
        write(dir.path(), "b.json", ".b.tmp", b"[]", false, Some(&spare)).unwrap();
        assert_eq!(fs::read(dir.path().join("b.json")).unwrap(), b"[]");
        // A spare that is not empty (a crash cut its emptying short) is dropped, not written
        // over: a new file is made.
        fs::write(&spare, b"old content, longer than the new").unwrap();
        write(dir.path(), "c.json", ".c.tmp", b"1", false, Some(&spare)).unwrap();
        assert_eq!(fs::read(dir.path().join("c.json")).unwrap(), b"1");
        assert!(!spare.exists() && !dir.path().join(".c.tmp").exists());
    }

    #[test]
    fn a_spare_with_another_name_or_not_a_file_is_never_written_into() {
        let dir = tempfile::tempdir().unwrap();
        let (spare, kept) = (dir.path().join("spare"), dir.path().join("kept"));
        // Hard-linked elsewhere (say, a backup made with `cp -al`): its content is not ours.
        fs::write(&kept, b"precious").unwrap();
        fs::hard_link(&kept, &spare).unwrap();
        write(dir.path(), "a.json", ".a.tmp", b"{}", false, Some(&spare)).unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"precious");
        assert_ne!(
            fs::metadata(dir.path().join("a.json")).unwrap().ino(),
            fs::metadata(&kept).unwrap().ino()
        );
        // A symbolic link: never followed.
        let _ = fs::remove_file(&spare);
        std::os::unix::fs::symlink(&kept, &spare).unwrap();
        write(dir.path(), "b.json", ".b.tmp", b"[]", false, Some(&spare)).unwrap();
        assert_eq!(fs::read(&kept).unwrap(), b"precious");
        assert!(!dir.path().join(".b.tmp").exists());
    }

    #[test]
    fn a_failed_rename_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory in the way makes the rename fail after the temp was written.
        fs::create_dir_all(dir.path().join("a.json/occupied")).unwrap();
        assert!(write(dir.path(), "a.json", ".a.tmp", b"{}", false, None).is_err());
        assert!(!dir.path().join(".a.tmp").exists());
    }
}
