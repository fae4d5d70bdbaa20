//! Requests to endpoints: which route a method and path name, decided without
//! state so that every answer of the router's table is tested on the host. A
//! path that names no endpoint is a 404, a known path with another method a
//! 405 that carries the methods it allows, and a malformed character name in
//! it a 400; the method is checked before the name. Names in the path are
//! percent-decoded first (clients may encode them); the fixed segments are
//! matched as they arrive. Credentials are the caller's business, but where
//! they are checked relative to these answers is recorded here too
//! ([`RouteError::admin`], [`Route::AdminKick`]).

use percent_encoding::percent_decode_str;
use std::borrow::Cow;
use std::fmt;

use crate::protocol::{ApiError, ErrorCode};
use crate::topic::{CharacterId, Topic};

/// An endpoint of the contract (§3) with the names its path carries, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET` or `HEAD /healthz`.
    Health,
    /// `GET` or `HEAD /v1/time`: the server's clock, no credentials.
    Time,
    /// `GET /v1/characters/{character}/subscribe`.
    Subscribe(CharacterId),
    /// `POST /v1/characters/{character}/commands`.
    Publish(CharacterId),
    /// `GET /v1/characters/{character}/history`.
    History(CharacterId),
    /// `POST /v1/characters/{character}/say`.
    Say(CharacterId),
    /// `GET /v1/characters/{character}/state`: the retained commands.
    State(CharacterId),
    /// `DELETE /v1/characters/{character}/retained/{topic}`.
    ClearRetained {
        character: CharacterId,
        topic: Topic,
    },
    /// `POST /v1/broadcast`.
    Broadcast,
    /// `GET /v1/subscribe?characters=...`: a scene socket.
    SceneSubscribe,
    /// `GET /v1/admin/subscriptions`.
    AdminSubscriptions,
    /// `GET /v1/admin/characters/{character}/subscriptions`.
    AdminCharacterSubscriptions(CharacterId),
    /// `DELETE /v1/admin/characters/{character}/subscriptions/{client_id}`.
    /// A segment that cannot be a client id names no client: it is answered
    /// 404 like any client that is not there, so only after the caller's
    /// admin rights on `character` were checked. Hence a `Result` here
    /// rather than a refused route.
    AdminKick {
        character: CharacterId,
        client_id: Result<ClientId, RouteError>,
    },
    /// `GET /v1/admin/logs`.
    AdminLogs,
    /// `POST /v1/admin/revocations`: withdraw a user's rights (4003).
    AdminRevoke,
    /// `OPTIONS` on a known path: the methods it allows (`Allow`, and the
    /// CORS preflight answer).
    Preflight(&'static [&'static str]),
}

impl Route {
    /// Routes under `/v1/admin/`: answered only to admins, and logged.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Route::AdminSubscriptions
                | Route::AdminCharacterSubscriptions(_)
                | Route::AdminKick { .. }
                | Route::AdminLogs
                | Route::AdminRevoke
        )
    }

    /// The character the path names, if any.
    pub fn character(&self) -> Option<&CharacterId> {
        match self {
            Route::Subscribe(c)
            | Route::Publish(c)
            | Route::History(c)
            | Route::Say(c)
            | Route::State(c)
            | Route::ClearRetained { character: c, .. }
            | Route::AdminCharacterSubscriptions(c)
            | Route::AdminKick { character: c, .. } => Some(c),
            Route::Health
            | Route::Time
            | Route::Preflight(_)
            | Route::Broadcast
            | Route::SceneSubscribe
            | Route::AdminSubscriptions
            | Route::AdminLogs
            | Route::AdminRevoke => None,
        }
    }
}

/// A subscriber's id as the kick path names it: 1 to 64 ASCII letters and
/// digits. Checked here so that nothing else can reach the object's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientId(String);

impl ClientId {
    /// `None` when `s` cannot be a client id.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| ClientId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request the route table refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteError {
    pub code: ErrorCode,
    pub message: String,
    /// For a 405, the methods the path allows: the `Allow` header.
    pub allow: Option<&'static [&'static str]>,
    /// The path is under `/v1/admin`. There credentials are checked before
    /// this error is answered, so a caller without them learns nothing about
    /// admin paths; elsewhere the route's own errors come first.
    pub admin: bool,
}

impl RouteError {
    fn new(code: ErrorCode, message: String) -> Self {
        RouteError {
            code,
            message,
            allow: None,
            admin: false,
        }
    }

    /// A known path asked with a method it does not allow.
    pub fn method_not_allowed(allow: &'static [&'static str]) -> Self {
        RouteError {
            allow: Some(allow),
            ..Self::new(
                ErrorCode::MethodNotAllowed,
                format!("method not allowed; use {}", allow.join(", ")),
            )
        }
    }

    fn not_found(path: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("no route for {path}"))
    }

    fn in_admin(self) -> Self {
        RouteError {
            admin: true,
            ..self
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status(),
            self.code.as_str(),
            self.message
        )
    }
}

impl std::error::Error for RouteError {}

impl From<ApiError> for RouteError {
    fn from(e: ApiError) -> Self {
        Self::new(e.code, e.message)
    }
}

/// The methods of a path that reads: `GET`, `HEAD` (the same answer without
/// its body) and `OPTIONS` (CORS preflight).
const READ: &[&str] = &["GET", "HEAD", "OPTIONS"];
const POST: &[&str] = &["POST", "OPTIONS"];
const DELETE: &[&str] = &["DELETE", "OPTIONS"];

/// A path the table knows, before its method and names are checked.
enum Shape<'a> {
    Health,
    Time,
    Character(&'a str, &'a str),
    Retained(&'a str, &'a str),
    Broadcast,
    Scene,
    AdminSubscriptions,
    AdminCharacterSubscriptions(&'a str),
    AdminKick(&'a str, &'a str),
    AdminLogs,
    AdminRevoke,
}

impl Shape<'_> {
    fn methods(&self) -> &'static [&'static str] {
        match self {
            Shape::Character(_, "commands" | "say") | Shape::Broadcast | Shape::AdminRevoke => POST,
            Shape::AdminKick(..) | Shape::Retained(..) => DELETE,
            _ => READ,
        }
    }

    fn is_admin(&self) -> bool {
        !matches!(
            self,
            Shape::Health
                | Shape::Time
                | Shape::Character(..)
                | Shape::Retained(..)
                | Shape::Broadcast
                | Shape::Scene
        )
    }

    /// The route, with the names in the path validated.
    fn resolve(self) -> Result<Route, RouteError> {
        Ok(match self {
            Shape::Health => Route::Health,
            Shape::Time => Route::Time,
            Shape::Character(name, action) => {
                let c = character(name)?;
                match action {
                    "subscribe" => Route::Subscribe(c),
                    "commands" => Route::Publish(c),
                    "say" => Route::Say(c),
                    "state" => Route::State(c),
                    _ => Route::History(c),
                }
            }
            Shape::Retained(name, topic) => Route::ClearRetained {
                character: character(name)?,
                topic: Topic::parse(&decode(topic)).map_err(ApiError::from)?,
            },
            Shape::Broadcast => Route::Broadcast,
            Shape::Scene => Route::SceneSubscribe,
            Shape::AdminSubscriptions => Route::AdminSubscriptions,
            Shape::AdminCharacterSubscriptions(name) => {
                Route::AdminCharacterSubscriptions(character(name)?)
            }
            Shape::AdminKick(name, id) => Route::AdminKick {
                character: character(name)?,
                client_id: client_id(id),
            },
            Shape::AdminLogs => Route::AdminLogs,
            Shape::AdminRevoke => Route::AdminRevoke,
        })
    }
}

fn shape<'a>(segments: &[&'a str]) -> Option<Shape<'a>> {
    Some(match *segments {
        ["healthz"] => Shape::Health,
        ["v1", "time"] => Shape::Time,
        ["v1", "characters", name, action @ ("subscribe" | "commands" | "history" | "say" | "state")] => {
            Shape::Character(name, action)
        }
        ["v1", "characters", name, "retained", topic] => Shape::Retained(name, topic),
        ["v1", "broadcast"] => Shape::Broadcast,
        ["v1", "subscribe"] => Shape::Scene,
        ["v1", "admin", "subscriptions"] => Shape::AdminSubscriptions,
        ["v1", "admin", "characters", name, "subscriptions"] => {
            Shape::AdminCharacterSubscriptions(name)
        }
        ["v1", "admin", "characters", name, "subscriptions", id] => Shape::AdminKick(name, id),
        ["v1", "admin", "logs"] => Shape::AdminLogs,
        ["v1", "admin", "revocations"] => Shape::AdminRevoke,
        _ => return None,
    })
}

/// A path segment with its percent-escapes decoded. An escape that is not
/// two hex digits stays as it is and bytes that are not UTF-8 become U+FFFD;
/// neither is valid in a name, so both are refused by the name's own check.
fn decode(segment: &str) -> Cow<'_, str> {
    percent_decode_str(segment).decode_utf8_lossy()
}

fn character(segment: &str) -> Result<CharacterId, RouteError> {
    CharacterId::parse(&decode(segment)).map_err(|e| ApiError::from(e).into())
}

fn client_id(segment: &str) -> Result<ClientId, RouteError> {
    let decoded = decode(segment);
    ClientId::parse(&decoded).ok_or_else(|| {
        RouteError::new(
            ErrorCode::NotFound,
            format!("no client {decoded:?} on this character"),
        )
        .in_admin()
    })
}

/// The route for `method` and `path` (the URL's path, still percent-encoded).
/// Leading slashes are one; a trailing slash or an empty segment makes
/// another path, which is a 404. `OPTIONS` on any known path is a
/// [`Route::Preflight`] (names unchecked: a browser's preflight must pass so
/// that the request itself gets its precise error); `HEAD` is allowed where
/// `GET` is. Methods are compared exactly, so one no route knows (QUERY,
/// PROPFIND, a lowercase `patch`) is a 405 on every known path rather than
/// being taken for another.
pub fn route(method: &str, path: &str) -> Result<Route, RouteError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let Some(shape) = shape(&segments) else {
        let e = RouteError::not_found(path);
        return Err(if segments.starts_with(&["v1", "admin"]) {
            e.in_admin()
        } else {
            e
        });
    };
    let allowed = shape.methods();
    if method == "OPTIONS" {
        return Ok(Route::Preflight(allowed));
    }
    let admin = shape.is_admin();
    let tag = |e: RouteError| if admin { e.in_admin() } else { e };
    if !allowed.contains(&method) {
        return Err(tag(RouteError::method_not_allowed(allowed)));
    }
    shape.resolve().map_err(tag)
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
