//! Configuration: the `SNAPKEEP_*` environment variables, read once with envy at start and
//! validated into a typed [`Config`]. A bad value is a [`ConfigError`] whose one-line message
//! names the variable, what it expects and what it got; `main` exits with code 2 on it.
//!
//! Tests build a `Config` from an iterator of pairs ([`Config::from_vars`]), never by setting the
//! process environment.

mod parse;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use self::parse::*;

use ipnet::IpNet;

use crate::store::retain::Retention;
use crate::store::{Quotas, S3Settings, Storage};

/// The validated settings of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Where the snapshots live: the data directory (`SNAPKEEP_DATA_DIR`, with `SNAPKEEP_FSYNC`),
    /// or the bucket of `SNAPKEEP_STORAGE`.
    pub storage: Storage,
    /// Route prefix, starting with `/` and without a trailing one, e.g. `/api/backup`.
    pub base_path: String,
    pub max_body_bytes: usize,
    pub retention: Retention,
    /// A `tracing_subscriber::EnvFilter` directive, already checked.
    pub log: String,
    /// How long a client may take to send a request's headers (also bounds an idle keep-alive
    /// connection's wait for its next request).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's whole body.
    pub body_timeout: Duration,
    /// How long sending an answer may stall (a client that does not read it) before the
    /// connection is closed.
    pub send_timeout: Duration,
    /// How long a stop (SIGTERM, Ctrl-C) waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Change feeds (`GET {base}/{session}/events`) open at once; more get `503`. Not counted in
    /// `max_connections`.
    pub max_streams: usize,
    /// How often an idle change feed sends a comment line, so proxies keep it open.
    pub events_keepalive: Duration,
    /// Who may call the API, and from which web origins.
    pub access: Access,
    /// Requests per second per client address and per session; `None`: no limit.
    pub rate_limit: Option<RateLimit>,
    pub quotas: Quotas,
    /// Sessions whose newest snapshot is older than this are removed by a background sweep.
    pub session_ttl: Option<Duration>,
    pub log_format: LogFormat,
    /// `GET /metrics` without the operator token even when one is set.
    pub metrics_public: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line, for log stacks.
    Json,
}

/// Who may call the API. With neither token nor signing key, anyone who can reach the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `SNAPKEEP_TOKEN`: reaches every route under the base path.
    pub operator_token: Option<Secret>,
    /// `SNAPKEEP_SIGNING_KEY`: verifies per-session tokens minted by the app's backend.
    pub signing_key: Option<Secret>,
    /// Writes and deletes answer 503 `read_only`; reads keep working.
    pub read_only: bool,
    pub cors_origins: CorsOrigins,
    /// Peers whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<IpNet>,
}

/// Web origins allowed to call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS headers at all (same-origin use, or behind the app's own proxy).
    None,
    Any,
    List(Vec<String>),
}

/// A token bucket's refill rate and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// A token or key. Its `Debug` never shows the value, so it cannot leak into a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A setting that cannot be used, with the sentence that says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// The variables as envy reads them: text, with the prefix stripped and lowercased.
#[derive(Debug, Deserialize)]
struct Raw {
    enabled: Option<String>,
    listen: Option<String>,
    data_dir: Option<String>,
    storage: Option<String>,
    storage_timeout: Option<String>,
    base_path: Option<String>,
    max_body_bytes: Option<String>,
    retain_last: Option<String>,
    fsync: Option<String>,
    log: Option<String>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    shutdown_timeout: Option<String>,
    send_timeout: Option<String>,
    max_connections: Option<String>,
    max_streams: Option<String>,
    events_keepalive: Option<String>,
    token: Option<String>,
    token_file: Option<String>,
    signing_key: Option<String>,
    signing_key_file: Option<String>,
    read_only: Option<String>,
    cors_origins: Option<String>,
    trusted_proxies: Option<String>,
    rate_limit: Option<String>,
    rate_burst: Option<String>,
    max_session_bytes: Option<String>,
    max_sessions: Option<String>,
    max_total_bytes: Option<String>,
    retain_hourly: Option<String>,
    retain_daily: Option<String>,
    retain_weekly: Option<String>,
    retain_monthly: Option<String>,
    retain_yearly: Option<String>,
    retain_within: Option<String>,
    session_ttl: Option<String>,
    log_format: Option<String>,
    metrics_public: Option<String>,
    /// Every other `SNAPKEEP_*` variable, most likely a typo; reported as a warning.
    #[serde(flatten)]
    unknown: BTreeMap<String, String>,
}

const PREFIX: &str = "SNAPKEEP_";

impl Config {
    /// Reads the process environment: the `SNAPKEEP_*` variables, and the `AWS_*` ones that
    /// configure an S3 client. Variables of other programs are not looked at, so one that is not
    /// UTF-8 does no harm; a `SNAPKEEP_*` or `AWS_*` one that is not is refused.
    pub fn from_env() -> Result<(Self, Vec<String>), ConfigError> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name
                .to_str()
                .filter(|n| n.starts_with(PREFIX) || n.starts_with("AWS_"))
            else {
                continue;
            };
            // The value is not shown: it may be a token.
            let value = value.into_string().map_err(|_| {
                ConfigError(format!(
                    "{name} must be UTF-8 text (the value is not shown)"
                ))
            })?;
            vars.push((name.to_owned(), value));
        }
        Self::from_vars(vars)
    }

    /// Reads `SNAPKEEP_*` pairs (and, for an S3 bucket, `AWS_*` ones) from `vars`; other names
    /// are ignored. Also returns the names of `SNAPKEEP_*` variables that snapkeep does not
    /// know, so the caller can warn about them.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let raw: Raw = envy::prefixed(PREFIX)
            .from_iter(vars.iter().cloned())
            .map_err(|err| ConfigError(format!("cannot read the {PREFIX}* settings: {err}")))?;
        let unknown = raw
            .unknown
            .keys()
            .map(|key| format!("{PREFIX}{}", key.to_uppercase()))
            .collect();
        let aws = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with("AWS_"));
        Ok((raw.validate(aws)?, unknown))
    }
}

impl Raw {
    fn validate(self, aws: impl Iterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let retain_last = number(&self.retain_last, "RETAIN_LAST", 10, 1)?;
        Ok(Config {
            enabled: boolean(&self.enabled, "ENABLED", true)?,
            listen: listen(&self.listen)?,
            storage: self.storage(aws)?,
            base_path: base_path(&self.base_path)?,
            max_body_bytes: number(&self.max_body_bytes, "MAX_BODY_BYTES", 16 * 1024 * 1024, 1)?,
            retention: Retention {
                last: NonZeroUsize::new(retain_last).expect("checked to be at least 1"),
                hourly: number(&self.retain_hourly, "RETAIN_HOURLY", 0, 0)?,
                daily: number(&self.retain_daily, "RETAIN_DAILY", 0, 0)?,
                weekly: number(&self.retain_weekly, "RETAIN_WEEKLY", 0, 0)?,
                monthly: number(&self.retain_monthly, "RETAIN_MONTHLY", 0, 0)?,
                yearly: number(&self.retain_yearly, "RETAIN_YEARLY", 0, 0)?,
                within: optional_duration(&self.retain_within, "RETAIN_WITHIN")?,
            },
            session_ttl: optional_duration(&self.session_ttl, "SESSION_TTL")?,
            log_format: log_format(&self.log_format)?,
            metrics_public: boolean(&self.metrics_public, "METRICS_PUBLIC", false)?,
            log: log_filter(&self.log)?,
            header_timeout: duration(&self.header_timeout, "HEADER_TIMEOUT", "10s")?,
            body_timeout: duration(&self.body_timeout, "BODY_TIMEOUT", "30s")?,
            send_timeout: duration(&self.send_timeout, "SEND_TIMEOUT", "30s")?,
            shutdown_timeout: duration(&self.shutdown_timeout, "SHUTDOWN_TIMEOUT", "8s")?,
            max_connections: number(&self.max_connections, "MAX_CONNECTIONS", 512, 1)?,
            max_streams: number(&self.max_streams, "MAX_STREAMS", 1000, 1)?,
            events_keepalive: duration(&self.events_keepalive, "EVENTS_KEEPALIVE", "15s")?,
            access: Access {
                operator_token: secret(&self.token, &self.token_file, "TOKEN")?,
                signing_key: secret(&self.signing_key, &self.signing_key_file, "SIGNING_KEY")?,
                read_only: boolean(&self.read_only, "READ_ONLY", false)?,
                cors_origins: origins(&self.cors_origins)?,
                trusted_proxies: networks(&self.trusted_proxies, "TRUSTED_PROXIES")?,
            },
            rate_limit: self.rate_limit()?,
            quotas: Quotas {
                session_bytes: optional_number(&self.max_session_bytes, "MAX_SESSION_BYTES", 1)?,
                sessions: optional_number(&self.max_sessions, "MAX_SESSIONS", 1)?,
                total_bytes: optional_number(&self.max_total_bytes, "MAX_TOTAL_BYTES", 1)?,
            },
        })
    }

    /// The bucket of `STORAGE` (an `s3://` URL, with the `AWS_*` variables), or else the data
    /// directory of `DATA_DIR`, written with `FSYNC`.
    fn storage(&self, aws: impl Iterator<Item = (String, String)>) -> Result<Storage, ConfigError> {
        let timeout = duration(&self.storage_timeout, "STORAGE_TIMEOUT", "5s")?;
        let fsync = boolean(&self.fsync, "FSYNC", true)?;
        let root = data_dir(&self.data_dir)?;
        let Some(url) = &self.storage else {
            return Ok(Storage::Dir { root, fsync });
        };
        S3Settings::new(url.trim(), aws, timeout)
            .map(Storage::S3)
            .map_err(|expected| invalid("STORAGE", &expected, url))
    }

    /// `RATE_LIMIT` per second, with a bucket of `RATE_BURST` (default: one second's worth).
    fn rate_limit(&self) -> Result<Option<RateLimit>, ConfigError> {
        let per_second = optional_number(&self.rate_limit, "RATE_LIMIT", 1)?;
        let burst = optional_number(&self.rate_burst, "RATE_BURST", 1)?;
        let fits = |n: u64, name: &str| {
            u32::try_from(n)
                .ok()
                .and_then(NonZeroU32::new)
                .ok_or_else(|| ConfigError(format!("{PREFIX}{name} is too large, got {n}")))
        };
        match (per_second, burst) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err(ConfigError(format!(
                "{PREFIX}RATE_BURST needs {PREFIX}RATE_LIMIT (requests per second) to be set"
            ))),
            (Some(rate), burst) => Ok(Some(RateLimit {
                per_second: fits(rate, "RATE_LIMIT")?,
                burst: fits(burst.unwrap_or(rate), "RATE_BURST")?,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
        Config::from_vars(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        config(pairs).unwrap_err().to_string()
    }

    #[test]
    fn defaults_match_the_contract() {
        let (c, unknown) = config(&[("PATH", "/usr/bin")]).unwrap();
        assert!(c.enabled);
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        let root = PathBuf::from("./data");
        assert_eq!(c.storage, Storage::Dir { root, fsync: true });
        assert_eq!(c.base_path, "/api/backup");
        assert_eq!(c.max_body_bytes, 16_777_216);
        assert_eq!(c.retention.last.get(), 10);
        assert_eq!(c.log, "info");
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        assert_eq!(c.body_timeout, Duration::from_secs(30));
        assert_eq!(
            c.shutdown_timeout,
            Duration::from_secs(8),
            "below docker stop's 10 s"
        );
        assert_eq!(c.send_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections, 512);
        assert!(unknown.is_empty());
    }

    #[test]
    fn every_variable_is_read() {
        let (c, _) = config(&[
            ("SNAPKEEP_ENABLED", "false"),
            ("SNAPKEEP_LISTEN", "0.0.0.0:9000"),
            ("SNAPKEEP_DATA_DIR", "/var/lib/snapkeep"),
            ("SNAPKEEP_BASE_PATH", "/backup/"),
            ("SNAPKEEP_MAX_BODY_BYTES", "1024"),
            ("SNAPKEEP_RETAIN_LAST", "3"),
            ("SNAPKEEP_FSYNC", "FALSE"),
            ("SNAPKEEP_LOG", "debug"),
            ("SNAPKEEP_HEADER_TIMEOUT", "2s"),
            ("SNAPKEEP_BODY_TIMEOUT", "1m 30s"),
            ("SNAPKEEP_SHUTDOWN_TIMEOUT", "45"),
            ("SNAPKEEP_MAX_CONNECTIONS", "64"),
        ])
        .unwrap();
        assert!(!c.enabled);
        assert_eq!(c.listen, "0.0.0.0:9000".parse().unwrap());
        let root = PathBuf::from("/var/lib/snapkeep");
        assert_eq!(c.storage, Storage::Dir { root, fsync: false });
        assert_eq!(c.base_path, "/backup");
        assert_eq!((c.max_body_bytes, c.retention.last.get()), (1024, 3));
        assert_eq!(c.log, "debug");
        assert_eq!(c.header_timeout, Duration::from_secs(2));
        assert_eq!(c.body_timeout, Duration::from_secs(90));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(45));
        assert_eq!(c.max_connections, 64);
    }

    #[test]
    fn bad_values_name_the_variable_the_expectation_and_the_value() {
        assert_eq!(
            error(&[("SNAPKEEP_RETAIN_LAST", "0")]),
            r#"SNAPKEEP_RETAIN_LAST must be a whole number of at least 1, got "0""#
        );
        assert_eq!(
            error(&[("SNAPKEEP_ENABLED", "maybe")]),
            r#"SNAPKEEP_ENABLED must be true or false, got "maybe""#
        );
        for (name, value) in [
            ("SNAPKEEP_MAX_BODY_BYTES", "16MB"),
            ("SNAPKEEP_LISTEN", "8080"),
            ("SNAPKEEP_BASE_PATH", "api"),
            ("SNAPKEEP_BASE_PATH", "/"),
            ("SNAPKEEP_BASE_PATH", "/a/../b"),
            ("SNAPKEEP_BASE_PATH", "/healthz"),
            ("SNAPKEEP_BASE_PATH", "/readyz/"),
            ("SNAPKEEP_DATA_DIR", ""),
            ("SNAPKEEP_FSYNC", ""),
            ("SNAPKEEP_LOG", "=="),
            ("SNAPKEEP_LOG", "verbose"),
            ("SNAPKEEP_LOG", "info,chatty"),
            ("SNAPKEEP_BODY_TIMEOUT", "soon"),
            ("SNAPKEEP_HEADER_TIMEOUT", "0s"),
            ("SNAPKEEP_MAX_CONNECTIONS", "0"),
        ] {
            let message = error(&[(name, value)]);
            assert!(
                message.starts_with(&format!("{name} must be ")),
                "{message}"
            );
            assert!(message.ends_with(&format!("got {value:?}")), "{message}");
            assert!(!message.contains('\n'));
        }
    }

    const TOKEN: &str = "operator-token-0123456789";

    #[test]
    fn access_and_limits_are_off_by_default() {
        let (c, _) = config(&[]).unwrap();
        assert_eq!(c.access.operator_token, None);
        assert_eq!(c.access.signing_key, None);
        assert!(!c.access.read_only);
        assert_eq!(c.access.cors_origins, CorsOrigins::None);
        assert!(c.access.trusted_proxies.is_empty());
        assert_eq!(c.rate_limit, None);
        assert_eq!(c.quotas, Quotas::default());
    }

    #[test]
    fn access_and_limits_are_read() {
        let (c, _) = config(&[
            ("SNAPKEEP_TOKEN", TOKEN),
            ("SNAPKEEP_SIGNING_KEY", "signing-key-0123456789abcdef"),
            ("SNAPKEEP_READ_ONLY", "true"),
            (
                "SNAPKEEP_CORS_ORIGINS",
                "https://app.example.com, http://localhost:5173",
            ),
            ("SNAPKEEP_TRUSTED_PROXIES", "127.0.0.1,10.0.0.0/8,::1"),
            ("SNAPKEEP_RATE_LIMIT", "5"),
            ("SNAPKEEP_MAX_SESSION_BYTES", "1000"),
            ("SNAPKEEP_MAX_SESSIONS", "3"),
            ("SNAPKEEP_MAX_TOTAL_BYTES", "5000"),
        ])
        .unwrap();
        assert_eq!(c.access.operator_token.unwrap().expose(), TOKEN);
        assert!(c.access.signing_key.is_some() && c.access.read_only);
        let origins = vec![
            "https://app.example.com".into(),
            "http://localhost:5173".into(),
        ];
        assert_eq!(c.access.cors_origins, CorsOrigins::List(origins));
        assert_eq!(c.access.trusted_proxies.len(), 3);
        let rate = c.rate_limit.unwrap();
        assert_eq!((rate.per_second.get(), rate.burst.get()), (5, 5));
        assert_eq!(
            c.quotas,
            Quotas {
                session_bytes: Some(1000),
                sessions: Some(3),
                total_bytes: Some(5000)
            }
        );
        let (c, _) = config(&[("SNAPKEEP_CORS_ORIGINS", "*")]).unwrap();
        assert_eq!(c.access.cors_origins, CorsOrigins::Any);
    }

    #[test]
    fn a_token_can_come_from_a_file_and_never_shows_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
        let path = file.display().to_string();
        let (c, _) = config(&[("SNAPKEEP_TOKEN_FILE", &path)]).unwrap();
        assert_eq!(c.access.operator_token.as_ref().unwrap().expose(), TOKEN);
        assert!(!format!("{c:?}").contains(TOKEN), "Debug shows the secret");

        let both = error(&[("SNAPKEEP_TOKEN", TOKEN), ("SNAPKEEP_TOKEN_FILE", &path)]);
        assert!(both.contains("both set"), "{both}");
        let missing = error(&[("SNAPKEEP_TOKEN_FILE", "/nonexistent/token")]);
        assert!(
            missing.starts_with("SNAPKEEP_TOKEN_FILE must be a readable file"),
            "{missing}"
        );
        let short = error(&[("SNAPKEEP_SIGNING_KEY", "short")]);
        assert!(
            short.contains("at least 16") && !short.contains("short\""),
            "{short}"
        );
    }

    #[test]
    fn bad_access_and_limit_values_are_refused() {
        for (name, value) in [
            ("SNAPKEEP_CORS_ORIGINS", "app.example.com"),
            ("SNAPKEEP_CORS_ORIGINS", "https://app.example.com/path"),
            ("SNAPKEEP_TRUSTED_PROXIES", "10.0.0.0/33"),
            ("SNAPKEEP_RATE_LIMIT", "0"),
            ("SNAPKEEP_MAX_SESSIONS", "none"),
            ("SNAPKEEP_READ_ONLY", "sometimes"),
        ] {
            let message = error(&[(name, value)]);
            assert!(
                message.starts_with(&format!("{name} must be ")),
                "{message}"
            );
        }
        for (name, value) in [
            ("SNAPKEEP_RETAIN_WITHIN", "1m"),
            ("SNAPKEEP_SESSION_TTL", "30m"),
        ] {
            let message = error(&[(name, value)]);
            assert!(
                message.contains("at least 1h") && message.contains("m is minutes"),
                "{message}"
            );
        }
        let burst = error(&[("SNAPKEEP_RATE_BURST", "10")]);
        assert!(burst.contains("needs SNAPKEEP_RATE_LIMIT"), "{burst}");
    }

    #[test]
    fn a_bucket_replaces_the_data_directory() {
        let (c, _) = config(&[
            ("SNAPKEEP_STORAGE", "s3://snapshots/app"),
            ("SNAPKEEP_DATA_DIR", "/data"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "eu-west-1"),
        ])
        .unwrap();
        let Storage::S3(settings) = c.storage else {
            panic!("{:?}", c.storage);
        };
        assert_eq!(settings.url(), "s3://snapshots/app");
        assert_eq!(settings.timeout, Duration::from_secs(5));
        let message = error(&[("SNAPKEEP_STORAGE", "/var/lib/snapkeep")]);
        assert!(
            message.starts_with("SNAPKEEP_STORAGE must be an s3://BUCKET")
                && message.ends_with("got \"/var/lib/snapkeep\""),
            "{message}"
        );
        let message = error(&[
            ("SNAPKEEP_STORAGE", "s3://snapshots"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
        ]);
        assert!(message.contains("AWS_ALLOW_HTTP=true"), "{message}");
    }

    #[test]
    fn unknown_snapkeep_variables_are_reported() {
        let (_, unknown) = config(&[("SNAPKEEP_RETIAN_LAST", "5")]).unwrap();
        assert_eq!(unknown, vec!["SNAPKEEP_RETIAN_LAST".to_string()]);
    }
}
