//! Guards against abuse at the router. Failed authentication is tallied
//! (`routing::tally`: at most one event-log write per minute per isolate,
//! however many requests fail) and limited per client address; publishes are
//! limited per credential. Both limits are Cloudflare's Rate Limiting
//! binding (`[[ratelimits]]` in the wrangler configs, simulated by `wrangler
//! dev`); over a limit the answer is 429 `rate_limited` with `Retry-After`. A
//! deployment without a binding runs without that limit (said once in the
//! log).

use std::cell::{Cell, RefCell};

use routing::auth::Principal;
use routing::events::LogEvent;
use routing::tally::{Failure, FailureTally};
use worker::{console_warn, Env, Headers, RateLimiter};

use crate::error::AppError;

/// Requests that fail auth, per client address (binding name).
pub const AUTH_FAILURE_LIMIT: &str = "AUTH_FAILURE_LIMIT";
/// Publishes (commands, say, broadcast), per credential (binding name).
pub const PUBLISH_LIMIT: &str = "PUBLISH_LIMIT";
/// Both limits count over 60 s windows.
const RETRY_AFTER_SECS: u64 = 60;

thread_local! {
    static TALLY: RefCell<FailureTally> = RefCell::new(FailureTally::default());
    static WARNED: Cell<bool> = const { Cell::new(false) };
}

/// The client's address as Cloudflare reports it (Cloudflare sets it on
/// every request; a client cannot). The local runtime reports loopback for
/// every local client, which would then share one budget: such requests are
/// counted but not limited. Cloudflare never reports a loopback address.
pub fn client_address(headers: &Headers) -> Option<String> {
    headers
        .get("cf-connecting-ip")
        .ok()
        .flatten()
        .filter(|a| !is_loopback(a))
}

fn is_loopback(address: &str) -> bool {
    address
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback() || ip.to_canonical().is_loopback())
}

fn limiter(env: &Env, name: &str) -> Option<RateLimiter> {
    match env.rate_limiter(name) {
        Ok(l) => Some(l),
        Err(e) => {
            if !WARNED.with(|w| w.replace(true)) {
                console_warn!("rate limiting off: no binding {name} ({e})");
            }
            None
        }
    }
}

/// Whether `key` is still within the limit of `binding` (true when the
/// binding is missing or cannot answer: a limiter fault never refuses).
async fn within(env: &Env, binding: &str, key: String) -> bool {
    let Some(l) = limiter(env, binding) else {
        return true;
    };
    match l.limit(key).await {
        Ok(outcome) => outcome.success,
        Err(e) => {
            console_warn!("rate limiter {binding}: {e}");
            true
        }
    }
}

/// A request that failed auth: tallied for the event log (the events to
/// write now are returned), and answered 429 instead once its address is
/// over the limit.
pub async fn failed_auth(
    env: &Env,
    address: Option<&str>,
    now: u64,
    failure: Failure,
    sample: LogEvent,
    err: AppError,
) -> (AppError, Vec<LogEvent>) {
    let events = TALLY.with(|t| t.borrow_mut().record(now, failure, sample));
    let Some(address) = address else {
        return (err, events);
    };
    if within(env, AUTH_FAILURE_LIMIT, format!("auth:{address}")).await {
        (err, events)
    } else {
        let msg = "too many failed authentications from this address";
        (AppError::rate_limited(msg, RETRY_AFTER_SECS), events)
    }
}

/// A publish by `principal`: refused with 429 over its credential's limit.
/// With auth off there is no credential, and no limit.
pub async fn publish_allowed(env: &Env, principal: &Principal) -> Result<(), AppError> {
    let key = match principal {
        Principal::Anonymous => return Ok(()),
        Principal::ApiKey => "pub:api-key".to_string(),
        Principal::Token(claims) => format!("pub:sub:{}", claims.sub),
    };
    if within(env, PUBLISH_LIMIT, key).await {
        Ok(())
    } else {
        let msg = "too many publishes with this credential";
        Err(AppError::rate_limited(msg, RETRY_AFTER_SECS))
    }
}
