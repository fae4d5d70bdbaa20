//! The registry object: one instance that knows which characters have
//! subscribers, so the admin listing reads one place instead of waking every
//! character. Character objects report their subscriber summary (coalesced)
//! whenever it changes; each report carries a version so a late report never
//! overwrites a newer one. Each entry is a lease: it counts until its
//! object's next refresh is overdue, so the sockets of an object that died
//! with its runtime (a crash, a deploy) leave the listing by themselves
//! within one lease, even if nobody wakes that character again.

use routing::relays::parse_relay_name;
use routing::scene::{parse_registry_entry, MAX_SCENE_CHARACTERS};
use routing::wire::{path, RegistryReport, Revocation, RevocationRecorded};
use serde::Deserialize;
use std::collections::BTreeMap;
use worker::{
    durable_object, DurableObject, Env, Method, Request, Response, Result, SqlStorage, State,
};

use crate::error::{json_response, AppError};

pub const BINDING: &str = "REGISTRY";
pub const INSTANCE: &str = "global";

/// The one registry instance.
pub fn stub(env: &Env) -> worker::Result<worker::Stub> {
    env.durable_object(BINDING)?.get_by_name(INSTANCE)
}

/// Posts a report (`path::REPORT`) or a scene's reports (`path::REPORTS`)
/// to the registry; anything but 200 is an error.
pub async fn post_report(env: &Env, at: &str, body: &str) -> worker::Result<()> {
    let url = format!("https://registry{at}");
    let req = crate::forward::post_request(&url, wasm_bindgen::JsValue::from_str(body), None)?;
    let resp = stub(env)?.fetch_with_request(req).await?;
    match resp.status_code() {
        200 => Ok(()),
        other => Err(worker::Error::RustError(format!(
            "registry answered {other}"
        ))),
    }
}

#[durable_object]
pub struct Registry {
    state: State,
    #[allow(dead_code)]
    env: Env,
    /// The tables were made sure of since this instance started (three
    /// statements that every request used to run).
    ready: std::cell::Cell<bool>,
}

#[derive(Deserialize)]
struct Row {
    character: String,
    subscribers: f64,
    topics: String,
}

/// The registry's clock, ms since the Unix epoch.
fn now_ms() -> u64 {
    worker::Date::now().as_millis()
}

#[derive(Deserialize)]
struct VersionRow {
    version: f64,
}

impl DurableObject for Registry {
    fn new(state: State, env: Env) -> Self {
        Self {
            state,
            env,
            ready: std::cell::Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let sql = self.state.storage().sql();
        if !self.ready.get() {
            if let Err(e) = ensure_table(&sql) {
                return AppError::from(e).into_response();
            }
            self.ready.set(true);
        }
        let result = match (req.method(), req.path().as_str()) {
            (Method::Post, path::REPORT) => match req.json::<RegistryReport>().await {
                Ok(report) => record(&sql, &report).map(|()| json_response(200, "{}")),
                Err(e) => Err(AppError::bad_request(format!("bad report: {e}"))),
            },
            // A scene object's reports, one per character of the scene.
            (Method::Post, path::REPORTS) => match req.json::<Vec<RegistryReport>>().await {
                Ok(reports) if reports.len() <= MAX_SCENE_CHARACTERS => reports
                    .iter()
                    .try_for_each(|r| record(&sql, r))
                    .map(|()| json_response(200, "{}")),
                Ok(_) => Err(AppError::bad_request("too many reports")),
                Err(e) => Err(AppError::bad_request(format!("bad reports: {e}"))),
            },
            (Method::Get, path::LIST) => list(&sql).map(|body| json_response(200, &body)),
            (Method::Post, path::REVOCATIONS) => match req.json::<Revocation>().await {
                Ok(r) => revoke(&sql, &r).map(|body| json_response(200, &body)),
                Err(e) => Err(AppError::bad_request(format!("bad revocation: {e}"))),
            },
            (Method::Get, path::REVOCATIONS) => {
                revocations(&sql).map(|body| json_response(200, &body))
            }
            _ => Err(AppError::not_found("no registry route")),
        };
        match result {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        }
    }
}

#[derive(Deserialize)]
struct RevocationRow {
    user: String,
    until: f64,
}

#[derive(Deserialize)]
struct CharacterRow {
    character: String,
}

/// Records (or extends) a revocation; answers the characters that have
/// subscribers now.
fn revoke(sql: &SqlStorage, r: &Revocation) -> std::result::Result<String, AppError> {
    sql.exec(
        "INSERT INTO revocations (user, until) VALUES (?, ?) \
         ON CONFLICT(user) DO UPDATE SET until = MAX(until, excluded.until)",
        vec![r.user.as_str().into(), (r.until as i64).into()],
    )?;
    let now = (now_ms() as i64).into();
    let rows: Vec<CharacterRow> = sql
        .exec(
            "SELECT character FROM leases WHERE subscribers > 0 AND lease_until > ? ORDER BY character",
            vec![now],
        )?
        .to_array()?;
    // A relay's (or a scene's) entry stands for its character, whose object
    // passes the revocation on to its relays and scene objects.
    let mut characters: Vec<String> = rows.into_iter().map(|r| base_name(r.character)).collect();
    characters.sort();
    characters.dedup();
    let recorded = RevocationRecorded { characters };
    serde_json::to_string(&recorded).map_err(AppError::internal)
}

/// The revocations in force (expired ones are deleted).
fn revocations(sql: &SqlStorage) -> std::result::Result<String, AppError> {
    let now: i64 = now_ms() as i64;
    sql.exec("DELETE FROM revocations WHERE until <= ?", vec![now.into()])?;
    let rows: Vec<RevocationRow> = sql
        .exec("SELECT user, until FROM revocations", None)?
        .to_array()?;
    let list: Vec<Revocation> = rows
        .into_iter()
        .map(|r| Revocation {
            user: r.user,
            until: r.until as u64,
        })
        .collect();
    serde_json::to_string(&list).map_err(AppError::internal)
}

fn ensure_table(sql: &SqlStorage) -> worker::Result<()> {
    sql.exec(
        "CREATE TABLE IF NOT EXISTS revocations (user TEXT PRIMARY KEY, until INTEGER NOT NULL)",
        None,
    )?;
    // The listing before leases (no expiry); its rows are reported again
    // within one refresh interval.
    sql.exec("DROP TABLE IF EXISTS characters", None)?;
    sql.exec(
        "CREATE TABLE IF NOT EXISTS leases (character TEXT PRIMARY KEY, subscribers INTEGER NOT NULL, \
         topics TEXT NOT NULL, version INTEGER NOT NULL, lease_until INTEGER NOT NULL)",
        None,
    )?;
    Ok(())
}

fn record(sql: &SqlStorage, r: &RegistryReport) -> std::result::Result<(), AppError> {
    let known: Vec<VersionRow> = sql
        .exec(
            "SELECT version FROM leases WHERE character = ?",
            vec![r.character.as_str().into()],
        )?
        .to_array()?;
    if known.first().is_some_and(|k| k.version as u64 > r.version) {
        return Ok(());
    }
    if r.subscribers == 0 {
        sql.exec(
            "DELETE FROM leases WHERE character = ?",
            vec![r.character.as_str().into()],
        )?;
    } else {
        let topics = serde_json::to_string(&r.topics).map_err(AppError::internal)?;
        let lease_until = now_ms().saturating_add(r.lease_ms);
        sql.exec(
            "INSERT INTO leases (character, subscribers, topics, version, lease_until) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT(character) DO UPDATE SET subscribers = excluded.subscribers, \
             topics = excluded.topics, version = excluded.version, lease_until = excluded.lease_until",
            vec![
                r.character.as_str().into(),
                (r.subscribers as i64).into(),
                topics.into(),
                (r.version as i64).into(),
                (lease_until as i64).into(),
            ],
        )?;
    }
    Ok(())
}

/// The character a registry entry counts for: a relay's name, and a scene
/// object's entry for one of its characters, stand for that character.
fn base_name(name: String) -> String {
    if let Some((character, _)) = parse_relay_name(&name) {
        return character.as_str().to_string();
    }
    match parse_registry_entry(&name) {
        Some(character) => character.as_str().to_string(),
        None => name,
    }
}

fn list(sql: &SqlStorage) -> std::result::Result<String, AppError> {
    // Expired leases: their objects stopped refreshing (their sockets died).
    let now = (now_ms() as i64).into();
    sql.exec("DELETE FROM leases WHERE lease_until <= ?", vec![now])?;
    let rows: Vec<Row> = sql
        .exec(
            "SELECT character, subscribers, topics FROM leases WHERE subscribers > 0 ORDER BY character",
            None,
        )?
        .to_array()?;
    // A character's relays report under their own names (`<character>~r<n>`),
    // scene objects under `<character>~s<hash>` (one entry per character):
    // their sockets are added to the character's entry.
    let mut merged: BTreeMap<String, (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for r in rows {
        let topics: BTreeMap<String, u64> = serde_json::from_str(&r.topics).unwrap_or_default();
        let entry = merged.entry(base_name(r.character)).or_default();
        entry.0 += r.subscribers as u64;
        for (filter, n) in topics {
            *entry.1.entry(filter).or_default() += n;
        }
    }
    let total: u64 = merged.values().map(|(n, _)| n).sum();
    let characters: Vec<serde_json::Value> = merged
        .into_iter()
        .map(|(character, (subscribers, topics))| {
            serde_json::json!({"character": character, "subscribers": subscribers, "topics": topics})
        })
        .collect();
    Ok(serde_json::json!({"characters": characters, "total_subscribers": total}).to_string())
}
