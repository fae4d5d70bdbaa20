//! Workers KV: event-log batches in `ANIMATION_LOGS` and archived history
//! pages in `ANIMATION_HISTORY`. Every call here runs off the publish path.

use futures_util::future::join_all;
use routing::archive::decode_page;
use routing::events::{key_character, log_key, newest_first, read_enough, LogEvent, LOG_PREFIX};
use routing::hub::StoredCommand;
use worker::{console_error, Env, KvStore};

pub const LOGS: &str = "ANIMATION_LOGS";
pub const HISTORY: &str = "ANIMATION_HISTORY";
/// Log keys opened at once by a read.
const READ_AT_ONCE: usize = 8;
/// KV refuses TTLs under a minute.
const MIN_TTL_SECONDS: u64 = 60;

fn kv(env: &Env, binding: &str) -> worker::Result<KvStore> {
    env.kv(binding)
}

fn err(e: impl std::fmt::Display) -> worker::Error {
    worker::Error::RustError(e.to_string())
}

fn nonce() -> String {
    format!("{:08x}", (js_sys::Math::random() * 4_294_967_296.0) as u32)
}

/// Writes one batch of events under a fresh key (so no key is written twice).
pub async fn write_logs(
    env: &Env,
    character: Option<&str>,
    events: &[LogEvent],
    ttl_seconds: u64,
) -> worker::Result<()> {
    let Some(newest) = events.iter().map(|e| e.ts).max() else {
        return Ok(());
    };
    let body = serde_json::to_string(events).map_err(err)?;
    put_log_batch(env, character, newest, body, ttl_seconds).await
}

/// Writes one batch (`body`: a JSON array of events whose newest is at
/// `newest`) under a fresh key.
pub async fn put_log_batch(
    env: &Env,
    character: Option<&str>,
    newest: u64,
    body: String,
    ttl_seconds: u64,
) -> worker::Result<()> {
    kv(env, LOGS)?
        .put(&log_key(newest, character, &nonce()), body)
        .map_err(err)?
        .expiration_ttl(ttl_seconds.max(MIN_TTL_SECONDS))
        .execute()
        .await
        .map_err(err)
}

/// The newest `limit` events in KV, optionally of one character. Keys sort
/// by their batch's newest event, so the keys are opened in that order, a
/// few at once, until no later key can hold a newer event
/// (`events::read_enough`); each key holds at least one event, so the first
/// `limit` matching keys always suffice.
pub async fn read_logs(
    env: &Env,
    character: Option<&str>,
    limit: usize,
) -> worker::Result<Vec<LogEvent>> {
    let store = kv(env, LOGS)?;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    for _page in 0..20 {
        let mut list = store.list().prefix(LOG_PREFIX.to_string()).limit(1000);
        if let Some(c) = cursor.take() {
            list = list.cursor(c);
        }
        let page = list.execute().await.map_err(err)?;
        for key in page.keys {
            if character.is_none() || key_character(&key.name) == character {
                keys.push(key.name);
            }
        }
        if keys.len() >= limit || page.list_complete {
            break;
        }
        match page.cursor {
            Some(c) if !c.is_empty() => cursor = Some(c),
            _ => break,
        }
    }
    keys.truncate(limit);
    let mut merged: Vec<LogEvent> = Vec::new();
    let mut at = 0;
    while at < keys.len() {
        // Few at once: batches are up to `LOG_FLUSH_BYTES`, and the first
        // often holds all that is needed.
        let chunk = &keys[at..(at + READ_AT_ONCE).min(keys.len())];
        at += chunk.len();
        let reads = chunk.iter().map(|k| store.get(k).json::<Vec<LogEvent>>());
        let mut batches = vec![std::mem::take(&mut merged)];
        for r in join_all(reads).await {
            if let Ok(Some(batch)) = r {
                batches.push(batch);
            }
        }
        merged = newest_first(batches, character, limit);
        if read_enough(&merged, limit, keys.get(at).map(String::as_str)) {
            break;
        }
    }
    Ok(merged)
}

pub async fn put_page(env: &Env, key: &str, body: String) -> worker::Result<()> {
    kv(env, HISTORY)?
        .put(key, body)
        .map_err(err)?
        .execute()
        .await
        .map_err(err)
}

/// Reads archive pages by key, at most 20 at once. A page that is missing
/// or unreadable comes back as `None`: the reader decides what that means.
pub async fn read_pages(
    env: &Env,
    pages: &[(u64, String)],
) -> Vec<(u64, Option<Vec<StoredCommand>>)> {
    let store = match kv(env, HISTORY) {
        Ok(store) => store,
        Err(e) => {
            console_error!("history archive: {e}");
            return pages.iter().map(|(p, _)| (*p, None)).collect();
        }
    };
    let mut out = Vec::with_capacity(pages.len());
    for chunk in pages.chunks(20) {
        let reads = chunk.iter().map(|(_, key)| store.get(key).text());
        for ((page, key), r) in chunk.iter().zip(join_all(reads).await) {
            let rows = match r {
                Ok(Some(text)) => decode_page(&text),
                Ok(None) => None,
                Err(e) => {
                    console_error!("reading archive page {key}: {e}");
                    None
                }
            };
            out.push((*page, rows));
        }
    }
    out
}
