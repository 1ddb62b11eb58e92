//! The command line: `snapkeep` (or `snapkeep serve`) runs the server; `snapkeep healthcheck`
//! asks a running server whether it is ready, for a container's `HEALTHCHECK` without curl;
//! `snapkeep token SESSION --ttl 30d` mints a session token with the configured signing key;
//! `list`, `show`, `verify`, `prune` and `restore` work on the store directly (the data
//! directory, or the bucket of `--storage` / `SNAPKEEP_STORAGE`; see `inspect.rs`), with no
//! server needed, and may run while servers do: their changes are transactions like a
//! server's.

mod inspect;

pub use inspect::run_offline;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::auth;
use crate::config::{Access, Config};
use crate::store::Storage;
use crate::store::name::SessionId;

/// A small self-hosted backup server for browser app state. Configured with SNAPKEEP_*
/// environment variables (see the README).
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// The data directory to work on (default: SNAPKEEP_DATA_DIR, or ./data).
    #[arg(long, global = true, conflicts_with = "storage")]
    pub data_dir: Option<PathBuf>,
    /// The bucket to work on, s3://BUCKET[/PREFIX], reached with the AWS_* variables (default:
    /// SNAPKEEP_STORAGE).
    #[arg(long, global = true)]
    pub storage: Option<String>,
    /// Print JSON instead of text (list, verify, prune, restore).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Exit 0 if the server at SNAPKEEP_LISTEN is ready (GET /readyz answers 200: it runs and
    /// can use its storage), else 1.
    Healthcheck,
    /// List the sessions (count, bytes, newest), or one session's snapshots.
    List {
        /// The session whose snapshots to list.
        session: Option<String>,
    },
    /// Print one snapshot's exact bytes (the latest by default).
    Show {
        session: String,
        /// A snapshot id, or `latest`.
        #[arg(default_value = "latest")]
        id: String,
    },
    /// Check every snapshot against its digest and report corrupt, temp and stray files;
    /// exit 1 when a snapshot is corrupt or a crash left a temp file.
    Verify,
    /// Apply the retention policy to every session and say what it removes and why.
    Prune {
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Make an older snapshot the latest again, as a new snapshot with its bytes.
    Restore {
        session: String,
        id: String,
        /// Restore it even when it no longer matches its digest.
        #[arg(long)]
        force: bool,
    },
    /// Print a token for one session, signed with SNAPKEEP_SIGNING_KEY (the token alone, for
    /// scripts).
    Token {
        /// The session the token opens.
        session: String,
        /// How long it stays valid, e.g. 1h, 30d.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

impl Cli {
    /// Applies `--data-dir` or `--storage` to `config`, which was read from the environment.
    pub fn choose_storage(&self, config: &mut Config) -> anyhow::Result<()> {
        if let Some(root) = &self.data_dir {
            let fsync = match &config.storage {
                Storage::Dir { fsync, .. } => *fsync,
                Storage::S3(_) => true,
            };
            config.storage = Storage::Dir {
                root: root.clone(),
                fsync,
            };
        }
        if let Some(url) = &self.storage {
            let mut vars: Vec<(String, String)> = std::env::vars()
                .filter(|(name, _)| name.starts_with("AWS_") || name.starts_with("SNAPKEEP_"))
                .collect();
            vars.push(("SNAPKEEP_STORAGE".into(), url.clone()));
            let (from_flag, _) =
                Config::from_vars(vars).map_err(|err| anyhow::anyhow!("--storage: {err}"))?;
            config.storage = from_flag.storage;
        }
        Ok(())
    }
}

/// A session token for `session`, valid for `ttl` from now.
pub fn token(access: &Access, session: &str, ttl: Duration) -> anyhow::Result<String> {
    let session =
        SessionId::parse(session).map_err(|err| anyhow::anyhow!("invalid session: {err}"))?;
    let key = access
        .signing_key
        .as_ref()
        .context("SNAPKEEP_SIGNING_KEY (or SNAPKEEP_SIGNING_KEY_FILE) is not set")?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ttl = i64::try_from(ttl.as_secs()).context("the ttl is too long")?;
    Ok(auth::mint(
        key.expose().as_bytes(),
        &session,
        now.saturating_add(ttl),
    ))
}

/// Asks the server listening on `listen` whether it is ready (`/readyz`): a container whose
/// server runs but cannot write its data directory (or reach its bucket) is not healthy. A
/// wildcard address (`0.0.0.0`) is reached through loopback.
pub async fn healthcheck(listen: SocketAddr) -> anyhow::Result<()> {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let target = SocketAddr::new(ip, listen.port());
    let status = tokio::time::timeout(Duration::from_secs(5), get_readyz(target))
        .await
        .with_context(|| format!("no answer from {target} within 5 s"))??;
    if status != 200 {
        bail!("{target} answered /readyz with {status}: it runs, but cannot use its storage yet");
    }
    Ok(())
}

async fn get_readyz(target: SocketAddr) -> anyhow::Result<u16> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("cannot connect to {target}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/readyz")
        .header(hyper::header::HOST, target.to_string())
        .body(Empty::<Bytes>::new())?;
    Ok(sender.send_request(request).await?.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_is_the_default() {
        assert_eq!(Cli::parse_from(["snapkeep"]).command, None);
        assert_eq!(
            Cli::parse_from(["snapkeep", "healthcheck"]).command,
            Some(Command::Healthcheck)
        );
        assert_eq!(
            Cli::parse_from(["snapkeep", "token", "s", "--ttl", "1h"]).command,
            Some(Command::Token {
                session: "s".into(),
                ttl: Duration::from_secs(3600)
            })
        );
    }
}
