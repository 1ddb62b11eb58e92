//! Integration tests: the real server on 127.0.0.1:0 with a temp data directory, driven by a
//! real HTTP client. One binary made of modules, so it links once.

#[macro_use]
mod helpers;
#[path = "../support/mod.rs"]
mod support;

mod access;
mod bad_input;
mod browser;
mod bucket;
mod compressed;
mod concurrency;
mod conditional;
mod cors;
mod delete;
mod disabled;
mod disk_full;
mod events;
// Reads are kept in memory only where inotify tells of changes.
#[cfg(target_os = "linux")]
mod from_memory;
mod gzip;
mod housekeeping;
mod large;
mod limits;
mod metrics;
mod openapi;
mod patch;
mod read;
mod s3_faults;
mod save;
mod service;
mod slow;
mod storage;
