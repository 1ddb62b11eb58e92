//! `snapkeep verify`: walk the whole data directory, recompute every snapshot's digest, and
//! report what is not as snapkeep left it. Reads only; changes nothing.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use walkdir::WalkDir;

use super::disk::{is_top_level_temp, parse_snapshot_name, parse_temp_name};
use crate::store::Report;
use crate::store::name::{SessionId, sha256_hex_of};

/// A temp file younger than this may belong to a write in progress (a server running next to
/// `verify`), so it is not reported as left by a crash.
const IN_FLIGHT: Duration = Duration::from_secs(60);

pub(super) fn verify(root: &Path) -> io::Result<Report> {
    // The walk forgives what vanishes under it, but not a data directory that is not there.
    if !std::fs::metadata(root)?.is_dir() {
        return Err(io::ErrorKind::NotADirectory.into());
    }
    let mut report = Report::default();
    let walk = WalkDir::new(root)
        .min_depth(1)
        .max_depth(2)
        .sort_by_file_name();
    let mut entries = walk.into_iter();
    while let Some(entry) = entries.next() {
        // A server may be writing and pruning meanwhile: what vanished mid-walk is no finding.
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) if err.io_error().is_some_and(gone) => continue,
            Err(err) => return Err(err.into()),
        };
        let relative = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .to_path_buf();
        let name = entry.file_name().to_str().unwrap_or_default();
        let is_dir = entry.file_type().is_dir();
        let leftover = || !in_flight(entry.path());
        match entry.depth() {
            1 if is_dir && SessionId::parse(name).is_ok() => {}
            1 if is_top_level_temp(name) => {
                if leftover() {
                    report.temp.push(relative);
                }
            }
            1 => {
                if is_dir {
                    entries.skip_current_dir();
                }
                report.stray.push(relative);
            }
            _ if is_dir => report.stray.push(relative),
            _ => match (parse_snapshot_name(name), parse_temp_name(name)) {
                (Some(id), _) => match digest_of(entry.path())? {
                    Some(digest) if id.digest_matches(&digest) => report.good += 1,
                    Some(_) => report.corrupt.push(relative),
                    None => {} // pruned while we looked
                },
                (None, Some(_)) => {
                    if leftover() {
                        report.temp.push(relative);
                    }
                }
                (None, None) => report.stray.push(relative),
            },
        }
    }
    Ok(report)
}

/// The file's SHA-256, or `None` when it is gone.
fn digest_of(path: &Path) -> io::Result<Option<String>> {
    match std::fs::File::open(path) {
        Ok(file) => sha256_hex_of(file).map(Some),
        Err(err) if gone(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

fn gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound
}

/// Whether a temp file is young enough to belong to a write (or readiness probe) in progress,
/// or is gone already (renamed into place, or removed).
fn in_flight(path: &Path) -> bool {
    match std::fs::metadata(path).and_then(|m| m.modified()) {
        Ok(modified) => {
            SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default()
                < IN_FLIGHT
        }
        Err(_) => true,
    }
}
