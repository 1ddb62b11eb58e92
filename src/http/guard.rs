//! The checks every request under `{base}/` passes before it reaches a route, outermost first:
//! 1. rate limits (429): a token from the client address's bucket and from the session's;
//! 2. switched off (`SNAPKEEP_ENABLED=false`, 503);
//! 3. credentials (401 / 403): the operator token, or a session token for this session;
//! 4. read-only mode (503 for writes and deletes).
//!
//! Health, readiness and `GET {base}` (status) pass none of them: a client must be able to learn
//! whether backups are on before it has a token.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

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

/// The peer address of a connection, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The two token buckets a request draws from.
#[derive(Debug)]
pub struct Limiters {
    by_client: DefaultKeyedRateLimiter<IpAddr>,
    by_session: DefaultKeyedRateLimiter<String>,
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

    /// Takes a token from both buckets, or says how many seconds until there is one.
    fn take(&self, client: IpAddr, session: Option<&str>) -> Result<(), u64> {
        let clock = DefaultClock::default();
        let wait = |not_until: governor::NotUntil<_>| {
            not_until
                .wait_time_from(clock.now())
                .as_secs_f64()
                .ceil()
                .max(1.0) as u64
        };
        self.by_client.check_key(&client).map_err(wait)?;
        if let Some(session) = session {
            self.by_session
                .check_key(&session.to_owned())
                .map_err(wait)?;
        }
        Ok(())
    }
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
    let session = rest.split('/').next().filter(|s| !s.is_empty());
    if let Some(limiters) = &app.limiters {
        let client = client_addr(&request, &app.config.access.trusted_proxies);
        limiters
            .take(client, session)
            .map_err(|seconds| ApiError::TooManyRequests {
                retry_after: seconds,
            })?;
    }
    if !app.config.enabled {
        return Err(ApiError::Disabled);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match Keys::new(&app.config.access).check(bearer(request.headers()), session, now) {
        Ok(()) => {}
        Err(Denied::Unauthenticated) => return Err(ApiError::Unauthorized),
        Err(Denied::OtherSession) => return Err(ApiError::Forbidden),
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
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

fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    // Walk from the nearest hop outwards: the first untrusted one is the client.
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
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
    fn both_buckets_must_have_a_token() {
        let rate = RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        };
        let limiters = Limiters::new(rate);
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        assert_eq!(limiters.take(a, Some("s")), Ok(()));
        assert_eq!(limiters.take(a, Some("s")), Ok(()));
        assert!(
            limiters.take(a, Some("t")).unwrap_err() >= 1,
            "client a is out of tokens"
        );
        assert_eq!(limiters.take(b, Some("t")), Ok(()));
        assert!(
            limiters.take(b, Some("s")).is_err(),
            "session s is out of tokens"
        );
    }
}
