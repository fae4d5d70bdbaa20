//! The `[vars]` the gateway reads (contract §7), with their defaults.

use worker::Env;

#[derive(Clone, Debug)]
pub struct Config {
    pub history_limit: u64,
    pub batch_window_ms: u64,
}

fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string())
}

fn number(env: &Env, name: &str, default: u64) -> u64 {
    var(env, name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Config {
    pub fn from_env(env: &Env) -> Self {
        Self {
            history_limit: number(env, "HISTORY_LIMIT", 1000).max(1),
            batch_window_ms: number(env, "BATCH_WINDOW_MS", 0).min(10_000),
        }
    }
}
