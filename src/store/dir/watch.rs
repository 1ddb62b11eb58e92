//! What the kernel says has changed on disk (inotify, on Linux): what lets a latest snapshot
//! kept in memory be answered without looking at the disk at all.
//!
//! A [`Watch`] is one-shot: the first change to what it watches ends it, and [`Watches::ended`]
//! reports it once. A watched directory changes when a file in it is created, written,
//! renamed, removed or touched, or when it is itself removed or moved away; a watched file
//! when it is written, truncated or touched, under whichever of its names. The kernel queues
//! the event before the change's own system call returns, so a change that was done before
//! [`Watches::ended`] is called is in its answer.
//!
//! Each watch is of a [`Kind`]: a directory's entries, a file, or only a directory's place.
//!
//! Elsewhere than Linux, or when the kernel refuses (too many watches), there is no watch, and
//! the caller keeps nothing that would need one.

use std::path::Path;
use std::sync::OnceLock;

/// One watch, until its first change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Watch(imp::Descriptor);

/// What a watch looks out for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory's entries: a file in it created, written, renamed or removed; or the
    /// directory itself removed or moved away. Not a change of attributes (the directory's own
    /// times are set when its session is used, which changes no snapshot).
    Dir,
    /// A file written, truncated or touched, under whichever of its names.
    File,
    /// A directory moved or removed, and nothing else (the data directory, whose entries
    /// change with every new session).
    Place,
}

/// What [`Watches::ended`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Exactly these watches saw a change (none, usually: an empty list allocates nothing).
    These(Vec<Watch>),
    /// The kernel's queue overflowed: any watch may have ended.
    Any,
}

/// The process's watches: one inotify instance, opened at the first [`Watches::add`].
#[derive(Debug, Default)]
pub struct Watches {
    inotify: OnceLock<Option<imp::Inotify>>,
}

impl Watches {
    /// Starts watching `path`; `None` when it cannot be watched (gone, or no watches to be
    /// had).
    pub fn add(&self, path: &Path, kind: Kind) -> Option<Watch> {
        self.inotify().as_ref()?.add(path, kind)
    }

    fn inotify(&self) -> &Option<imp::Inotify> {
        self.inotify.get_or_init(imp::Inotify::open)
    }

    /// Stops a watch that has not ended yet.
    pub fn remove(&self, watch: Watch) {
        if let Some(Some(inotify)) = self.inotify.get() {
            inotify.remove(watch);
        }
    }

    /// The watches that saw a change since the last call.
    pub fn ended(&self) -> Ended {
        match self.inotify.get() {
            Some(Some(inotify)) => inotify.ended(),
            _ => Ended::These(Vec::new()),
        }
    }

    /// How many watches the kernel holds for this instance (from `/proc`), for tests.
    #[cfg(all(test, target_os = "linux"))]
    pub fn in_kernel(&self) -> usize {
        use std::os::fd::{AsFd, AsRawFd};
        let Some(Some(inotify)) = self.inotify.get() else {
            return 0;
        };
        let fd = inotify.0.as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        info.lines()
            .filter(|l| l.starts_with("inotify wd:"))
            .count()
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::path::Path;

    use nix::errno::Errno;
    use nix::sys::inotify::{AddWatchFlags as Flags, InitFlags};

    use super::{Ended, Kind, Watch};

    pub type Descriptor = nix::sys::inotify::WatchDescriptor;

    #[derive(Debug)]
    pub struct Inotify(pub(super) nix::sys::inotify::Inotify);

    impl Inotify {
        pub fn open() -> Option<Self> {
            let flags = InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC;
            match nix::sys::inotify::Inotify::init(flags) {
                Ok(inotify) => Some(Self(inotify)),
                Err(err) => {
                    tracing::warn!(error = %err, "no inotify: latest snapshots are read from disk every time");
                    None
                }
            }
        }

        pub fn add(&self, path: &Path, kind: Kind) -> Option<Watch> {
            let place = Flags::IN_DELETE_SELF | Flags::IN_MOVE_SELF;
            // Every change of content or name; reads (access, open) are none.
            let changes = Flags::IN_CREATE
                | Flags::IN_DELETE
                | Flags::IN_MOVED_FROM
                | Flags::IN_MOVED_TO
                | Flags::IN_MODIFY
                | Flags::IN_CLOSE_WRITE;
            let mask = match kind {
                Kind::Place => place,
                Kind::Dir => place | changes,
                Kind::File => place | changes | Flags::IN_ATTRIB,
            };
            self.0
                .add_watch(path, mask | Flags::IN_ONESHOT)
                .ok()
                .map(Watch)
        }

        pub fn remove(&self, watch: Watch) {
            // Fails only for a watch that has just ended, which is what was wanted.
            let _ = self.0.rm_watch(watch.0);
        }

        pub fn ended(&self) -> Ended {
            let (mut ended, mut overflowed) = (Vec::new(), false);
            loop {
                match self.0.read_events() {
                    Ok(events) => {
                        for event in events {
                            if event.mask.contains(Flags::IN_Q_OVERFLOW) {
                                overflowed = true;
                            } else {
                                ended.push(Watch(event.wd));
                            }
                        }
                    }
                    Err(Errno::EINTR) => {}
                    Err(Errno::EAGAIN) => break,
                    Err(err) => {
                        // Cannot happen for a valid instance; if it does, trust nothing.
                        tracing::warn!(error = %err, "reading inotify events failed");
                        overflowed = true;
                        break;
                    }
                }
            }
            match overflowed {
                true => Ended::Any,
                false => Ended::These(ended),
            }
        }
    }
}

/// No inotify: nothing is ever watched.
#[cfg(not(target_os = "linux"))]
mod imp {
    use std::path::Path;

    use super::{Ended, Kind, Watch};

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Descriptor {}

    #[derive(Debug)]
    pub struct Inotify;

    impl Inotify {
        pub fn open() -> Option<Self> {
            None
        }

        pub fn add(&self, _: &Path, _: Kind) -> Option<Watch> {
            None
        }

        pub fn remove(&self, _: Watch) {}

        pub fn ended(&self) -> Ended {
            Ended::These(Vec::new())
        }
    }
}
