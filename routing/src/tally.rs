//! Failed authentication, counted instead of logged one by one. Writing one
//! event-log key per 401/403 let anyone buy KV writes (billed, and on the free
//! plan a daily quota whose exhaustion also stops history archiving) and push
//! real entries out of the window `/v1/admin/logs` scans. An isolate now logs
//! the first failure of each minute as itself (so a failure shows at once)
//! and counts the rest per route, status and reason; the counts of a minute
//! are written together with the first failure of a later minute. So one
//! isolate writes at most one key per minute, however many requests fail.

use std::collections::BTreeMap;

use crate::events::LogEvent;
use crate::route::Route;

const MINUTE_MS: u64 = 60_000;
/// Distinct (route, status, reason) counted per minute; the rest is counted
/// under one `other` entry, so the tally's memory is bounded whatever the
/// requests say.
pub const MAX_TALLY_KEYS: usize = 64;

/// The failures of the current minute not yet written.
#[derive(Debug, Default)]
pub struct FailureTally {
    minute: Option<u64>,
    counts: BTreeMap<(String, u16, String), u64>,
}

/// A failed request: what the tally keys on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub route: String,
    pub status: u16,
    pub reason: String,
}

impl FailureTally {
    /// Counts one failure at `now`; the events to write now, if any: the
    /// counts of an earlier minute and this failure itself when it is the
    /// first of its minute.
    pub fn record(&mut self, now: u64, failure: Failure, sample: LogEvent) -> Vec<LogEvent> {
        let minute = now / MINUTE_MS;
        let mut out = Vec::new();
        if self.minute != Some(minute) {
            if let Some(ended) = self.minute {
                out.extend(self.take(ended));
            }
            self.minute = Some(minute);
            out.push(sample);
            return out;
        }
        let mut key = (failure.route, failure.status, failure.reason);
        if !self.counts.contains_key(&key) && self.counts.len() >= MAX_TALLY_KEYS {
            key = ("other".to_string(), 0, "other".to_string());
        }
        *self.counts.entry(key).or_default() += 1;
        out
    }

    /// The counts of `minute` as one event, if there were any beyond its
    /// first failure.
    fn take(&mut self, minute: u64) -> Option<LogEvent> {
        if self.counts.is_empty() {
            return None;
        }
        let counts: Vec<serde_json::Value> = std::mem::take(&mut self.counts)
            .into_iter()
            .map(|((route, status, reason), count)| {
                serde_json::json!({"route": route, "status": status, "reason": reason, "count": count})
            })
            .collect();
        let start = minute * MINUTE_MS;
        let mut e = LogEvent::new(start + MINUTE_MS - 1, "auth_failures", None);
        e.detail = Some(serde_json::json!({ "minute_start": start, "counts": counts }));
        Some(e)
    }
}

/// A bounded name for a route (paths carry character names and ids, which
/// an attacker chooses freely).
pub fn route_label(route: Option<&Route>) -> &'static str {
    match route {
        None => "unrouted",
        Some(Route::Health) => "healthz",
        Some(Route::Time) => "time",
        Some(Route::Subscribe(_)) => "subscribe",
        Some(Route::Publish(_)) => "commands",
        Some(Route::History(_)) => "history",
        Some(Route::Say(_)) => "say",
        Some(Route::State(_)) => "state",
        Some(Route::ClearRetained { .. }) => "retained",
        Some(Route::Broadcast) => "broadcast",
        Some(Route::SceneSubscribe) => "scene.subscribe",
        Some(Route::AdminSubscriptions) => "admin.subscriptions",
        Some(Route::AdminCharacterSubscriptions(_)) => "admin.character",
        Some(Route::AdminKick { .. }) => "admin.kick",
        Some(Route::AdminLogs) => "admin.logs",
        Some(Route::AdminRevoke) => "admin.revocations",
        Some(Route::Preflight(_)) => "preflight",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(route: &str, status: u16) -> Failure {
        Failure {
            route: route.into(),
            status,
            reason: "missing credentials".into(),
        }
    }
    fn sample(ts: u64) -> LogEvent {
        LogEvent::new(ts, "auth_failure", None)
    }

    #[test]
    fn one_write_per_minute_however_many_fail() {
        let mut t = FailureTally::default();
        let first = t.record(60_000, f("commands", 401), sample(60_000));
        assert_eq!(first, vec![sample(60_000)], "the first of a minute at once");
        let mut writes = 0;
        for i in 1..2_000u64 {
            let route = if i % 2 == 0 { "commands" } else { "admin.logs" };
            writes += usize::from(!t.record(60_000 + i, f(route, 401), sample(0)).is_empty());
        }
        assert_eq!(writes, 0, "the rest of the minute is counted, not written");
        let next = t.record(125_000, f("history", 403), sample(125_000));
        assert_eq!(
            next.len(),
            2,
            "the tally and the new minute's first failure"
        );
        let detail = next[0].detail.as_ref().unwrap();
        assert_eq!(next[0].event, "auth_failures");
        assert_eq!(detail["minute_start"], 60_000);
        let counts = detail["counts"].as_array().unwrap();
        let total: u64 = counts.iter().map(|c| c["count"].as_u64().unwrap()).sum();
        assert_eq!(total, 1_999);
        assert_eq!(counts.len(), 2, "one entry per route, status and reason");
        assert_eq!(next[1], sample(125_000));
    }

    #[test]
    fn distinct_reasons_are_bounded() {
        let mut t = FailureTally::default();
        t.record(0, f("x", 401), sample(0));
        for i in 0..1_000 {
            let failure = Failure {
                route: "x".into(),
                status: 401,
                reason: format!("r{i}"),
            };
            t.record(1 + i, failure, sample(0));
        }
        assert_eq!(t.counts.len(), MAX_TALLY_KEYS + 1);
        let out = t.record(60_000, f("x", 401), sample(60_000));
        let counts = out[0].detail.as_ref().unwrap()["counts"]
            .as_array()
            .unwrap()
            .clone();
        let total: u64 = counts.iter().map(|c| c["count"].as_u64().unwrap()).sum();
        assert_eq!(total, 1_000);
    }

    #[test]
    fn a_lone_failure_writes_no_tally() {
        let mut t = FailureTally::default();
        assert_eq!(t.record(0, f("x", 401), sample(0)).len(), 1);
        assert_eq!(t.record(60_000, f("x", 401), sample(60_000)).len(), 1);
    }
}
