//! The disk's own limit for a durable snapshot write, with no HTTP at all: the benchmark in
//! `bench/` compares snapkeep's W1 rate with this.
//!
//! Each operation does what snapkeep's store does for one write: create a temp file in a
//! session directory (`O_EXCL`), write 4 KiB, `fsync` it, rename it to a unique final name,
//! `fsync` the directory. Operations are spread over 100 session directories, round-robin,
//! from `<threads>` threads at once, for `<seconds>`.
//!
//! Two optional arguments measure what the limit becomes with the rest of snapkeep's disk work:
//! `<keep>` (default 0: keep all) removes each session's file `keep` writes back, as retention
//! does; `nofsync` leaves out both fsyncs, as `SNAPKEEP_FSYNC=false` does.
//!
//! `group` asks whether group commit would pay on this filesystem: the threads write in
//! rounds, one write each; every thread writes its temp file without fsync, one `syncfs` makes
//! the round's data durable, every thread renames (and deletes), and a second `syncfs` makes
//! the renames durable. A write counts once its round's second `syncfs` has returned: the same
//! promise as an fsync per write, two flushes per round instead of two per write.
//!
//! ```sh
//! cargo run --release --example disk_limit -- /tmp/disk-limit 16 6
//! cargo run --release --example disk_limit -- /tmp/disk-limit 16 6 10 nofsync
//! cargo run --release --example disk_limit -- /tmp/disk-limit 16 6 10 group
//! ```
//!
//! Prints one JSON line: `{"threads","seconds","ops","ops_per_sec","p50_ms","p99_ms","errors"}`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const SESSIONS: u64 = 100;
const BODY_BYTES: usize = 4096;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = parse(&args);
    let Some((dir, threads, seconds, work)) = parsed else {
        eprintln!("usage: disk_limit <dir> <threads> <seconds> [<keep> [nofsync|group]]");
        return ExitCode::from(2);
    };
    match run(&dir, threads, Duration::from_secs_f64(seconds), work) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("disk_limit: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `<dir> <threads> <seconds> [<keep> [nofsync|group]]`
fn parse(args: &[String]) -> Option<(PathBuf, usize, f64, Work)> {
    let [dir, threads, seconds, rest @ ..] = args else {
        return None;
    };
    let threads = threads.parse::<usize>().ok().filter(|t| *t > 0)?;
    let seconds = seconds.parse::<f64>().ok().filter(|s| *s > 0.0)?;
    let (keep, durable) = match rest {
        [] => (0, Durable::Fsync),
        [keep] => (keep.parse().ok()?, Durable::Fsync),
        [keep, word] if word == "nofsync" => (keep.parse().ok()?, Durable::No),
        [keep, word] if word == "group" => (keep.parse().ok()?, Durable::Group),
        _ => return None,
    };
    Some((PathBuf::from(dir), threads, seconds, Work { keep, durable }))
}

/// What each write does besides create, write and rename.
#[derive(Clone, Copy)]
struct Work {
    /// Files kept per session (0: all); the one `keep` writes back is removed.
    keep: u64,
    durable: Durable,
}

#[derive(Clone, Copy, PartialEq)]
enum Durable {
    /// An fsync of the file and one of its directory per write, as snapkeep does.
    Fsync,
    /// Neither (`SNAPKEEP_FSYNC=false`).
    No,
    /// Rounds of one write per thread, made durable by two `syncfs` calls per round.
    Group,
}

fn run(dir: &Path, threads: usize, duration: Duration, work: Work) -> std::io::Result<String> {
    for session in 0..SESSIONS {
        fs::create_dir_all(dir.join(format!("s{session}")))?;
    }
    let body = Arc::new(body());
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let round = Arc::new(Round::new(threads, File::open(dir)?));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (dir, body) = (dir.to_path_buf(), Arc::clone(&body));
            let (counter, errors) = (Arc::clone(&counter), Arc::clone(&errors));
            let round = Arc::clone(&round);
            thread::spawn(move || {
                let mut latencies = Vec::new();
                while round.go_on(work.durable, deadline) {
                    let k = counter.fetch_add(1, Ordering::Relaxed);
                    let began = Instant::now();
                    match write_one(&dir, k, &body, work, &round) {
                        Ok(()) => latencies.push(began.elapsed()),
                        Err(err) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("disk_limit: write {k}: {err}");
                            }
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a worker thread panicked"))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ops = latencies.len();
    Ok(format!(
        "{{\"threads\":{threads},\"seconds\":{elapsed:.3},\"ops\":{ops},\"ops_per_sec\":{:.1},\
         \"p50_ms\":{:.3},\"p99_ms\":{:.3},\"errors\":{}}}",
        ops as f64 / elapsed,
        percentile_ms(&latencies, 0.50),
        percentile_ms(&latencies, 0.99),
        errors.load(Ordering::Relaxed),
    ))
}

/// One durable write, the way snapkeep's store makes it (or its part of a round, in `group`
/// mode, where every thread reaches both flushes even after an error, or the others would
/// wait for it forever).
fn write_one(dir: &Path, k: u64, body: &[u8], work: Work, round: &Round) -> std::io::Result<()> {
    let (fsync, group) = (
        work.durable == Durable::Fsync,
        work.durable == Durable::Group,
    );
    let session = dir.join(format!("s{}", k % SESSIONS));
    let temp = session.join(format!(".{k}.json.tmp"));
    let mut written = write_temp(&temp, body, fsync);
    if group {
        written = written.and(round.flush());
    }
    let mut done = written.and_then(|()| {
        fs::rename(&temp, session.join(format!("{k}.json")))?;
        if fsync {
            File::open(&session)?.sync_all()?;
        }
        // The same session's file from `keep` writes back (k - keep * SESSIONS); a slower
        // thread may not have written it yet, and then it stays.
        match k.checked_sub(work.keep * SESSIONS) {
            Some(old) if work.keep > 0 => {
                match fs::remove_file(session.join(format!("{old}.json"))) {
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other,
                }
            }
            _ => Ok(()),
        }
    });
    if group {
        done = done.and(round.flush());
    }
    done
}

fn write_temp(temp: &Path, body: &[u8], fsync: bool) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(temp)?;
    file.write_all(body)?;
    if fsync {
        file.sync_all()?;
    }
    Ok(())
}

/// `group` mode's rounds: every thread waits for the others at each step, and one of them
/// flushes the whole filesystem for all.
struct Round {
    barrier: Barrier,
    filesystem: File,
    over: AtomicBool,
}

impl Round {
    fn new(threads: usize, filesystem: File) -> Self {
        Self {
            barrier: Barrier::new(threads),
            filesystem,
            over: AtomicBool::new(false),
        }
    }

    /// Whether to write once more; in `group` mode every thread gets the same answer.
    fn go_on(&self, durable: Durable, deadline: Instant) -> bool {
        if durable != Durable::Group {
            return Instant::now() < deadline;
        }
        if self.barrier.wait().is_leader() && Instant::now() >= deadline {
            self.over.store(true, Ordering::SeqCst);
        }
        self.barrier.wait();
        !self.over.load(Ordering::SeqCst)
    }

    /// Once every thread has reached this step of its write: one `syncfs`, then all go on.
    fn flush(&self) -> std::io::Result<()> {
        let result = match self.barrier.wait().is_leader() {
            true => nix::unistd::syncfs(&self.filesystem).map_err(std::io::Error::from),
            false => Ok(()),
        };
        self.barrier.wait();
        result
    }
}

/// A 4 KiB JSON document, like the benchmark's W1 body.
fn body() -> Vec<u8> {
    let head = b"{\"state\":\"";
    let tail = b"\"}";
    let mut body = Vec::with_capacity(BODY_BYTES);
    body.extend_from_slice(head);
    body.resize(BODY_BYTES - tail.len(), b'x');
    body.extend_from_slice(tail);
    body
}

fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}
