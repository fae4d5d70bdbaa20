//! The router's access settings, parsed strictly: `AUTH_ENABLED`,
//! `CORS_ORIGINS` and `ALLOWED_ORIGINS` (docs/protocol.md, "Configuration").
//! A value that is not exactly one the contract names is a
//! [`ConfigError`]: the Worker then refuses every request and logs why,
//! rather than guessing (a misspelt `AUTH_ENABLED` must never leave a
//! deployment open). Also the CORS headers themselves, so that each answer
//! the router gives is decided here and tested on the host.

use std::fmt;

use crate::protocol::{ApiError, ErrorCode};

/// A setting that cannot be used as it is; every request is refused with
/// `500 internal` until it is fixed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub name: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error in {}: {}", self.name, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// `AUTH_ENABLED`: exactly `true` or `false`. Unset, empty, `TRUE`, `1`,
/// `yes` or anything else is a configuration error (never "off").
pub fn auth_enabled(raw: Option<&str>) -> Result<bool, ConfigError> {
    match raw {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        other => Err(ConfigError {
            name: "AUTH_ENABLED",
            message: match other {
                None => "not set; set it to \"true\" or \"false\"".to_string(),
                Some(v) => format!("must be \"true\" or \"false\", got {:?}", truncate(v)),
            },
        }),
    }
}

/// Most entries in an origin list (a longer list is a configuration error).
pub const MAX_ORIGINS: usize = 64;

/// An origin list: `*` (any origin) or up to [`MAX_ORIGINS`] origins
/// (`scheme://host[:port]`, no path), comma-separated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origins {
    Any,
    /// Lowercased, without a trailing slash.
    List(Vec<String>),
}

impl Origins {
    /// `None` when the variable is unset or blank (the feature is off).
    pub fn parse(name: &'static str, raw: Option<&str>) -> Result<Option<Origins>, ConfigError> {
        let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
            return Ok(None);
        };
        if raw == "*" {
            return Ok(Some(Origins::Any));
        }
        let err = |message: String| ConfigError { name, message };
        let mut list = Vec::new();
        for entry in raw.split(',').map(str::trim) {
            if entry == "*" {
                return Err(err("`*` must stand alone".to_string()));
            }
            let origin = normalize(entry).ok_or_else(|| {
                err(format!(
                    "{:?} is not an origin (scheme://host[:port])",
                    truncate(entry)
                ))
            })?;
            if !list.contains(&origin) {
                list.push(origin);
            }
        }
        if list.len() > MAX_ORIGINS {
            return Err(err(format!("more than {MAX_ORIGINS} origins")));
        }
        Ok(Some(Origins::List(list)))
    }

    /// Whether a request's `Origin` header value is on the list.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Origins::Any => true,
            Origins::List(list) => {
                let origin = origin.to_ascii_lowercase();
                list.contains(&origin)
            }
        }
    }
}

/// `scheme://host[:port]`, lowercased, or `None`. A trailing `/` is
/// accepted and dropped (a common way to write an origin); a path, query,
/// user info or empty host is not.
fn normalize(entry: &str) -> Option<String> {
    let entry = entry.strip_suffix('/').unwrap_or(entry);
    let (scheme, rest) = entry.split_once("://")?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    // `[v6]` or `[v6]:port`, else `host` or `host:port`.
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (inner, after) = v6.split_once(']')?;
            let ok = !inner.is_empty()
                && inner
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            if !ok {
                return None;
            }
            let host = &rest[..inner.len() + 2];
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':')?)),
            }
        }
        None => match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    (scheme_ok && host_ok && port_ok).then(|| entry.to_ascii_lowercase())
}

fn truncate(v: &str) -> String {
    v.chars().take(80).collect()
}

/// Response headers that expose what a browser needs beyond the
/// CORS-safelisted ones.
pub const EXPOSE_HEADERS: &str = "Retry-After, Allow";
/// How long a browser may cache a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE_S: u32 = 600;

/// The CORS headers of an answer to a request from `origin` (its `Origin`
/// header): none unless `CORS_ORIGINS` is set and allows it. Errors carry
/// them too, so a browser caller can read the error.
pub fn cors_headers(policy: Option<&Origins>, origin: Option<&str>) -> Vec<(&'static str, String)> {
    let (Some(policy), Some(origin)) = (policy, origin) else {
        return Vec::new();
    };
    if !policy.allows(origin) {
        return Vec::new();
    }
    let mut h = vec![("access-control-expose-headers", EXPOSE_HEADERS.to_string())];
    match policy {
        Origins::Any => h.push(("access-control-allow-origin", "*".to_string())),
        Origins::List(_) => {
            h.push(("access-control-allow-origin", origin.to_string()));
            h.push(("vary", "Origin".to_string()));
        }
    }
    h
}

/// The answer to `OPTIONS` on a known path (status 204): `Allow` always,
/// and the preflight headers when `origin` is allowed. A preflight from an
/// origin that is not allowed gets no CORS headers, so the browser stops
/// there; the request itself never reaches a handler.
pub fn preflight_headers(
    policy: Option<&Origins>,
    origin: Option<&str>,
    allow: &[&str],
    api_key_header: &str,
) -> Vec<(&'static str, String)> {
    let mut h = vec![("allow", allow.join(", "))];
    let cors = cors_headers(policy, origin);
    if !cors.is_empty() {
        h.extend(cors);
        h.push(("access-control-allow-methods", allow.join(", ")));
        h.push((
            "access-control-allow-headers",
            format!("Authorization, Content-Type, {api_key_header}"),
        ));
        h.push(("access-control-max-age", PREFLIGHT_MAX_AGE_S.to_string()));
    }
    h
}

/// A WebSocket upgrade's `Origin` against `ALLOWED_ORIGINS`: when the list is
/// set, a request that carries an `Origin` not on it is refused with 403
/// before any socket exists. A request without `Origin` (not from a browser:
/// servers, apps, the Node client) is not refused for that; such a caller
/// could send any `Origin` it liked, so the check protects browser users
/// from other sites' pages, and credentials still decide the rest.
pub fn websocket_origin(policy: Option<&Origins>, origin: Option<&str>) -> Result<(), ApiError> {
    match (policy, origin) {
        (Some(policy), Some(origin)) if !policy.allows(origin) => Err(ApiError {
            code: ErrorCode::Forbidden,
            message: format!(
                "origin {:?} may not subscribe here (ALLOWED_ORIGINS)",
                truncate(origin)
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
