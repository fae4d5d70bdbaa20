//! Withdrawing a user's rights while they are connected (close code 4003):
//! the admin request's body, and the router's view of who is revoked. The
//! list lives in the registry object; each isolate keeps a copy for at most
//! [`REVOCATION_CACHE_MS`], so a revoked token is refused everywhere within
//! that time (at once by the isolate that took the revocation), and every
//! socket of the user that is open when the revocation is made is closed.

use std::collections::HashMap;

use serde_json::Value;

use crate::attachment::MAX_USER_BYTES;
use crate::protocol::ApiError;
use crate::wire::Revocation;

/// How long a revocation lasts when the request names no `until`: 1 hour.
pub const DEFAULT_REVOCATION_MS: u64 = 60 * 60 * 1000;
/// The longest revocation: 30 days (a user gone for longer should lose its
/// credentials at the issuer instead).
pub const MAX_REVOCATION_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// How stale an isolate's copy of the list may be.
pub const REVOCATION_CACHE_MS: u64 = 10_000;

/// The shortest revocation: 1 s.
pub const MIN_REVOCATION_MS: u64 = 1_000;

/// `{"user": "<sub>", "for_ms": <ms>}` (`for_ms` optional: an hour; 1 s to
/// 30 days): the user is revoked from `now` until `now + for_ms`. A
/// duration rather than a time, so no clock skew between the admin and the
/// gateway can make a revocation end before it starts.
pub fn parse_revocation_body(body: &[u8], now: u64) -> Result<Revocation, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let user = match obj.get("user") {
        Some(Value::String(u)) if !u.is_empty() && u.len() <= MAX_USER_BYTES => u.clone(),
        Some(Value::String(_)) => {
            return Err(ApiError::bad_request(format!(
                "field `user` must be 1 to {MAX_USER_BYTES} bytes"
            )))
        }
        _ => return Err(ApiError::bad_request("field `user` (a string) is required")),
    };
    let for_ms = match obj.get("for_ms") {
        None | Some(Value::Null) => DEFAULT_REVOCATION_MS,
        Some(v) => v
            .as_u64()
            .filter(|d| (MIN_REVOCATION_MS..=MAX_REVOCATION_MS).contains(d))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "field `for_ms` must be an integer from {MIN_REVOCATION_MS} to {MAX_REVOCATION_MS} (30 days)"
                ))
            })?,
    };
    Ok(Revocation {
        user,
        until: now.saturating_add(for_ms),
    })
}

/// An isolate's copy of the active revocations.
#[derive(Debug, Default)]
pub struct RevocationCache {
    fetched_at: Option<u64>,
    until: HashMap<String, u64>,
}

impl RevocationCache {
    /// Whether the copy must be fetched again before it is asked.
    pub fn stale(&self, now: u64) -> bool {
        self.fetched_at
            .is_none_or(|at| now.saturating_sub(at) >= REVOCATION_CACHE_MS)
    }

    /// The list as the registry has it now.
    pub fn replace(&mut self, list: Vec<Revocation>, now: u64) {
        self.until = list.into_iter().map(|r| (r.user, r.until)).collect();
        self.fetched_at = Some(now);
    }

    /// The registry could not be asked: keep the copy as it is for another
    /// interval rather than refuse every token (or ask on every request).
    pub fn touch(&mut self, now: u64) {
        self.fetched_at = Some(now);
    }

    /// A revocation this isolate made itself counts at once.
    pub fn insert(&mut self, r: Revocation) {
        let until = self.until.entry(r.user).or_default();
        *until = (*until).max(r.until);
    }

    /// Until when `user` is refused, if it is now.
    pub fn revoked_until(&self, user: &str, now: u64) -> Option<u64> {
        self.until.get(user).copied().filter(|u| *u > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_bounded() {
        let now = 1_000;
        let r = parse_revocation_body(br#"{"user":"u1","for_ms":5000}"#, now).unwrap();
        assert_eq!(
            r,
            Revocation {
                user: "u1".into(),
                until: 6_000
            }
        );
        let r = parse_revocation_body(br#"{"user":"u1","for_ms":null}"#, now).unwrap();
        assert_eq!(r.until, now + DEFAULT_REVOCATION_MS);
        for bad in [
            &br#"{"for_ms":5000}"#[..],
            br#"{"user":""}"#,
            br#"{"user":5}"#,
            br#"{"user":"u","for_ms":999}"#,
            br#"{"user":"u","for_ms":-1}"#,
            br#"{"user":"u","for_ms":1.5}"#,
            br#"{"user":"u","for_ms":"soon"}"#,
            br#"[]"#,
            b"nope",
        ] {
            assert!(
                parse_revocation_body(bad, now).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let too_long = format!(r#"{{"user":"u","for_ms":{}}}"#, MAX_REVOCATION_MS + 1);
        assert!(parse_revocation_body(too_long.as_bytes(), now).is_err());
        let long = format!(r#"{{"user":"{}"}}"#, "x".repeat(MAX_USER_BYTES + 1));
        assert!(parse_revocation_body(long.as_bytes(), now).is_err());
    }

    #[test]
    fn the_cache_expires_and_counts_its_own_revocations_at_once() {
        let mut c = RevocationCache::default();
        assert!(c.stale(0));
        c.replace(
            vec![Revocation {
                user: "a".into(),
                until: 100,
            }],
            0,
        );
        assert!(!c.stale(REVOCATION_CACHE_MS - 1));
        assert!(c.stale(REVOCATION_CACHE_MS));
        assert_eq!(c.revoked_until("a", 50), Some(100));
        assert_eq!(c.revoked_until("a", 100), None, "lifted at `until`");
        c.insert(Revocation {
            user: "b".into(),
            until: 70,
        });
        assert_eq!(c.revoked_until("b", 60), Some(70));
        assert_eq!(c.revoked_until("c", 60), None);
    }
}
