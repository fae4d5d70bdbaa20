//! Authentication and authorization (contract §4): HS256 JWTs, API keys and
//! the role/character rules. Sans-IO like the rest of the crate: the caller
//! passes the current time (`now_s`, seconds since the Unix epoch) and the
//! secrets; nothing here reads a clock.
//!
//! Failures use the contract's codes (§5): missing or bad credentials are
//! `unauthorized` (401), valid credentials without the right are `forbidden`
//! (403). Messages say what was wrong but never echo a secret or a token.

use crate::protocol::ApiError;
use crate::topic::CharacterId;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Longest token accepted, in bytes; longer input is refused as malformed
/// before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew tolerated on `exp` and `nbf`, in seconds. Zero: a token is
/// expired when `now_s >= exp` and not yet valid when `now_s < nbf`.
pub const LEEWAY_S: u64 = 0;

/// The only algorithm accepted, as spelled in the JWT header.
const ALLOWED_ALG: &str = "HS256";

/// A token's role (claim `role`, default `subscriber`). Ordered by rank:
/// `Subscriber < Publisher < Admin`; a higher role may do everything a lower
/// one may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Subscriber,
    Publisher,
    Admin,
}

impl Role {
    /// Parses the exact lowercase wire spelling.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "subscriber" => Some(Role::Subscriber),
            "publisher" => Some(Role::Publisher),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Subscriber => "subscriber",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
        }
    }
}

/// One entry of the `chars` claim: an exact character, or a prefix written
/// with a final `*` (`npc-*`; `*` alone allows every character).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CharPattern {
    Exact(String),
    Prefix(String),
}

impl CharPattern {
    /// Parses one pattern. `None` when a `*` appears anywhere but at the
    /// end, or when the rest is not a valid character name (an exact name
    /// must be a valid character; a prefix may be empty). Such a pattern
    /// could never match, so it marks a broken token.
    pub fn parse(s: &str) -> Option<CharPattern> {
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.contains('*') {
            return None;
        }
        if prefix && body.is_empty() {
            return Some(CharPattern::Prefix(String::new()));
        }
        CharacterId::parse(body).ok()?;
        Some(if prefix {
            CharPattern::Prefix(body.to_owned())
        } else {
            CharPattern::Exact(body.to_owned())
        })
    }

    /// True if this pattern allows `c` (case-sensitive).
    pub fn matches(&self, c: &CharacterId) -> bool {
        match self {
            CharPattern::Exact(e) => c.as_str() == e,
            CharPattern::Prefix(p) => c.as_str().starts_with(p.as_str()),
        }
    }

    /// True for `*`, the pattern that allows every character.
    pub fn is_wildcard(&self) -> bool {
        matches!(self, CharPattern::Prefix(p) if p.is_empty())
    }
}

/// The verified claims of a token.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    /// The subject; a non-empty string.
    pub sub: String,
    pub role: Role,
    /// Allowed characters; `None` (claim absent or `null`) allows all,
    /// `Some(vec![])` allows none.
    pub chars: Option<Vec<CharPattern>>,
    /// Expiry, seconds since the epoch; the token is expired when
    /// `now_s >= exp`.
    pub exp: u64,
    /// Not-before, seconds since the epoch; the token is valid from `nbf` on.
    pub nbf: Option<u64>,
}

impl Claims {
    /// True if the `chars` claim allows `c`.
    pub fn allows_character(&self, c: &CharacterId) -> bool {
        match &self.chars {
            None => true,
            Some(pats) => pats.iter().any(|p| p.matches(c)),
        }
    }

    /// True if the `chars` claim allows every character: absent, or
    /// containing `*`.
    pub fn allows_all_characters(&self) -> bool {
        match &self.chars {
            None => true,
            Some(pats) => pats.iter().any(CharPattern::is_wildcard),
        }
    }
}

/// Who is making a request.
#[derive(Clone, Debug, PartialEq)]
pub enum Principal {
    /// Auth is disabled (`AUTH_ENABLED` is not `"true"`): everything is allowed.
    Anonymous,
    /// A matching API key: grants admin over every character.
    ApiKey,
    /// A verified JWT.
    Token(Claims),
}

/// What a request wants to do. `say` and `broadcast` are `Publish`
/// (broadcast is authorized once per target character).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Publish,
    History,
    Admin,
}

impl Action {
    /// The lowest role that may perform the action.
    pub fn min_role(self) -> Role {
        match self {
            Action::Subscribe | Action::History => Role::Subscriber,
            Action::Publish => Role::Publisher,
            Action::Admin => Role::Admin,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
            Action::History => "read history",
            Action::Admin => "use admin endpoints",
        }
    }
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::unauthorized(msg)
}

fn malformed() -> ApiError {
    unauthorized("malformed token")
}

/// Verifies an HS256 JWT against `secret` at time `now_s`.
///
/// Checks, in order: the secret is configured (non-empty), the token has
/// three segments and at most [`MAX_TOKEN_BYTES`], its header's `alg` is
/// exactly `HS256` (`none` and every other algorithm are refused before
/// any verification), the signature, then the claims: `sub` a non-empty
/// string, `exp` a NumericDate, `nbf` (optional) a NumericDate, `role`
/// (optional, default `subscriber`) a known role, `chars` (optional) a list
/// of valid patterns; finally `now_s >= exp` is expired and `now_s < nbf` is
/// not yet valid (leeway [`LEEWAY_S`]). `null` counts as absent. Other claims
/// (`iat`, `iss`, `aud`, `jti`, ...) are ignored.
///
/// jsonwebtoken checks only the algorithm and the signature here: its own
/// time checks are off, since `SystemTime::now()` panics on
/// `wasm32-unknown-unknown`.
///
/// Every failure is `unauthorized`.
pub fn verify_jwt(token: &str, secret: &[u8], now_s: u64) -> Result<Claims, ApiError> {
    if secret.is_empty() {
        return Err(unauthorized("token verification is not configured"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(unauthorized("malformed token: too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unauthorized("malformed token: expected three segments"));
    };
    check_header_alg(header_b64)?;

    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = vec![Algorithm::HS256];
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    validation.reject_tokens_expiring_in_less_than = 0;

    let key = DecodingKey::from_secret(secret);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(
        |e| match e.kind() {
            ErrorKind::InvalidSignature => unauthorized("bad signature"),
            ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::MissingAlgorithm => unauthorized("algorithm not allowed"),
            _ => malformed(),
        },
    )?;
    // Belt and braces: the verified header must say HS256 too.
    if data.header.alg != Algorithm::HS256 {
        return Err(unauthorized("algorithm not allowed"));
    }
    let claims = parse_claims(&data.claims)?;

    if now_s.saturating_sub(LEEWAY_S) >= claims.exp {
        return Err(unauthorized("token expired"));
    }
    if let Some(nbf) = claims.nbf {
        if now_s.saturating_add(LEEWAY_S) < nbf {
            return Err(unauthorized("token not yet valid"));
        }
    }
    Ok(claims)
}

/// Reads the header segment and refuses any `alg` but `HS256`.
fn check_header_alg(header_b64: &str) -> Result<(), ApiError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| unauthorized("malformed token: bad header encoding"))?;
    let header: Value =
        serde_json::from_slice(&bytes).map_err(|_| unauthorized("malformed token: bad header"))?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == ALLOWED_ALG => Ok(()),
        Some(Value::String(_)) => Err(unauthorized("algorithm not allowed")),
        _ => Err(unauthorized("malformed token: header has no alg")),
    }
}

/// A JSON NumericDate as whole seconds. Fractions round toward the safe
/// side: down for `exp`, up for `nbf` (`round_up`).
fn numeric_date(v: &Value, round_up: bool) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    if !f.is_finite() || f < 0.0 || f >= u64::MAX as f64 {
        return None;
    }
    let r = if round_up { f.ceil() } else { f.floor() };
    // In range by the check above.
    Some(r as u64)
}

fn present<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.get(k).filter(|v| !v.is_null())
}

fn parse_claims(m: &Map<String, Value>) -> Result<Claims, ApiError> {
    let sub = match present(m, "sub") {
        None => return Err(unauthorized("missing sub")),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(unauthorized("sub must be a non-empty string")),
    };
    let exp = match present(m, "exp") {
        None => return Err(unauthorized("missing exp")),
        Some(v) => numeric_date(v, false)
            .ok_or_else(|| unauthorized("exp must be a non-negative number"))?,
    };
    let nbf = match present(m, "nbf") {
        None => None,
        Some(v) => Some(
            numeric_date(v, true)
                .ok_or_else(|| unauthorized("nbf must be a non-negative number"))?,
        ),
    };
    let role = match present(m, "role") {
        None => Role::Subscriber,
        Some(Value::String(s)) => Role::parse(s)
            .ok_or_else(|| unauthorized("role must be subscriber, publisher or admin"))?,
        Some(_) => return Err(unauthorized("role must be a string")),
    };
    let chars = match present(m, "chars") {
        None => None,
        Some(Value::Array(items)) => {
            let mut pats = Vec::with_capacity(items.len());
            for item in items {
                let pat = item
                    .as_str()
                    .and_then(CharPattern::parse)
                    .ok_or_else(|| unauthorized("invalid chars pattern"))?;
                pats.push(pat);
            }
            Some(pats)
        }
        Some(_) => return Err(unauthorized("chars must be a list of strings")),
    };
    Ok(Claims {
        sub,
        role,
        chars,
        exp,
        nbf,
    })
}

/// True if `presented` equals one of the comma-separated `keys_csv` (each
/// trimmed; empty items ignored). `presented` is compared as is (not
/// trimmed); empty never matches.
///
/// Constant time with respect to the keys' contents: each side is hashed
/// with SHA-256 and every key's digest is compared with an XOR fold over all
/// 32 bytes; every key is compared, with no early exit on a match or on a
/// length difference.
pub fn api_key_matches(presented: &str, keys_csv: &str) -> bool {
    if presented.is_empty() {
        return false;
    }
    let p = Sha256::digest(presented.as_bytes());
    let mut any = 0u8;
    for key in keys_csv.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        let k = Sha256::digest(key.as_bytes());
        let diff = p
            .iter()
            .zip(k.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // 1 when equal, 0 otherwise, without branching on `diff`.
        let eq = (u16::from(diff).wrapping_sub(1) >> 8) as u8 & 1;
        any |= eq;
    }
    std::hint::black_box(any) == 1
}

/// Decides whether `p` may perform `action`, on `character` when given.
///
/// * `Anonymous` (auth off) and `ApiKey` (admin): always allowed.
/// * `Token`: the role must reach the action's rank (`Subscribe`, `History`:
///   subscriber; `Publish`: publisher; `Admin`: admin). When `character` is
///   `Some` and the token has `chars`, one pattern must match it.
/// * `Admin` with `character` `None` means an endpoint across all characters
///   (listing, logs): it needs role admin **and** unrestricted characters
///   (`chars` absent or containing `*`), since a listing would otherwise
///   reveal characters outside the token's grant.
/// * For the other actions `None` checks the role only; per-character
///   actions must pass their character (broadcast: once per target).
///
/// Refusals are `forbidden` (403), naming the role or the character.
pub fn authorize(
    p: &Principal,
    action: Action,
    character: Option<&CharacterId>,
) -> Result<(), ApiError> {
    let claims = match p {
        Principal::Anonymous | Principal::ApiKey => return Ok(()),
        Principal::Token(c) => c,
    };
    if claims.role < action.min_role() {
        return Err(ApiError::forbidden(format!(
            "role `{}` may not {}",
            claims.role.as_str(),
            action.verb()
        )));
    }
    match character {
        Some(c) if !claims.allows_character(c) => Err(ApiError::forbidden(format!(
            "token does not grant character `{c}`"
        ))),
        None if action == Action::Admin && !claims.allows_all_characters() => Err(
            ApiError::forbidden("token is restricted to some characters; this needs all"),
        ),
        _ => Ok(()),
    }
}

/// `authorize(p, Action::Publish, Some(character)).is_ok()`.
pub fn can_publish(p: &Principal, character: &CharacterId) -> bool {
    authorize(p, Action::Publish, Some(character)).is_ok()
}

/// When the principal's credentials expire (`exp`, seconds since the epoch):
/// a socket is closed with 4001 at that time. `None` for API keys and
/// anonymous principals.
pub fn token_expiry(p: &Principal) -> Option<u64> {
    match p {
        Principal::Token(c) => Some(c.exp),
        Principal::Anonymous | Principal::ApiKey => None,
    }
}

/// The token of an `Authorization: Bearer <token>` header: the scheme is
/// case-insensitive, surrounding whitespace is trimmed, and the token must
/// be one non-empty word. Anything else is `None`.
pub fn bearer_token(authorization_header: &str) -> Option<&str> {
    let h = authorization_header.trim();
    let (scheme, rest) = h.split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    if token.is_empty() || token.contains(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    Some(token)
}

/// The auth settings of the Worker (contract §4).
#[derive(Clone, Copy, Debug)]
pub struct AuthConfig<'a> {
    /// `AUTH_ENABLED == "true"`.
    pub enabled: bool,
    /// `JWT_SECRET`; empty means no token is accepted.
    pub jwt_secret: &'a [u8],
    /// `API_KEYS`, comma-separated; empty means no key is accepted.
    pub api_keys: &'a str,
}

/// The credentials a request carried; `None` for each one absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `?token=` query parameter (subscribe only).
    pub query_token: Option<&'a str>,
    /// The header named by `API_KEY_HEADER`.
    pub api_key: Option<&'a str>,
}

/// Establishes who is calling. Auth disabled: `Anonymous`. Otherwise the
/// first credential present decides, in this order, with no fallback when it
/// is bad: the API key header, the `Authorization` header (must be
/// `Bearer <jwt>`), the `?token=` query parameter. None present, or the one
/// present is bad: `unauthorized`.
pub fn authenticate(
    cfg: &AuthConfig<'_>,
    creds: &Credentials<'_>,
    now_s: u64,
) -> Result<Principal, ApiError> {
    if !cfg.enabled {
        return Ok(Principal::Anonymous);
    }
    if let Some(key) = creds.api_key {
        return if api_key_matches(key, cfg.api_keys) {
            Ok(Principal::ApiKey)
        } else {
            Err(unauthorized("invalid API key"))
        };
    }
    if let Some(h) = creds.authorization {
        let token = bearer_token(h)
            .ok_or_else(|| unauthorized("Authorization must be `Bearer <token>`"))?;
        return verify_jwt(token, cfg.jwt_secret, now_s).map(Principal::Token);
    }
    if let Some(token) = creds.query_token {
        return verify_jwt(token, cfg.jwt_secret, now_s).map(Principal::Token);
    }
    Err(unauthorized("missing credentials"))
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
