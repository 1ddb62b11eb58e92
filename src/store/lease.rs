//! Whether anyone else has a file open. This decides what retention does with a pruned
//! snapshot's file (see `Disk::prune`): empty it, so that the next write can take its inode,
//! or only unlink it.
//!
//! An unlinked file stays readable, whole, for every reader that opened it before: an
//! operator's `cp` or `rsync`, `snapkeep verify`, or snapkeep's own stream of a large
//! snapshot. An emptied one does not. So a file is emptied only when no one else has it open.
//!
//! Linux answers that question with a write lease (fcntl(2), `F_SETLEASE`). The kernel grants
//! one only while no other open file description of the inode exists, in any process, this
//! one included. Memory maps count too: a map keeps its file description alive. The lease is
//! let go at once.
//!
//! While the lease is held, for two system calls, an `open` of the file would make the kernel
//! signal this process. By default that signal is `SIGIO`, which ends a process. It is set to
//! `SIGURG` instead, which is ignored unless a handler is installed; snapkeep installs none.
//! Nobody else knows the file's name by then anyway (see `Disk::prune`).

use std::fs::File;

/// Whether `file` (opened for writing) is open nowhere else. `false` whenever the kernel
/// cannot tell: leases switched off (`fs.leases-enable`), a filesystem without them (NFS), a
/// file owned by another user, or another system than Linux.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn alone(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // Not in the libc crate for every target; 10 on every Linux architecture
    // (include/uapi/asm-generic/fcntl.h and the architectures' own).
    const F_SETSIG: libc::c_int = 10;
    let fd = file.as_raw_fd();
    // SAFETY: `fcntl` with these commands takes integer arguments and touches no memory of
    // this process; `fd` stays open for the whole call, because `file` is borrowed.
    unsafe {
        libc::fcntl(fd, F_SETSIG, libc::SIGURG) == 0
            && libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) == 0
            && libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) == 0
    }
}

#[cfg(not(target_os = "linux"))]
pub fn alone(_: &File) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn for_writing(path: &std::path::Path) -> File {
        File::options().write(true).open(path).unwrap()
    }

    #[test]
    fn a_file_open_nowhere_else_is_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, b"x").unwrap();
        let file = for_writing(&path);
        assert!(alone(&file));
        // Let go at once: asking again gives the same answer.
        assert!(alone(&file));
    }

    #[test]
    fn a_reader_or_another_writer_anywhere_means_not_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, b"x").unwrap();
        let file = for_writing(&path);

        let reader = File::open(&path).unwrap();
        assert!(!alone(&file));
        drop(reader);
        assert!(alone(&file));

        let writer = for_writing(&path);
        assert!(!alone(&file));
        drop(writer);

        // Another process's reader counts as well.
        let mut cat = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 3<\"$0\"; read line; exec 3<&-")
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while alone(&file) {
            assert!(
                std::time::Instant::now() < deadline,
                "the shell never opened it"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(cat.stdin.take()); // `read` ends, the shell closes the file and exits
        cat.wait().unwrap();
        assert!(alone(&file));
    }
}
