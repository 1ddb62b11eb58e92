//! The checks every request under `{base}/` passes before it reaches a route, outermost first:
//! 1. the client address's rate limit (429);
//! 2. switched off (`SNAPKEEP_ENABLED=false`, 503);
//! 3. credentials (401 / 403): the operator token, or a session token for this session;
//! 4. the session's rate limit (429): charged only now, so that nobody without a token can
//!    use up a session's requests;
//! 5. read-only mode (503 for writes and deletes).
//!
//! Health, readiness and `GET {base}` (status) pass none of them: a client must be able to learn
//! whether backups are on before it has a token.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;

use super::{ApiError, AppState};
use crate::auth::{Denied, Keys};
use crate::config::RateLimit;
use crate::store::name::SessionId;

/// The peer address of a connection, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The two token buckets a request draws from.
#[derive(Debug)]
pub struct Limiters {
    by_client: DefaultKeyedRateLimiter<IpAddr>,
    by_session: DefaultKeyedRateLimiter<SessionId>,
}

impl Limiters {
    pub fn new(rate: RateLimit) -> Self {
        let quota = Quota::per_second(rate.per_second).allow_burst(rate.burst);
        Self {
            by_client: RateLimiter::keyed(quota),
            by_session: RateLimiter::keyed(quota),
        }
    }

    /// Forgets buckets that are full again, so memory follows recent clients only.
    pub fn forget_idle(&self) {
        self.by_client.retain_recent();
        self.by_session.retain_recent();
    }

    /// Takes a token from the client address's bucket, or says how many seconds until there
    /// is one.
    fn take_client(&self, client: IpAddr) -> Result<(), u64> {
        self.by_client.check_key(&client).map_err(seconds_to_wait)
    }

    /// The same for the session's bucket. Charged only once the request has shown it may use
    /// the session, so that nobody without a token can drain a session's bucket, and the
    /// keys are valid session ids only (at most 128 characters).
    fn take_session(&self, session: &SessionId) -> Result<(), u64> {
        self.by_session.check_key(session).map_err(seconds_to_wait)
    }
}

fn seconds_to_wait(not_until: governor::NotUntil<<DefaultClock as Clock>::Instant>) -> u64 {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The guard itself: one middleware, so the order of the checks is written down in one place.
pub async fn check(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let base = app.config.base_path.as_str();
    let Some(rest) = request
        .uri()
        .path()
        .strip_prefix(base)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Ok(next.run(request).await);
    };
    // Only requests to the API: health checks come from next to the server, not through the
    // proxy.
    note_missing_forwarding(&request, &app.config.access.trusted_proxies);
    let first = rest.split('/').next().filter(|s| !s.is_empty());
    // A session id never starts with `_`: such names are the operator's routes (`_sessions`),
    // which no session token opens. The page (`_ui`), the client module (`_snapkeep.js`) and
    // the mirror (`_snapkeep-mirror.js`) are public like `/`, `/snapkeep.js` and
    // `/snapkeep-mirror.js`, for apps whose proxy forwards only `{base}`: they hold no data, and
    // the page asks for the token itself.
    let session = first.filter(|name| !name.starts_with('_'));
    let public = matches!(
        rest,
        "_ui" | "_snapkeep.js" | "_snapkeep-mirror.js" | "openapi.json"
    );
    let too_many = |seconds| ApiError::TooManyRequests {
        retry_after: seconds,
    };
    if let Some(limiters) = &app.limiters {
        let client = client_addr(&request, &app.config.access.trusted_proxies);
        limiters.take_client(client).map_err(too_many)?;
    }
    // The public files hold no data: an app that imports the client from `{base}` keeps
    // loading when backups are switched off (the client then reports 503 on its saves).
    if !app.config.enabled && !public {
        return Err(ApiError::Disabled);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match Keys::new(&app.config.access).check(bearer(request.headers()), session, now) {
        Ok(()) => {}
        Err(_) if public => {}
        Err(Denied::Unauthenticated) => return Err(ApiError::Unauthorized),
        Err(Denied::OtherSession) => return Err(ApiError::Forbidden),
    }
    if let (Some(limiters), Some(Ok(session))) = (&app.limiters, session.map(SessionId::parse)) {
        limiters.take_session(&session).map_err(too_many)?;
    }
    let writes = matches!(
        *request.method(),
        Method::POST | Method::PATCH | Method::DELETE | Method::PUT
    );
    if app.config.access.read_only && writes {
        return Err(ApiError::ReadOnly);
    }
    Ok(next.run(request).await)
}

/// The token of an `Authorization: Bearer <token>` header.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the nearest
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
fn client_addr(request: &Request, trusted: &[IpNet]) -> IpAddr {
    let peer = match request.extensions().get::<PeerAddr>() {
        Some(PeerAddr(addr)) => addr.ip(),
        None => IpAddr::from([0, 0, 0, 0]),
    };
    forwarded_client(peer, request.headers(), trusted)
}

/// Says, once per process, that a trusted proxy sends no `X-Forwarded-For`: every client
/// behind it would count as the proxy for the rate limit (a whole site throttled as one).
fn note_missing_forwarding(request: &Request, trusted: &[IpNet]) {
    if trusted.is_empty() || request.headers().contains_key("x-forwarded-for") {
        return;
    }
    let Some(PeerAddr(peer)) = request.extensions().get::<PeerAddr>() else {
        return;
    };
    let peer = peer.ip();
    if trusted.iter().any(|net| net.contains(&peer))
        && !FORWARDING_MISSING_TOLD.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            %peer,
            "a request from a trusted proxy (SNAPKEEP_TRUSTED_PROXIES) carries no X-Forwarded-For: \
             every client behind it counts as the proxy for the rate limit; make the proxy send \
             it (nginx: proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;)"
        );
    }
}

/// The warning above is said once per process.
static FORWARDING_MISSING_TOLD: AtomicBool = AtomicBool::new(false);

fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str().unwrap_or(""))
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // Walk from the nearest hop outwards while the hops are trusted proxies: the first one
    // that is not is the client. An entry that is not an address ends the walk (whatever is
    // further out could be made up), and the last trusted hop counts as the client.
    let mut client = peer;
    for hop in hops.iter().rev() {
        if !is_trusted(&client) {
            break;
        }
        match parse_hop(hop) {
            Some(ip) => client = ip,
            None => break,
        }
    }
    client
}

/// An `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5555`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

/// A shareable set of limiters, or none when rate limiting is off.
pub fn limiters(rate: Option<RateLimit>) -> Option<Arc<Limiters>> {
    rate.map(|rate| Arc::new(Limiters::new(rate)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let spoofed = headers(&["6.6.6.6"]);
        assert_eq!(
            forwarded_client(ip("203.0.113.9"), &spoofed, &trusted),
            ip("203.0.113.9")
        );
        let via_proxy = headers(&["6.6.6.6, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &via_proxy, &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &headers(&[]), &trusted),
            ip("127.0.0.1")
        );
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &headers(&["10.9.9.9"]), &trusted),
            ip("10.9.9.9")
        );
        // Entries that are no address stop the walk: the spoofed ones beyond them do not count.
        let odd = headers(&["6.6.6.6, garbage, 10.1.1.1"]);
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &odd, &trusted),
            ip("10.1.1.1")
        );
        let with_ports = headers(&["6.6.6.6, 203.0.113.6:5555"]);
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &with_ports, &trusted),
            ip("203.0.113.6")
        );
        let bracketed = headers(&["6.6.6.6, [2001:db8::1]"]);
        assert_eq!(
            forwarded_client(ip("127.0.0.1"), &bracketed, &trusted),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn bearer_tokens_are_read_from_authorization() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn each_bucket_runs_out_on_its_own() {
        let rate = RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        };
        let limiters = Limiters::new(rate);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert_eq!(limiters.take_client(a), Ok(()));
        assert_eq!(limiters.take_client(a), Ok(()));
        assert!(
            limiters.take_client(a).unwrap_err() >= 1,
            "client a is out of tokens"
        );
        assert_eq!(limiters.take_client(b), Ok(()));
        let s = SessionId::parse("s").unwrap();
        assert_eq!(limiters.take_session(&s), Ok(()));
        assert_eq!(limiters.take_session(&s), Ok(()));
        assert!(
            limiters.take_session(&s).is_err(),
            "session s is out of tokens"
        );
    }
}
