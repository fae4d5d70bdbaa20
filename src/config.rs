//! The `[vars]` and secrets the gateway reads (contract §7), with defaults.

use std::cell::RefCell;

use routing::catalogue::{
    DEFAULT_FANOUT_LIMIT, DEFAULT_MAX_SUBSCRIBERS, MAX_FANOUT_LIMIT, MIN_FANOUT_LIMIT,
};
use routing::catalogue::{DEFAULT_RESUME_LIMIT, MAX_RESUME_LIMIT};
use routing::logbuf::flush_interval_ms;
use worker::Env;

#[derive(Clone, Debug)]
pub struct Config {
    pub history_limit: u64,
    pub batch_window_ms: u64,
    pub log_ttl_seconds: u64,
    /// `HISTORY_BACKLOG_LIMIT`: unarchived rows at which publishes are
    /// refused (`routing::archive::backlog_limit` applies the default).
    pub history_backlog_limit: Option<u64>,
    /// `TEST_FAIL_ARCHIVE=true` makes every archive write fail, for tests of
    /// the backlog; ignored unless `ENVIRONMENT` is `development`.
    pub fail_archive: bool,
    /// `MAX_SUBSCRIBERS`: most sockets per character.
    pub max_subscribers: usize,
    /// `FANOUT_LIMIT`: most sockets one object holds (the character's own
    /// object, or one of its relays).
    pub fanout_limit: usize,
    /// How long a registry entry counts without a refresh (objects refresh
    /// at half of it while they have subscribers).
    pub registry_lease_ms: u64,
    /// Most commands one resume replays (1..=`MAX_RESUME_LIMIT`).
    pub resume_limit: u64,
    /// Test only (`TEST_FAIL_STORE_AT_ROW`, unset in every shipped config):
    /// the insert of this row (1-based) of any publish fails inside its
    /// transaction, so tests can show that a failed publish stores nothing.
    pub test_fail_store_at_row: Option<usize>,
    /// `LOG_FLUSH_SECONDS` in ms: the longest a buffered log event waits for
    /// its KV write (`routing::logbuf`: default 30 s, 1 s to 10 minutes).
    pub log_flush_ms: u64,
    /// `TEST_FAIL_LOG_WRITES=true` makes every event-log flush fail, for
    /// tests that nothing buffered is lost; ignored unless `ENVIRONMENT` is
    /// `development`.
    pub fail_log_writes: bool,
}

pub fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

/// A secret (`wrangler secret put`; locally `.dev.vars` or an env file).
/// The runtime hands secrets and plain vars to the Worker alike, so what
/// keeps a secret out of `[vars]` is the configs' own test
/// (`routing/tests/configs.rs`), not this lookup.
pub fn secret(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .ok()
        .map(|v| v.to_string())
        .filter(|v| !v.is_empty())
}

fn number(env: &Env, name: &str, default: u64) -> u64 {
    var(env, name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

thread_local! {
    static CACHED: RefCell<Option<Config>> = const { RefCell::new(None) };
}

impl Config {
    /// The configuration, read from `env` once per isolate: vars are fixed for
    /// a deployment, and each read is a call into the runtime.
    pub fn cached(env: &Env) -> Self {
        CACHED.with(|c| {
            c.borrow_mut()
                .get_or_insert_with(|| Self::from_env(env))
                .clone()
        })
    }

    pub fn from_env(env: &Env) -> Self {
        Self {
            history_limit: number(env, "HISTORY_LIMIT", 1000).max(1),
            batch_window_ms: number(env, "BATCH_WINDOW_MS", 0).min(10_000),
            log_ttl_seconds: number(env, "LOG_TTL_SECONDS", 7 * 24 * 3600),
            history_backlog_limit: var(env, "HISTORY_BACKLOG_LIMIT")
                .and_then(|v| v.trim().parse().ok()),
            max_subscribers: number(env, "MAX_SUBSCRIBERS", DEFAULT_MAX_SUBSCRIBERS as u64).max(1)
                as usize,
            fanout_limit: number(env, "FANOUT_LIMIT", DEFAULT_FANOUT_LIMIT as u64)
                .clamp(MIN_FANOUT_LIMIT as u64, MAX_FANOUT_LIMIT as u64)
                as usize,
            fail_archive: var(env, "TEST_FAIL_ARCHIVE").as_deref() == Some("true")
                && var(env, "ENVIRONMENT").as_deref() == Some("development"),
            registry_lease_ms: number(env, "REGISTRY_LEASE_SECONDS", 600).clamp(2, 86_400) * 1000,
            resume_limit: number(env, "RESUME_LIMIT", DEFAULT_RESUME_LIMIT)
                .clamp(1, MAX_RESUME_LIMIT),
            test_fail_store_at_row: var(env, "TEST_FAIL_STORE_AT_ROW")
                .and_then(|v| v.trim().parse().ok())
                .filter(|n| *n > 0),
            log_flush_ms: flush_interval_ms(
                var(env, "LOG_FLUSH_SECONDS").and_then(|v| v.trim().parse().ok()),
            ),
            fail_log_writes: var(env, "TEST_FAIL_LOG_WRITES").as_deref() == Some("true")
                && var(env, "ENVIRONMENT").as_deref() == Some("development"),
        }
    }
}
