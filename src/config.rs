//! The `[vars]` and secrets the gateway reads (contract §7), with defaults.

use std::cell::RefCell;

use worker::Env;

#[derive(Clone, Debug)]
pub struct Config {
    pub history_limit: u64,
    pub batch_window_ms: u64,
    pub log_ttl_seconds: u64,
}

pub fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

/// A secret, or (for local setups) a plain var of the same name.
pub fn secret(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .ok()
        .map(|v| v.to_string())
        .or_else(|| var(env, name))
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
        }
    }

    /// Rows SQLite may hold when the archive keeps failing.
    pub fn hard_cap(&self) -> u64 {
        self.history_limit.saturating_mul(20).max(10_000)
    }
}
