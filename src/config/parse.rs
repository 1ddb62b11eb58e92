//! Parsers for the text of one setting each: a typed value, or a [`ConfigError`] whose
//! sentence names the variable, what it expects and what it got.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, PREFIX};

pub(super) fn invalid(name: &str, expects: &str, got: &str) -> ConfigError {
    ConfigError(format!("{PREFIX}{name} must be {expects}, got {got:?}"))
}

pub(super) fn boolean(
    value: &Option<String>,
    name: &str,
    default: bool,
) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(_) => Err(invalid(name, "true or false", value.as_deref().unwrap())),
    }
}

pub(super) fn number(
    value: &Option<String>,
    name: &str,
    default: usize,
    min: usize,
) -> Result<usize, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(invalid(
            name,
            &format!("a whole number of at least {min}"),
            text,
        )),
    }
}

/// A duration such as `10s`, `1m 30s` or `500ms`; a bare number is seconds.
pub(super) fn duration(
    value: &Option<String>,
    name: &str,
    default: &str,
) -> Result<Duration, ConfigError> {
    let text = value.as_deref().unwrap_or(default).trim();
    let parsed = match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text),
    };
    match parsed {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(invalid(name, "a duration such as 30s, 2m or 500ms", text)),
    }
}

pub(super) fn listen(value: &Option<String>) -> Result<SocketAddr, ConfigError> {
    let text = value.as_deref().unwrap_or("127.0.0.1:8080");
    text.parse().map_err(|_| {
        invalid(
            "LISTEN",
            "an IP address and port such as 127.0.0.1:8080 or 0.0.0.0:8080",
            text,
        )
    })
}

pub(super) fn data_dir(value: &Option<String>) -> Result<PathBuf, ConfigError> {
    match value.as_deref().unwrap_or("./data") {
        "" => Err(invalid(
            "DATA_DIR",
            "a directory path such as ./data or /data",
            "",
        )),
        path => Ok(PathBuf::from(path)),
    }
}

/// Paths the server answers itself, which the base path must not take over.
const RESERVED_PATHS: [&str; 2] = ["/healthz", "/readyz"];

pub(super) fn base_path(value: &Option<String>) -> Result<String, ConfigError> {
    let text = value.as_deref().unwrap_or("/api/backup");
    let trimmed = text.trim_end_matches('/');
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    };
    match trimmed.strip_prefix('/') {
        Some(rest) if rest.split('/').all(segment_ok) && !RESERVED_PATHS.contains(&trimmed) => {
            Ok(trimmed.to_owned())
        }
        _ => Err(invalid(
            "BASE_PATH",
            "a path such as /api/backup (starting with /, letters, digits, - . _ ~ between \
             slashes; not /healthz or /readyz)",
            text,
        )),
    }
}

pub(super) fn log_filter(value: &Option<String>) -> Result<String, ConfigError> {
    let text = value.as_deref().unwrap_or("info");
    match tracing_subscriber::EnvFilter::try_new(text) {
        Ok(_) => Ok(text.to_owned()),
        Err(_) => Err(invalid(
            "LOG",
            "a log filter such as info, debug or snapkeep=debug,tower_http=info",
            text,
        )),
    }
}
