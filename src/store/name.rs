//! The two names snapkeep puts on disk: session ids (directory names) and snapshot ids (file
//! names). Both are parsed from untrusted text with a strict allow-list before anything touches
//! the filesystem, so a raw URL segment is never joined to a path.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use time::macros::format_description;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

/// Longest session id accepted.
pub const MAX_SESSION_LEN: usize = 128;

/// Hex digits of the content digest that snapkeep puts in the ids it makes.
const DIGEST_LEN: usize = 16;
/// The contract allows ids with a shorter digest (at least 8 digits) made by hand.
const MIN_DIGEST_LEN: usize = 8;

/// `20261123T185337.123456Z`: ISO 8601 basic format, UTC, microseconds. Fixed width, so the
/// text of two ids sorts exactly as their times do.
const TIME_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second].[subsecond digits:6]Z");
const TIME_LEN: usize = "20261123T185337.123456Z".len();

/// Why a session or snapshot id was refused; the text is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "a session id is 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
    )]
    Session,
    #[error("\"{RESERVED_SESSION}\" is the address of the API's description, not a session id")]
    Reserved,
    #[error("a snapshot id looks like 20261123T185337.123456Z-9f86d081884c7d65")]
    Snapshot,
}

/// The one well-formed name that is no session's: `GET {base}/openapi.json` is the API's
/// description (other routes of the base path start with `_`, which no session id does).
pub const RESERVED_SESSION: &str = "openapi.json";

/// A client-chosen session id: 1 to 128 characters of `A-Z a-z 0-9 . _ -`, the first one a
/// letter or digit, so `.`, `..` and hidden names cannot be expressed.
///
/// ```
/// use snapkeep::store::name::SessionId;
///
/// assert_eq!(SessionId::parse("user-42").unwrap().as_str(), "user-42");
/// assert!(SessionId::parse("..").is_err());
/// assert!(SessionId::parse("a/b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(String);

impl SessionId {
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let bytes = text.as_bytes();
        let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        match bytes.first() {
            Some(first)
                if first.is_ascii_alphanumeric()
                    && bytes.len() <= MAX_SESSION_LEN
                    && bytes.iter().all(allowed) =>
            {
                match text == RESERVED_SESSION {
                    true => Err(NameError::Reserved),
                    false => Ok(Self(text.to_owned())),
                }
            }
            _ => Err(NameError::Session),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SessionId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A snapshot id: its UTC creation time, `-`, then lowercase hex digits of the content's
/// SHA-256. Ordering is by time first, so "newest" is simply the greatest id.
///
/// ```
/// use snapkeep::store::name::{SnapshotId, sha256_hex};
/// use time::macros::datetime;
///
/// let now = datetime!(2026-11-23 18:53:37.123456 UTC);
/// let first = SnapshotId::next(now, None, &sha256_hex(b"{}")).unwrap();
/// assert_eq!(first.to_string(), "20261123T185337.123456Z-44136fa355b3678a");
///
/// // Two writes in the same microsecond still get increasing ids.
/// let second = SnapshotId::next(now, Some(&first), &sha256_hex(b"[]")).unwrap();
/// assert!(second > first);
/// assert_eq!(SnapshotId::parse(&second.to_string()), Ok(second));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotId {
    created: OffsetDateTime,
    /// Shared, so that cloning an id (every answer from memory does) allocates nothing.
    digest: Arc<str>,
}

impl SnapshotId {
    /// The id for new content written at `now`, strictly greater than `previous` (the session's
    /// newest id) even when the clock stands still or steps back: the time is then moved to one
    /// microsecond after `previous`. `None` only when `previous` is the last microsecond of
    /// year 9999 (a file placed by hand), after which no id exists.
    pub fn next(
        now: OffsetDateTime,
        previous: Option<&SnapshotId>,
        sha256_hex: &str,
    ) -> Option<Self> {
        let now = truncate_to_micros(now);
        let created = match previous {
            Some(prev) if prev.created >= now => {
                let later = prev.created.checked_add(Duration::microseconds(1))?;
                (later.year() <= 9999).then_some(later)?
            }
            _ => now,
        };
        Some(Self {
            created,
            digest: Arc::from(&sha256_hex[..DIGEST_LEN]),
        })
    }

    pub fn parse(text: &str) -> Result<Self, NameError> {
        let (time, digest) = text.split_at_checked(TIME_LEN).ok_or(NameError::Snapshot)?;
        let digest = digest.strip_prefix('-').ok_or(NameError::Snapshot)?;
        let digest_ok = (MIN_DIGEST_LEN..=64).contains(&digest.len())
            && digest
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        // The time format's fixed width rejects signs and extra digits that the parser allows.
        let time_ok = time
            .bytes()
            .all(|b| b.is_ascii_digit() || b"T.Z".contains(&b));
        if !digest_ok || !time_ok {
            return Err(NameError::Snapshot);
        }
        let created = PrimitiveDateTime::parse(time, TIME_FORMAT)
            .map_err(|_| NameError::Snapshot)?
            .assume_utc();
        Ok(Self {
            created,
            digest: Arc::from(digest),
        })
    }

    /// When the snapshot was written (server time, UTC).
    pub fn created_at(&self) -> OffsetDateTime {
        self.created
    }

    /// [`Self::created_at`] as RFC 3339 with microseconds: `2026-11-23T18:53:37.123456Z`.
    pub fn created_rfc3339(&self) -> String {
        let format = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        );
        self.created
            .format(format)
            .expect("a UTC time always formats")
    }

    /// Whether `sha256_hex` (a full digest) starts with this id's digest digits.
    pub fn digest_matches(&self, sha256_hex: &str) -> bool {
        sha256_hex.starts_with(&*self.digest)
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match time_text(self.created) {
            Some(text) => f.write_str(std::str::from_utf8(&text).expect("digits are ASCII"))?,
            None => {
                let text = self.created.format(TIME_FORMAT).map_err(|_| fmt::Error)?;
                f.write_str(&text)?;
            }
        }
        write!(f, "-{}", self.digest)
    }
}

/// `TIME_FORMAT` written digit by digit: an id goes into every answer about a snapshot, and
/// the formatter behind a format description (or `write!` with padding) costs more than all
/// the rest of such an answer. `None` for a year outside 0..=9999, which no id has. A proptest
/// holds the two to the same text.
fn time_text(t: OffsetDateTime) -> Option<[u8; TIME_LEN]> {
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let mut text = *b"00000000T000000.000000Z";
    let fields = [
        (0, 4, year),
        (4, 2, u32::from(u8::from(t.month()))),
        (6, 2, u32::from(t.day())),
        (9, 2, u32::from(t.hour())),
        (11, 2, u32::from(t.minute())),
        (13, 2, u32::from(t.second())),
        (16, 6, t.microsecond()),
    ];
    for (at, width, mut value) in fields {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    Some(text)
}

impl FromStr for SnapshotId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex SHA-256 of everything `reader` yields, read in pieces (never all at once).
pub fn sha256_hex_of(mut reader: impl std::io::Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match reader.read(&mut buffer)? {
            0 => return Ok(hex(&hasher.finalize())),
            n => hasher.update(&buffer[..n]),
        }
    }
}

/// Lowercase hex of any bytes (digests, signatures): the one encoder of the crate.
pub fn hex(digest: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(digest.len() * 2);
    for byte in digest {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

fn truncate_to_micros(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.microsecond() * 1_000)
        .expect("microseconds are a valid nanosecond value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn session_ids_follow_the_allow_list() {
        for ok in ["a", "A9", "user-42", "0.5_x", &"s".repeat(128)] {
            assert!(SessionId::parse(ok).is_ok(), "{ok:?} should be valid");
        }
        let too_long = "s".repeat(129);
        for bad in [
            "", ".", "..", ".hidden", "-x", "_x", "a/b", "a\\b", "a b", "a\0b", "é", "a%2f",
            &too_long,
        ] {
            assert_eq!(SessionId::parse(bad), Err(NameError::Session), "{bad:?}");
        }
        assert_eq!(SessionId::parse("openapi.json"), Err(NameError::Reserved));
        assert!(SessionId::parse("openapi.json5").is_ok());
    }

    #[test]
    fn snapshot_id_round_trips_through_text() {
        let text = "20261123T185337.123456Z-9f86d081884c7d65";
        let id = SnapshotId::parse(text).unwrap();
        assert_eq!(id.to_string(), text);
        assert_eq!(id.created_at(), datetime!(2026-11-23 18:53:37.123456 UTC));
    }

    #[test]
    fn snapshot_id_rejects_near_misses() {
        for bad in [
            "",
            "latest",
            "20261123T185337.123456Z",
            "20261123T185337.123456Z-",
            "20261123T185337.123456Z-9f86d08",         // 7 digits
            "20261123T185337.123456Z-9F86D081884C",    // uppercase
            "20261123T185337.12345Z-9f86d081884c7d65", // 5 fraction digits
            "20261123T185337.123456+9f86d081884c7d65",
            "20261323T185337.123456Z-9f86d081884c7d65", // month 13
            "2026-11-23T18:53:37.123456Z-9f86d081884c7d65",
            "20261123T185337.123456Z-9f86d081884c7d65.json",
            "../20261123T185337.123456Z-9f86d081884c7d65",
        ] {
            assert_eq!(SnapshotId::parse(bad), Err(NameError::Snapshot), "{bad:?}");
        }
        assert!(SnapshotId::parse("20261123T185337.123456Z-9f86d081").is_ok());
    }

    #[test]
    fn next_id_uses_the_clock_and_the_digest() {
        let now = datetime!(2026-11-23 18:53:37.123456789 UTC);
        let id = SnapshotId::next(now, None, HELLO).unwrap();
        assert_eq!(id.to_string(), "20261123T185337.123456Z-2cf24dba5fb0a30e");
        assert!(id.digest_matches(HELLO));
        assert!(!id.digest_matches(&sha256_hex(b"other")));
    }

    #[test]
    fn next_id_is_strictly_greater_when_the_clock_stalls_or_steps_back() {
        let now = datetime!(2026-11-23 18:53:37.123456 UTC);
        let first = SnapshotId::next(now, None, HELLO).unwrap();
        let same_instant = SnapshotId::next(now, Some(&first), HELLO).unwrap();
        let earlier =
            SnapshotId::next(now - Duration::hours(1), Some(&same_instant), HELLO).unwrap();
        assert!(first < same_instant && same_instant < earlier);
        assert_eq!(
            earlier.to_string(),
            "20261123T185337.123458Z-2cf24dba5fb0a30e"
        );
    }

    #[test]
    fn there_is_no_id_after_the_end_of_year_9999() {
        let last = SnapshotId::parse("99991231T235959.999999Z-0123456789abcdef").unwrap();
        let now = datetime!(2026-11-23 18:53:37 UTC);
        assert_eq!(SnapshotId::next(now, Some(&last), HELLO), None);
    }

    #[test]
    fn ids_sort_by_time_as_text_and_as_values() {
        let a = SnapshotId::parse("20261123T185337.999999Z-ffffffffffffffff").unwrap();
        let b = SnapshotId::parse("20261123T185338.000000Z-0000000000000000").unwrap();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn sha256_hex_is_the_standard_digest() {
        assert_eq!(sha256_hex(b"hello"), HELLO);
        assert_eq!(sha256_hex_of(&b"hello"[..]).unwrap(), HELLO);
        let big = vec![7u8; 200_000];
        assert_eq!(sha256_hex_of(&big[..]).unwrap(), sha256_hex(&big));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn allowed(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
    }

    /// Any moment from 1970 to 9999, to the microsecond.
    fn moment() -> impl Strategy<Value = OffsetDateTime> {
        (0i64..253_402_300_799, 0u32..1_000_000).prop_map(|(secs, micros)| {
            OffsetDateTime::from_unix_timestamp(secs).unwrap()
                + Duration::microseconds(micros.into())
        })
    }

    fn digest() -> impl Strategy<Value = String> {
        "[0-9a-f]{64}"
    }

    proptest! {
        #[test]
        fn session_parse_accepts_exactly_the_allow_list(text in "\\PC{0,140}|[A-Za-z0-9._-]{0,140}") {
            let expected = (1..=MAX_SESSION_LEN).contains(&text.len())
                && text.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && text.chars().all(allowed);
            prop_assert_eq!(SessionId::parse(&text).is_ok(), expected);
            if let Ok(session) = SessionId::parse(&text) {
                prop_assert_eq!(session.as_str(), text.as_str());
            }
        }

        #[test]
        fn ids_round_trip_and_sort_as_text_and_as_values(
            a in moment(), b in moment(), da in digest(), db in digest()
        ) {
            let (x, y) = (SnapshotId::next(a, None, &da).unwrap(), SnapshotId::next(b, None, &db).unwrap());
            prop_assert_eq!(SnapshotId::parse(&x.to_string()).unwrap(), x.clone());
            prop_assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
            if a < b && truncate_to_micros(a) < truncate_to_micros(b) {
                prop_assert!(x < y);
            }
        }

        #[test]
        fn the_hand_written_id_text_is_the_time_format(a in moment(), da in digest()) {
            let id = SnapshotId::next(a, None, &da).unwrap();
            let time = id.created_at().format(TIME_FORMAT).unwrap();
            prop_assert_eq!(id.to_string(), format!("{time}-{}", id.digest));
        }

        #[test]
        fn next_ids_strictly_increase_whatever_the_clock_does(
            start in moment(),
            steps in prop::collection::vec(-5_000_000i64..5_000_000, 1..60),
            digests in prop::collection::vec(digest(), 60),
        ) {
            let mut now = start;
            let mut previous: Option<SnapshotId> = None;
            for (step, digest) in steps.iter().zip(&digests) {
                // The clock jumps back and forth, or stands still (step 0).
                now = now.checked_add(Duration::microseconds(*step)).unwrap_or(now);
                let id = SnapshotId::next(now, previous.as_ref(), digest).unwrap();
                if let Some(previous) = &previous {
                    prop_assert!(&id > previous, "{} after {}", id, previous);
                }
                previous = Some(id);
            }
        }
    }
}
