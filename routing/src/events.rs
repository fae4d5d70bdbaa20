//! Event-log records and their KV key scheme. Keys sort newest first
//! (`log:<inverted ms>:<character>:<nonce>`), so a prefix listing reads the
//! most recent events without loading everything, and the character in the
//! key lets a filtered read skip other characters' batches unopened.

use serde::{Deserialize, Serialize};

use crate::catalogue::CloseCode;
use crate::topic::TopicFilter;

/// One thing that happened: connect, disconnect, publish, auth_failure, admin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    pub ts: u64,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub character: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl LogEvent {
    pub fn new(ts: u64, event: &str, character: Option<&str>) -> Self {
        Self {
            ts,
            event: event.to_string(),
            character: character.map(str::to_string),
            client_id: None,
            user: None,
            detail: None,
        }
    }
}

/// Why a socket ended, as the log records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// We closed it with this code.
    Closed(CloseCode),
    /// The client closed it (its close code, as the runtime reported it).
    ClientClosed(u16),
    /// The runtime reported an error on the socket.
    SocketError,
}

/// What a character's hub logs: typed, turned into a [`LogEvent`] only when
/// written.
#[derive(Clone, Debug, PartialEq)]
pub enum EventKind {
    Connect {
        topics: Vec<TopicFilter>,
    },
    Disconnect {
        reason: DisconnectReason,
    },
    /// `delivered` counts sockets sent to (or queued for), summed over commands.
    Publish {
        seqs: Vec<u64>,
        delivered: usize,
    },
}

/// One event of a character, with the client it concerns.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub ts: u64,
    pub kind: EventKind,
    pub client_id: Option<String>,
    pub user: Option<String>,
}

impl Event {
    /// The stored record (contract §6 names: connect, disconnect, publish).
    pub fn to_log(&self, character: &str) -> LogEvent {
        let (name, detail) = match &self.kind {
            EventKind::Connect { topics } => {
                let topics: Vec<&str> = topics.iter().map(TopicFilter::as_str).collect();
                ("connect", serde_json::json!({ "topics": topics }))
            }
            EventKind::Disconnect { reason } => {
                let (code, text) = match reason {
                    DisconnectReason::Closed(c) => (Some(c.code()), c.reason()),
                    DisconnectReason::ClientClosed(code) => (Some(*code), "closed by client"),
                    DisconnectReason::SocketError => (None, "socket error"),
                };
                (
                    "disconnect",
                    serde_json::json!({ "reason": text, "code": code }),
                )
            }
            EventKind::Publish { seqs, delivered } => (
                "publish",
                serde_json::json!({ "seqs": seqs, "delivered": delivered }),
            ),
        };
        LogEvent {
            ts: self.ts,
            event: name.to_string(),
            character: Some(character.to_string()),
            client_id: self.client_id.clone(),
            user: self.user.clone(),
            detail: Some(detail),
        }
    }
}

pub const LOG_PREFIX: &str = "log:";
/// Stands for "no character" (router-level events such as auth failures).
pub const NO_CHARACTER: &str = "-";
const MAX_TS: u64 = 9_999_999_999_999;

/// The key of a batch whose newest event is at `ts_ms`.
pub fn log_key(ts_ms: u64, character: Option<&str>, nonce: &str) -> String {
    format!(
        "{LOG_PREFIX}{:013}:{}:{nonce}",
        MAX_TS.saturating_sub(ts_ms),
        character.unwrap_or(NO_CHARACTER)
    )
}

/// The character named in a log key, if the key is one of ours.
pub fn key_character(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(LOG_PREFIX)?;
    let mut parts = rest.splitn(3, ':');
    let _ts = parts.next()?;
    parts.next()
}

/// The newest event time of the batch under a log key.
pub fn key_newest_ts(key: &str) -> Option<u64> {
    let inverted: u64 = key
        .strip_prefix(LOG_PREFIX)?
        .split(':')
        .next()?
        .parse()
        .ok()?;
    Some(MAX_TS.saturating_sub(inverted))
}

/// Whether the events read so far (`merged`: newest first, at most `limit`)
/// are already the newest `limit`: they are `limit` and the oldest of them
/// is no older than the newest event of the next key to read (keys sort by
/// their newest event, so no later key holds anything newer). Batches are
/// large (up to `logbuf::LOG_FLUSH_BYTES`), so a read stops after the keys
/// it needs instead of opening `limit` of them.
pub fn read_enough(merged: &[LogEvent], limit: usize, next_key: Option<&str>) -> bool {
    let Some(next) = next_key else {
        return true;
    };
    match (merged.get(limit.saturating_sub(1)), key_newest_ts(next)) {
        (Some(oldest_kept), Some(next_newest)) => {
            merged.len() >= limit && oldest_kept.ts >= next_newest
        }
        _ => false,
    }
}

/// Merges batches into one newest-first list of at most `limit` events,
/// keeping only `character`'s when given.
pub fn newest_first(
    batches: Vec<Vec<LogEvent>>,
    character: Option<&str>,
    limit: usize,
) -> Vec<LogEvent> {
    let mut all: Vec<LogEvent> = batches
        .into_iter()
        .flatten()
        .filter(|e| character.is_none() || e.character.as_deref() == character)
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.ts));
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_newest_first_and_name_their_character() {
        let old = log_key(1_000, Some("alice"), "a");
        let new = log_key(2_000, Some("bob"), "b");
        assert!(new < old, "{new} should sort before {old}");
        assert_eq!(key_character(&old), Some("alice"));
        assert_eq!(key_character(&log_key(5, None, "x")), Some(NO_CHARACTER));
        assert_eq!(key_character("other:1:2"), None);
        assert_eq!(key_newest_ts(&old), Some(1_000));
        assert_eq!(key_newest_ts("other:1:2"), None);
    }

    #[test]
    fn a_read_stops_once_no_later_key_can_hold_a_newer_event() {
        let ev = |ts| LogEvent::new(ts, "publish", Some("a"));
        let merged = vec![ev(50), ev(40), ev(30)];
        let next = |ts| log_key(ts, Some("a"), "n");
        assert!(read_enough(&merged, 3, Some(&next(30))));
        assert!(read_enough(&merged, 3, Some(&next(29))));
        assert!(
            !read_enough(&merged, 3, Some(&next(31))),
            "the next batch may hold a 31"
        );
        assert!(!read_enough(&merged, 4, Some(&next(1))), "too few yet");
        assert!(read_enough(&merged, 4, None), "nothing left to read");
        assert!(!read_enough(&merged, 3, Some("garbage")));
    }

    #[test]
    fn merge_filters_sorts_and_limits() {
        let ev = |ts, c: &str| LogEvent::new(ts, "publish", Some(c));
        let batches = vec![vec![ev(1, "a"), ev(5, "b")], vec![ev(3, "a"), ev(4, "a")]];
        let a: Vec<u64> = newest_first(batches.clone(), Some("a"), 2)
            .iter()
            .map(|e| e.ts)
            .collect();
        assert_eq!(a, [4, 3]);
        let all: Vec<u64> = newest_first(batches, None, 10)
            .iter()
            .map(|e| e.ts)
            .collect();
        assert_eq!(all, [5, 4, 3, 1]);
    }
}
