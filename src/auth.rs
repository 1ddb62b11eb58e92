//! Who may do what: the operator token, and per-session tokens that an app's own backend mints
//! without asking snapkeep. Pure logic: time comes in as a parameter, and there is no HTTP here.
//!
//! A session token is `<session>:<expires>:<signature>`, where `expires` is a Unix time in
//! seconds and `signature` is the lowercase hex HMAC-SHA256, keyed with `SNAPKEEP_SIGNING_KEY`,
//! of `<session>:<expires>`. `:` cannot occur in a session id, so the token splits unambiguously,
//! and any standard library can mint one (docs/security.md shows Node and Python).

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Access;
use crate::store::name::{SessionId, hex};

/// Why a request may not go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No usable credentials: missing, unknown, tampered, signed with another key, or expired
    /// (401).
    Unauthenticated,
    /// A valid session token, for another session than the one asked for (403).
    OtherSession,
}

/// The credentials a server accepts.
#[derive(Debug, Clone)]
pub struct Keys<'a> {
    access: &'a Access,
}

impl<'a> Keys<'a> {
    pub fn new(access: &'a Access) -> Self {
        Self { access }
    }

    /// Whether any credentials are needed at all.
    pub fn required(&self) -> bool {
        self.access.operator_token.is_some() || self.access.signing_key.is_some()
    }

    /// Checks the bearer token of a request for `session` (`None`: a route that belongs to no
    /// one session, which only the operator may use) at Unix time `now`.
    pub fn check(
        &self,
        bearer: Option<&str>,
        session: Option<&str>,
        now: i64,
    ) -> Result<(), Denied> {
        if !self.required() {
            return Ok(());
        }
        let token = bearer.ok_or(Denied::Unauthenticated)?;
        // Digests have one length, so the comparison tells nothing about the token's.
        if let Some(operator) = &self.access.operator_token
            && bool::from(Sha256::digest(token).ct_eq(&Sha256::digest(operator.expose())))
        {
            return Ok(());
        }
        let key = self
            .access
            .signing_key
            .as_ref()
            .ok_or(Denied::Unauthenticated)?;
        let minted_for = verify(key.expose().as_bytes(), token, now)?;
        match session == Some(minted_for) {
            true => Ok(()),
            false => Err(Denied::OtherSession),
        }
    }
}

/// Mints a token for `session` valid until Unix time `expires`.
pub fn mint(key: &[u8], session: &SessionId, expires: i64) -> String {
    let payload = format!("{session}:{expires}");
    format!("{payload}:{}", hex(&sign(key, &payload)))
}

/// The session a token was minted for, if its signature is right and it has not expired.
fn verify<'t>(key: &[u8], token: &'t str, now: i64) -> Result<&'t str, Denied> {
    let (payload, signature) = token.rsplit_once(':').ok_or(Denied::Unauthenticated)?;
    let (session, expires) = payload.split_once(':').ok_or(Denied::Unauthenticated)?;
    let signature = unhex(signature).ok_or(Denied::Unauthenticated)?;
    let mut mac = mac(key);
    mac.update(payload.as_bytes());
    // Constant-time comparison, so the signature cannot be guessed byte by byte.
    mac.verify_slice(&signature)
        .map_err(|_| Denied::Unauthenticated)?;
    let expires: i64 = expires.parse().map_err(|_| Denied::Unauthenticated)?;
    match now < expires {
        true => Ok(session),
        false => Err(Denied::Unauthenticated),
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length")
}

fn sign(key: &[u8], payload: &str) -> Vec<u8> {
    let mut mac = mac(key);
    mac.update(payload.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2)
        || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Access, CorsOrigins, Secret};

    const NOW: i64 = 1_800_000_000;
    const OPERATOR: &str = "operator-token-0123456789";
    const KEY: &str = "signing-key-0123456789abcdef";

    fn access(operator: Option<&str>, key: Option<&str>) -> Access {
        let secret = |s: &str| Secret::new(s);
        Access {
            operator_token: operator.map(secret),
            signing_key: key.map(secret),
            read_only: false,
            cors_origins: CorsOrigins::None,
            trusted_proxies: Vec::new(),
        }
    }

    fn token(session: &str, expires: i64) -> String {
        mint(KEY.as_bytes(), &SessionId::parse(session).unwrap(), expires)
    }

    #[test]
    fn an_open_server_needs_nothing() {
        let open = access(None, None);
        assert_eq!(Keys::new(&open).check(None, Some("s"), NOW), Ok(()));
        assert!(!Keys::new(&open).required());
    }

    #[test]
    fn the_operator_token_reaches_everything_and_nothing_else_does() {
        let a = access(Some(OPERATOR), None);
        let keys = Keys::new(&a);
        assert_eq!(keys.check(Some(OPERATOR), Some("s"), NOW), Ok(()));
        assert_eq!(keys.check(Some(OPERATOR), None, NOW), Ok(()));
        for wrong in [None, Some(""), Some("operator-token-012345678"), Some("x")] {
            assert_eq!(
                keys.check(wrong, Some("s"), NOW),
                Err(Denied::Unauthenticated)
            );
        }
        // Without a signing key, a session token is just a wrong token.
        let session_token = token("s", NOW + 60);
        assert_eq!(
            keys.check(Some(&session_token), Some("s"), NOW),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn a_session_token_reaches_its_own_session_until_it_expires() {
        let a = access(Some(OPERATOR), Some(KEY));
        let keys = Keys::new(&a);
        let t = token("user-42", NOW + 60);
        assert_eq!(keys.check(Some(&t), Some("user-42"), NOW), Ok(()));
        assert_eq!(
            keys.check(Some(&t), Some("user-43"), NOW),
            Err(Denied::OtherSession)
        );
        assert_eq!(keys.check(Some(&t), None, NOW), Err(Denied::OtherSession));
        assert_eq!(
            keys.check(Some(&t), Some("user-42"), NOW + 60),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(keys.check(Some(OPERATOR), Some("user-42"), NOW), Ok(()));
    }

    #[test]
    fn any_changed_character_or_another_key_is_refused() {
        let a = access(None, Some(KEY));
        let keys = Keys::new(&a);
        let t = token("s1", NOW + 3600);
        for i in 0..t.len() {
            let mut tampered = t.clone().into_bytes();
            tampered[i] = if tampered[i] == b'0' { b'1' } else { b'0' };
            let tampered = String::from_utf8(tampered).unwrap();
            let result = keys.check(Some(&tampered), Some("s1"), NOW);
            assert!(
                result.is_err(),
                "changing byte {i} was accepted: {tampered}"
            );
        }
        let s1 = SessionId::parse("s1").unwrap();
        let other_key = mint(b"another-key-0123456789abcdef", &s1, NOW + 60);
        assert_eq!(
            keys.check(Some(&other_key), Some("s1"), NOW),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn a_token_is_the_payload_and_the_standard_hmac_in_hex() {
        // Known answer, from openssl and from Python's hmac module:
        // printf 's:1800000060' | openssl dgst -sha256 -hmac 'signing-key-0123456789abcdef'
        let expected =
            "s:1800000060:9e8ff8567cb4ce5df923ff994fa6ad00d31a390e87c95a35de5eca69beb18105";
        assert_eq!(token("s", NOW + 60), expected);
    }
}
