//! snapkeep: a small, self-hosted HTTP server that keeps backups of browser app state as plain
//! JSON files, one per snapshot, with timestamped names and rotation.
//!
//! # Layout
//! - [`config`]: `SNAPKEEP_*` variables -> a validated [`config::Config`].
//! - [`auth`]: the operator token and per-session tokens (pure).
//! - [`server`]: binds nothing itself; serves a router on a given listener until shutdown.
//! - [`http`]: the route table, extractors, handlers and the one error type of the API.
//! - [`store`]: snapshots in a data directory or an S3-compatible bucket, behind one seam:
//!   names, transactions, dedup, retention, quotas. No HTTP in here.
//! - [`merge_patch`]: RFC 7396, a pure function on JSON values.
//! - [`json`]: whether bytes are one JSON document, with line and column when not (pure).
//! - [`cli`]: subcommands (`serve`, `healthcheck`, `token`, and `list`, `show`, `verify`,
//!   `prune`, `restore` on the store).
//!
//! Dependencies point one way: `http -> store`, `cli -> store`; `store` knows nothing of HTTP.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod http;
pub mod json;
pub mod merge_patch;
pub mod server;
pub mod store;
