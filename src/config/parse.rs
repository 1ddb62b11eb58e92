//! Parsers for the text of one setting each: a typed value, or a [`ConfigError`] whose
//! sentence names the variable, what it expects and what it got.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::{ConfigError, CorsOrigins, LogFormat, PREFIX, Secret};

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
        _ => Err(invalid(
            name,
            "a duration such as 30s, 2m, 500ms or 7d",
            text,
        )),
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
const RESERVED_PATHS: [&str; 5] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/snapkeep.js",
    "/snapkeep-mirror.js",
];

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
             slashes; not /healthz, /readyz, /metrics or /snapkeep.js)",
            text,
        )),
    }
}

pub(super) fn log_filter(value: &Option<String>) -> Result<String, ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let text = value.as_deref().unwrap_or("info");
    // A bare word that is no level parses as a target at every level (`verbose`: log only
    // what the target "verbose" says), which silences everything: refused.
    let bare_word = text.split(',').map(str::trim).any(|directive| {
        !directive.contains('=') && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
    });
    match tracing_subscriber::EnvFilter::try_new(text) {
        Ok(_) if !bare_word => Ok(text.to_owned()),
        _ => Err(invalid(
            "LOG",
            "a level (off, error, warn, info, debug, trace) or target=level directives such as \
             snapkeep=debug,tower_http=info",
            text,
        )),
    }
}

/// An optional whole number (`None` when unset): a limit that is off by default.
pub(super) fn optional_number(
    value: &Option<String>,
    name: &str,
    min: u64,
) -> Result<Option<u64>, ConfigError> {
    let Some(text) = value else {
        return Ok(None);
    };
    match text.trim().parse::<u64>() {
        Ok(n) if n >= min => Ok(Some(n)),
        _ => Err(invalid(
            name,
            &format!("a whole number of at least {min}"),
            text,
        )),
    }
}

/// A secret given inline (`SNAPKEEP_<NAME>`) or in a file (`SNAPKEEP_<NAME>_FILE`, as docker
/// secrets are mounted), not both. A file's trailing newline is not part of the secret.
pub(super) fn secret(
    inline: &Option<String>,
    file: &Option<String>,
    name: &str,
) -> Result<Option<Secret>, ConfigError> {
    let text = match (inline, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(ConfigError(format!(
                "{PREFIX}{name} and {PREFIX}{name}_FILE are both set: set one of them"
            )));
        }
        (Some(text), None) => text.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|err| {
                invalid(
                    &format!("{name}_FILE"),
                    &format!("a readable file ({err})"),
                    path,
                )
            })?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
    };
    // Never echo a secret, not even a bad one.
    match text.trim().len() >= 16 && !text.contains(char::is_whitespace) {
        true => Ok(Some(Secret(text))),
        false => Err(ConfigError(format!(
            "{PREFIX}{name} must be at least 16 characters without spaces (the value is not shown)"
        ))),
    }
}

/// `*`, or a comma-separated list of origins such as `https://app.example.com`.
pub(super) fn origins(value: &Option<String>) -> Result<CorsOrigins, ConfigError> {
    let Some(text) = value else {
        return Ok(CorsOrigins::None);
    };
    if text.trim() == "*" {
        return Ok(CorsOrigins::Any);
    }
    let origin_ok = |o: &&str| {
        let rest = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"));
        rest.is_some_and(|host| {
            !host.is_empty() && !host.contains('/') && host.bytes().all(|b| b.is_ascii_graphic())
        })
    };
    let list: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    match !list.is_empty() && list.iter().all(origin_ok) {
        true => Ok(CorsOrigins::List(
            list.into_iter().map(str::to_owned).collect(),
        )),
        false => Err(invalid(
            "CORS_ORIGINS",
            "* or origins such as https://app.example.com,http://localhost:5173",
            text,
        )),
    }
}

/// Comma-separated addresses or CIDR networks, e.g. `127.0.0.1,10.0.0.0/8`.
pub(super) fn networks(value: &Option<String>, name: &str) -> Result<Vec<IpNet>, ConfigError> {
    let Some(text) = value else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    invalid(
                        name,
                        "addresses or networks such as 127.0.0.1,10.0.0.0/8",
                        text,
                    )
                })
        })
        .collect()
}

/// An optional span of history (`None` when unset), such as `7d` or `90d`: at least an hour.
/// Shorter is refused rather than obeyed, because it deletes history fast and is most likely
/// `m` meant as months (as in restic) where it means minutes.
pub(super) fn optional_duration(
    value: &Option<String>,
    name: &str,
) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = value else {
        return Ok(None);
    };
    match duration(value, name, text)? {
        d if d >= Duration::from_secs(3600) => Ok(Some(d)),
        _ => Err(invalid(
            name,
            "at least 1h, such as 36h, 7d or 6months (m is minutes)",
            text,
        )),
    }
}

/// `text` (the default) or `json`.
pub(super) fn log_format(value: &Option<String>) -> Result<LogFormat, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(_) => Err(invalid(
            "LOG_FORMAT",
            "text or json",
            value.as_deref().unwrap(),
        )),
    }
}
