//! The contract between the router Worker and the objects it forwards to:
//! internal paths, the headers that carry what the router established (the
//! character, the caller's rights and token expiry), the publish answer and
//! the registry report. Both sides use these types, so a renamed field or
//! header breaks the build instead of the traffic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Internal paths of the character object.
pub mod path {
    pub const SUBSCRIBE: &str = "/subscribe";
    pub const PUBLISH: &str = "/publish";
    pub const HISTORY: &str = "/history";
    pub const SUBSCRIPTIONS: &str = "/subscriptions";
    /// Followed by the client id.
    pub const KICK_PREFIX: &str = "/subscriptions/";
    /// Closes a user's sockets (character object).
    pub const REVOKE: &str = "/revoke";
    /// The newest buffered event-log rows (`?limit=`), flushed or not:
    /// answers `{"events": [...]}` newest first.
    pub const LOGS: &str = "/logs";
    /// Relay role: rows the character's object stored, for its sockets
    /// (POST [`super::FeedAnswer`]).
    pub const FEED: &str = "/relay/feed";
    /// Character object: a resume read for a relay-held socket (GET, the
    /// subscribe query; answers [`super::ReplayAnswer`]).
    pub const REPLAY: &str = "/relay/replay";
    /// Character object: a scene object asks to be fed (POST
    /// [`super::SceneJoin`]; answers [`super::JoinAnswer`]).
    pub const SCENE_JOIN: &str = "/scene/join";
    /// Character object: `GET .../state` (contract §8).
    pub const STATE: &str = "/state";
    /// Character object: `DELETE .../retained/{topic}`, followed by the topic.
    pub const RETAINED_PREFIX: &str = "/retained/";
    /// Character object: its retained snapshot for a relay's copy (GET;
    /// answers [`super::RetainedAnswer`]).
    pub const RELAY_RETAINED: &str = "/relay/retained";
    /// Character object: connects and disconnects of a scene's sockets,
    /// for its event log (POST [`super::SceneLog`]).
    pub const SCENE_LOG: &str = "/scene/log";
    /// Internal paths of the registry object.
    pub const REPORT: &str = "/report";
    /// Several reports at once (a scene object's, one per character).
    pub const REPORTS: &str = "/reports";
    pub const LIST: &str = "/list";
    /// Records a revocation (POST) or lists the active ones (GET).
    pub const REVOCATIONS: &str = "/revocations";
}

/// The character's name, for an object that has not stored it yet.
pub const H_CHARACTER: &str = "x-gateway-character";
/// The token's `sub`.
pub const H_USER: &str = "x-gateway-user";
/// `true` or `false`: whether the socket may publish.
pub const H_CAN_PUBLISH: &str = "x-gateway-can-publish";
/// Token expiry, ms since the Unix epoch.
pub const H_EXPIRES: &str = "x-gateway-expires-ms";
/// On a subscribe forwarded to a relay: the character's epoch and latest
/// seq when it was forwarded.
pub const H_RELAY_EPOCH: &str = "x-gateway-relay-epoch";
pub const H_RELAY_SEQ: &str = "x-gateway-relay-seq";
/// On a subscribe forwarded to a relay: the revision of the character's
/// retained set; a relay whose copy is of another fetches the snapshot.
pub const H_RELAY_RETAINED_REV: &str = "x-gateway-relay-retained-rev";
/// Every internal header starts with this; the router drops such headers
/// from what a client sent, so no client can forge them.
pub const INTERNAL_PREFIX: &str = "x-gateway-";

/// What the router established about a subscriber, passed in headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeFacts {
    pub user: Option<String>,
    pub can_publish: bool,
    pub expires_ms: Option<u64>,
}

impl SubscribeFacts {
    /// The headers that carry these facts.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![(
            H_CAN_PUBLISH,
            if self.can_publish { "true" } else { "false" }.to_string(),
        )];
        if let Some(user) = &self.user {
            out.push((H_USER, user.clone()));
        }
        if let Some(exp) = self.expires_ms {
            out.push((H_EXPIRES, exp.to_string()));
        }
        out
    }

    /// Reads the facts back; `get` looks a header up by name. A missing
    /// `can-publish` header means the router did not restrict publishing.
    pub fn from_headers(get: impl Fn(&str) -> Option<String>) -> Self {
        Self {
            user: get(H_USER),
            can_publish: get(H_CAN_PUBLISH).as_deref() != Some("false"),
            expires_ms: get(H_EXPIRES).and_then(|v| v.trim().parse().ok()),
        }
    }
}

/// The answer to a publish (contract §3): `character`, `epoch`, `seqs`,
/// `delivered` (sockets sent to, summed over commands).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishAnswer {
    pub character: String,
    pub epoch: String,
    pub seqs: Vec<u64>,
    pub delivered: usize,
}

/// The frame that answers a client `publish` which a relay or a scene
/// object sent on to the character's object, from that object's answer
/// (`status`, `body`): `published` with the last seq; a command the
/// character refused (400, 413) as an `error` frame with the character's
/// code and words; a 503 as `history_backlog`. Any other answer is a fault
/// of ours: the client gets `internal`, and the second value says what to
/// log.
pub fn forwarded_publish_frame(
    status: u16,
    body: &str,
    r#ref: Option<&str>,
) -> (String, Option<String>) {
    use crate::protocol::{error_frame_json, published_frame_json, ErrorCode};
    let refused = |code| {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let message = v["error"]["message"]
            .as_str()
            .unwrap_or("the command was refused");
        (error_frame_json(code, message, r#ref), None)
    };
    let failed = |why: String| {
        let frame = error_frame_json(ErrorCode::Internal, "the publish failed; try again", r#ref);
        (frame, Some(why))
    };
    match status {
        200 => match serde_json::from_str::<PublishAnswer>(body) {
            Ok(a) => (
                published_frame_json(a.seqs.last().copied().unwrap_or(0), r#ref),
                None,
            ),
            Err(e) => failed(format!("publish answer: {e}")),
        },
        400 => refused(ErrorCode::BadRequest),
        413 => refused(ErrorCode::PayloadTooLarge),
        503 => (
            error_frame_json(
                ErrorCode::HistoryBacklog,
                "history archiving lags; publish again later",
                r#ref,
            ),
            None,
        ),
        other => failed(format!("the character answered {other}")),
    }
}

/// A character object's subscriber summary, sent to the registry whenever
/// it changes. `version` orders reports, so a late one never overwrites a
/// newer one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryReport {
    pub character: String,
    pub subscribers: u64,
    /// Filter -> sockets holding it.
    pub topics: BTreeMap<String, usize>,
    pub version: u64,
    /// How long the entry counts without a newer report (the object
    /// refreshes it at half that while it has subscribers).
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

fn default_lease_ms() -> u64 {
    DEFAULT_LEASE_MS
}

/// The registry lease when `REGISTRY_LEASE_SECONDS` is not set: 10 minutes.
pub const DEFAULT_LEASE_MS: u64 = 10 * 60 * 1000;

/// A feed to a relay: every stored row after `after` (at most
/// `catalogue::MAX_FEED_ROWS`), as `archive` page rows. `lost`: history no
/// longer holds the rows between the relay's place and `after`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedBody {
    pub epoch: String,
    pub after: u64,
    #[serde(default)]
    pub lost: bool,
    pub rows: serde_json::Value,
    /// To a scene object: whose rows these are (absent for a relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub character: Option<String>,
    /// To a scene object that holds presence sockets: that character's
    /// presence frames since the last feed (without `character`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presence: Vec<String>,
}

/// A scene object asking a character's object to feed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneJoin {
    pub scene: String,
}

/// Most events in one [`SceneLog`]; a scene sends more in several.
pub const MAX_SCENE_LOG_EVENTS: usize = 256;

/// A scene object's connects and disconnects for one character's event
/// log: `connect` or `disconnect` events of that character, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SceneLog {
    pub scene: String,
    pub events: Vec<crate::events::LogEvent>,
    /// The scene's sockets after these events (counted in presence
    /// `count`), and whether one of them asked for presence.
    #[serde(default)]
    pub sockets: usize,
    #[serde(default)]
    pub presence: bool,
}

/// The character's place when a scene joined: its epoch and latest seq,
/// and its retained commands then (page rows) at revision `retained_rev`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAnswer {
    pub epoch: String,
    pub seq: u64,
    #[serde(default)]
    pub retained: Option<serde_json::Value>,
    #[serde(default)]
    pub retained_rev: u64,
}

/// A character object's retained set: the commands (page rows, seq order)
/// at revision `rev`, read when its stream was at `seq` in `epoch`. The
/// `state` answer's content, and the snapshot a relay or scene adopts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetainedAnswer {
    pub epoch: String,
    pub seq: u64,
    pub rev: u64,
    pub rows: serde_json::Value,
}

/// A relay's answer to a feed: the last seq it applied and the sockets it
/// holds (0: the character's object stops feeding it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedAnswer {
    pub last: u64,
    pub sockets: usize,
    /// A scene object: whether one of its sockets asked for presence.
    #[serde(default)]
    pub presence: bool,
}

/// The character object's resume read for a relay: `rows` (page rows),
/// `complete` and `next_since` as for any resume, and `covered`: the
/// character's latest seq when the read ended (every seq through it was
/// considered unless the read was cut).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayAnswer {
    pub rows: serde_json::Value,
    pub complete: bool,
    pub next_since: Option<u64>,
    pub covered: u64,
}

/// A user whose tokens are refused until `until` (ms since the Unix epoch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub user: String,
    pub until: u64,
}

/// The registry's answer to a new revocation: the characters that have
/// subscribers now, whose objects must close the user's sockets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecorded {
    pub characters: Vec<String>,
}

/// A character object's answer to a revoke: the sockets it closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeAnswer {
    pub closed: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forwarded publish is answered from the character's answer: its
    /// seq, its own refusal (code and words), a backlog, or `internal`
    /// with a reason to log.
    #[test]
    fn forwarded_publish_frames() {
        let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        let ok = r#"{"character":"a","epoch":"e","seqs":[4,5],"delivered":1}"#;
        let (f, log) = forwarded_publish_frame(200, ok, Some("r"));
        assert_eq!(
            json(&f),
            serde_json::json!({"type":"published","seq":5,"ref":"r"})
        );
        assert_eq!(log, None);
        let refusal = r#"{"error":{"code":"payload_too_large","message":"at most 64 topics"}}"#;
        for (status, code) in [(400, "bad_request"), (413, "payload_too_large")] {
            let (f, log) = forwarded_publish_frame(status, refusal, None);
            let f = json(&f);
            assert_eq!(
                (f["code"].as_str(), f["message"].as_str()),
                (Some(code), Some("at most 64 topics"))
            );
            assert_eq!(log, None);
        }
        let (f, log) = forwarded_publish_frame(503, "", None);
        assert_eq!(json(&f)["code"], "history_backlog");
        assert_eq!(log, None);
        for (status, body) in [(500, "{}"), (200, "not json")] {
            let (f, log) = forwarded_publish_frame(status, body, Some("x"));
            assert_eq!(json(&f)["code"], "internal");
            assert_eq!(json(&f)["ref"], "x");
            assert!(log.is_some());
        }
    }

    #[test]
    fn facts_round_trip_through_headers() {
        for facts in [
            SubscribeFacts::default(),
            SubscribeFacts {
                user: Some("ann".into()),
                can_publish: true,
                expires_ms: Some(1_700_000_000_000),
            },
        ] {
            let headers = facts.headers();
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
            };
            assert_eq!(SubscribeFacts::from_headers(get), facts);
            assert!(headers.iter().all(|(k, _)| k.starts_with(INTERNAL_PREFIX)));
        }
        // No header at all: publishing is not restricted by the router.
        assert!(SubscribeFacts::from_headers(|_| None).can_publish);
    }

    #[test]
    fn publish_answer_has_the_contract_fields() {
        let a = PublishAnswer {
            character: "alice".into(),
            epoch: "e".into(),
            seqs: vec![1, 2],
            delivered: 3,
        };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(
            json,
            r#"{"character":"alice","epoch":"e","seqs":[1,2],"delivered":3}"#
        );
        assert_eq!(serde_json::from_str::<PublishAnswer>(&json).unwrap(), a);
    }
}
