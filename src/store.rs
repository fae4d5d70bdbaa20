//! The character's SQLite storage: the source of truth for `seq`, `epoch`,
//! history and idempotency keys. Every call is synchronous, so a publish is
//! stored in the same turn that delivers it, and the runtime's output gate
//! holds the frames until the write is durable.
//!
//! The publish path runs one statement per stored command (plus one per
//! idempotency key), each a single call into the runtime: every statement is
//! a crossing from wasm into JS and the runtime's SQLite API, which profiles
//! showed to cost more than the SQLite work itself. The statements of one
//! publish run in one transaction (the runtime's `transactionSync`): all of
//! its rows are stored or none, so the hub's seq, which advances only once
//! the store succeeded, always matches storage.

use std::cell::Cell;

use routing::hub::StoredCommand;
use routing::protocol::Command;
use routing::topic::{CommandName, Topic};
use serde::Deserialize;
use wasm_bindgen::prelude::{wasm_bindgen, Closure};
use wasm_bindgen::{JsCast, JsValue};
use worker::{console_error, SqlStorage, SqlStorageValue, Storage};

use crate::logstore::LogStore;
use routing::catalogue::IDEMPOTENCY_WINDOW_MS as IDEMPOTENCY_MS;
/// Expired idempotency keys are deleted at most this often (the hub keeps
/// the live window in memory; the rows only serve a wake-up).
const PRUNE_EVERY_MS: u64 = 10_000;

const INSERT_COMMAND: &str =
    "INSERT INTO commands (seq, ts, topic, name, params, duration_ms, id, at) \
                              VALUES (?, ?, ?, ?, ?, ?, ?, ?)";
/// The columns a command row is read back with.
const SELECT_COMMAND: &str =
    "SELECT seq, ts, topic, name, params, duration_ms, id, at, retain FROM commands";
/// A command published with `retain`: its history row says so (relays and
/// scenes fed from history keep their copies of the retained set by it)...
const INSERT_RETAINED_COMMAND: &str =
    "INSERT INTO commands (seq, ts, topic, name, params, duration_ms, id, at, retain) \
                              VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)";
/// ...and it replaces its topic's row in `retained`, which lives apart from
/// history so that no trimming or archiving drops it.
const UPSERT_RETAINED: &str =
    "INSERT INTO retained (seq, ts, topic, name, params, duration_ms, id, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT(topic) DO UPDATE SET seq = excluded.seq, ts = excluded.ts, name = excluded.name, \
     params = excluded.params, duration_ms = excluded.duration_ms, id = excluded.id, at = excluded.at";
/// The meta key holding when a report last listed this object's sockets.
const LISTED: &str = "listed";
/// The meta key of the retained set's revision (`routing::retained`).
pub const RETAINED_REV: &str = "retained_rev";
const UPSERT_ID: &str = "INSERT INTO idempotency (id, seq, ts) VALUES (?, ?, ?) \
                         ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, ts = excluded.ts";

#[wasm_bindgen]
extern "C" {
    /// The runtime's `SqlStorage`, seen through fixed-arity `exec` calls: one
    /// call per statement, arguments passed directly (worker's `exec` builds a
    /// JS array and pushes every binding, one crossing each).
    type SqlExec;
    #[wasm_bindgen(method, catch, js_name = exec)]
    #[allow(clippy::too_many_arguments)]
    fn exec8(
        this: &SqlExec,
        query: &str,
        seq: f64,
        ts: f64,
        topic: &str,
        name: &str,
        params: &str,
        duration_ms: &JsValue,
        id: &JsValue,
        at: &JsValue,
    ) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(method, catch, js_name = exec)]
    fn exec3(this: &SqlExec, query: &str, id: &str, seq: f64, ts: f64) -> Result<JsValue, JsValue>;

    /// The runtime's `DurableObjectStorage`, for `transactionSync(fn)`: runs
    /// `fn` synchronously in a transaction that commits when it returns and
    /// rolls back when it throws (the exception is rethrown).
    type TransactionalStorage;
    #[wasm_bindgen(method, catch, js_name = transactionSync)]
    fn transaction_sync(
        this: &TransactionalStorage,
        f: &js_sys::Function,
    ) -> Result<JsValue, JsValue>;
}

/// One command row as the insert binds it.
struct RowArgs {
    seq: f64,
    ts: f64,
    topic: String,
    name: String,
    params: String,
    duration: JsValue,
    id: JsValue,
    at: JsValue,
    key: Option<String>,
    retain: bool,
}

impl RowArgs {
    /// The row's `INSERT` (one fixed-arity call into the runtime), and for
    /// a retained command the upsert of its topic's retained row.
    fn insert(&self, sql: &SqlExec) -> Result<JsValue, JsValue> {
        if self.retain {
            self.exec(sql, INSERT_RETAINED_COMMAND)?;
            return self.exec(sql, UPSERT_RETAINED);
        }
        self.exec(sql, INSERT_COMMAND)
    }

    fn exec(&self, sql: &SqlExec, query: &str) -> Result<JsValue, JsValue> {
        sql.exec8(
            query,
            self.seq,
            self.ts,
            &self.topic,
            &self.name,
            &self.params,
            &self.duration,
            &self.id,
            &self.at,
        )
    }
}

pub struct Store {
    sql: SqlStorage,
    /// The event-log buffer (`log_buffer`).
    pub logs: LogStore,
    /// The runtime's storage object, for transactions.
    storage: JsValue,
    /// When expired idempotency keys were last deleted (ms, this isolate).
    pruned_at: Cell<u64>,
    /// [`Store::listed_at`] once read (None: not read yet).
    listed: Cell<Option<Option<u64>>>,
}

#[derive(Deserialize)]
struct MetaRow {
    value: String,
}

#[derive(Deserialize)]
struct SeqRow {
    seq: Option<f64>,
}

#[derive(Deserialize)]
struct CommandRow {
    seq: f64,
    ts: f64,
    topic: String,
    name: String,
    params: String,
    duration_ms: Option<f64>,
    id: Option<String>,
    at: Option<f64>,
    #[serde(default)]
    retain: Option<f64>,
}

#[derive(Deserialize)]
pub struct IdRow {
    pub id: String,
    pub seq: f64,
    pub ts: f64,
}

#[derive(Deserialize)]
struct TopicsRow {
    topics: String,
}

#[derive(Deserialize)]
struct ColumnRow {
    name: String,
}

/// Objects whose `commands` table predates `at` or `retain` get the column
/// (nullable, so their rows read back as commands without one: no `at`, not
/// retained). Runs on every wake: one read of the table's schema, and each
/// `ALTER` once per object.
fn add_columns(sql: &SqlStorage) -> worker::Result<()> {
    let columns: Vec<ColumnRow> = sql.exec("PRAGMA table_info(commands)", None)?.to_array()?;
    for column in ["at", "retain"] {
        if !columns.iter().any(|c| c.name == column) {
            sql.exec(
                &format!("ALTER TABLE commands ADD COLUMN {column} INTEGER"),
                None,
            )?;
        }
    }
    Ok(())
}

fn int(v: u64) -> SqlStorageValue {
    // seq, ts and durations stay far below 2^53.
    SqlStorageValue::Integer(v as i64)
}

impl Store {
    pub fn open(storage: &Storage) -> worker::Result<Self> {
        let sql = storage.sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            None,
        )?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS commands (seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, \
             topic TEXT NOT NULL, name TEXT NOT NULL, params TEXT NOT NULL, duration_ms INTEGER, id TEXT, \
             at INTEGER, retain INTEGER)",
            None,
        )?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS retained (topic TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts INTEGER NOT NULL, \
             name TEXT NOT NULL, params TEXT NOT NULL, duration_ms INTEGER, id TEXT, at INTEGER)",
            None,
        )?;
        add_columns(&sql)?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS idempotency (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts INTEGER NOT NULL)",
            None,
        )?;
        sql.exec(
            "CREATE INDEX IF NOT EXISTS idempotency_ts ON idempotency (ts)",
            None,
        )?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS spilled_topics (client_id TEXT PRIMARY KEY, topics TEXT NOT NULL)",
            None,
        )?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS relays (idx INTEGER PRIMARY KEY, sockets INTEGER NOT NULL)",
            None,
        )?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS scenes (name TEXT PRIMARY KEY)",
            None,
        )?;
        let store = Self {
            logs: LogStore::open(sql.clone())?,
            sql,
            storage: AsRef::<JsValue>::as_ref(storage.as_raw()).clone(),
            pruned_at: Cell::new(0),
            listed: Cell::new(None),
        };
        Ok(store)
    }

    pub fn meta(&self, key: &str) -> worker::Result<Option<String>> {
        let rows: Vec<MetaRow> = self
            .sql
            .exec("SELECT value FROM meta WHERE key = ?", vec![key.into()])?
            .to_array()?;
        Ok(rows.into_iter().next().map(|r| r.value))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> worker::Result<()> {
        self.sql.exec(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            vec![key.into(), value.into()],
        )?;
        Ok(())
    }

    /// The newest stored seq, 0 when nothing was ever published. Rows leave
    /// SQLite only through the archive (up to `archived_through`), so the
    /// newest seq is the larger
    /// of the newest row and the archive mark; it is not written per publish.
    /// Objects created before that kept it under `seq`, which still counts.
    pub fn latest_seq(&self) -> worker::Result<u64> {
        let stored = ["seq", "archived_through"]
            .iter()
            .map(|key| self.meta_u64(key))
            .collect::<worker::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
        let rows: Vec<SeqRow> = self
            .sql
            .exec("SELECT MAX(seq) AS seq FROM commands", None)?
            .to_array()?;
        let max_row = rows
            .first()
            .and_then(|r| r.seq)
            .map(|s| s as u64)
            .unwrap_or(0);
        Ok(stored.max(max_row))
    }

    /// Stores newly published commands and their idempotency keys, in one
    /// transaction: on an error nothing of them is stored. Rows leave only
    /// through the archive (`delete_through`), never unarchived: when the
    /// archive lags, the object refuses publishes instead
    /// (`routing::archive::backlog_full`). The pruning of expired
    /// idempotency keys runs after the commit; its failure is only logged.
    ///
    /// `fail_at_row` (the test-only var `TEST_FAIL_STORE_AT_ROW`, 1-based)
    /// makes the insert of that row of a publish throw inside the
    /// transaction, after the rows before it were inserted.
    pub fn append(&self, rows: &[StoredCommand], fail_at_row: Option<usize>) -> worker::Result<()> {
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let mut args = Vec::with_capacity(rows.len());
        for row in rows {
            let c = &row.command;
            let params = serde_json::to_string(&c.params)
                .map_err(|e| worker::Error::RustError(e.to_string()))?;
            // seq, ts and durations stay far below 2^53, so f64 is exact.
            args.push(RowArgs {
                seq: row.seq as f64,
                ts: row.ts as f64,
                topic: c.topic.as_str().to_string(),
                name: c.name.as_str().to_string(),
                params,
                duration: c
                    .duration_ms
                    .map(|d| JsValue::from_f64(f64::from(d)))
                    .unwrap_or(JsValue::NULL),
                id: c
                    .id
                    .as_deref()
                    .map(JsValue::from_str)
                    .unwrap_or(JsValue::NULL),
                at: c
                    .at
                    .map(|at| JsValue::from_f64(at as f64))
                    .unwrap_or(JsValue::NULL),
                key: c.id.clone(),
                retain: c.retain,
            });
        }
        if let ([a @ RowArgs { retain: false, .. }], None, None) =
            (args.as_slice(), fail_at_row, &args[0].key)
        {
            // One statement is atomic by itself: no transaction (and no JS
            // closure) for the common single command without an id.
            a.insert(self.sql.as_ref().unchecked_ref())
                .map_err(worker::Error::from)?;
            self.prune(last.ts);
            return Ok(());
        }
        let sql: JsValue = self.sql.as_ref().clone();
        let insert = move || -> Result<JsValue, JsValue> {
            let sql: &SqlExec = sql.unchecked_ref();
            for (i, a) in args.iter().enumerate() {
                a.insert(sql)?;
                if fail_at_row == Some(i + 1) {
                    return Err(
                        js_sys::Error::new("TEST_FAIL_STORE_AT_ROW: injected failure").into(),
                    );
                }
                if let Some(key) = &a.key {
                    sql.exec3(UPSERT_ID, key, a.seq, a.ts)?;
                }
            }
            Ok(JsValue::UNDEFINED)
        };
        let insert = Closure::once(insert);
        self.storage
            .unchecked_ref::<TransactionalStorage>()
            .transaction_sync(insert.as_ref().unchecked_ref())
            .map_err(worker::Error::from)?;
        self.prune(last.ts);
        Ok(())
    }

    /// Forgets idempotency keys older than their window, at most once per
    /// `PRUNE_EVERY_MS`.
    fn prune(&self, now: u64) {
        if now >= self.pruned_at.get().saturating_add(PRUNE_EVERY_MS) {
            self.pruned_at.set(now);
            if let Err(e) = self.sql.exec(
                "DELETE FROM idempotency WHERE ts < ?",
                vec![int(now.saturating_sub(IDEMPOTENCY_MS))],
            ) {
                console_error!("pruning idempotency keys: {e}");
            }
        }
    }

    /// Stored commands with seq above `since`, oldest first, at most `limit`.
    pub fn after(&self, since: u64, limit: u64) -> worker::Result<Vec<StoredCommand>> {
        let rows: Vec<CommandRow> = self
            .sql
            .exec(
                &format!("{SELECT_COMMAND} WHERE seq > ? ORDER BY seq LIMIT ?"),
                vec![int(since), int(limit)],
            )?
            .to_array()?;
        Ok(rows.into_iter().filter_map(decode).collect())
    }

    /// Stored commands with seq in `from..=to`, oldest first.
    pub fn range(&self, from: u64, to: u64) -> worker::Result<Vec<StoredCommand>> {
        let rows: Vec<CommandRow> = self
            .sql
            .exec(
                &format!("{SELECT_COMMAND} WHERE seq >= ? AND seq <= ? ORDER BY seq"),
                vec![int(from), int(to)],
            )?
            .to_array()?;
        Ok(rows.into_iter().filter_map(decode).collect())
    }

    /// The retained commands, in seq order.
    pub fn retained(&self) -> worker::Result<Vec<StoredCommand>> {
        let rows: Vec<CommandRow> = self
            .sql
            .exec(
                "SELECT seq, ts, topic, name, params, duration_ms, id, at, 1 AS retain FROM retained ORDER BY seq",
                None,
            )?
            .to_array()?;
        Ok(rows.into_iter().filter_map(decode).collect())
    }

    /// Clears `topic`'s retained command and records revision `rev`, in
    /// one turn (the runtime commits both writes together).
    pub fn clear_retained(&self, topic: &str, rev: u64) -> worker::Result<()> {
        self.sql
            .exec("DELETE FROM retained WHERE topic = ?", vec![topic.into()])?;
        self.set_meta(RETAINED_REV, &rev.to_string())
    }

    /// Removes rows up to `to` once they are archived, and remembers that.
    pub fn delete_through(&self, to: u64) -> worker::Result<()> {
        self.sql
            .exec("DELETE FROM commands WHERE seq <= ?", vec![int(to)])?;
        self.set_meta("archived_through", &to.to_string())
    }

    /// When a report listing this object's sockets was last asked for
    /// (`routing::lease`; the stored time may be up to a quarter lease
    /// older), or None when the registry lists none of them: a wake after a
    /// crash reports again. Read from SQLite once per wake.
    pub fn listed_at(&self) -> worker::Result<Option<u64>> {
        if let Some(known) = self.listed.get() {
            return Ok(known);
        }
        let stored = self.meta_u64(LISTED)?;
        self.listed.set(Some(stored));
        Ok(stored)
    }

    /// Records a report that lists sockets (`listed`) or none; writes only
    /// when [`routing::lease::store_report_time`] says so, or on a change.
    /// True when it wrote.
    pub fn record_report(&self, listed: bool, now: u64, lease_ms: u64) -> worker::Result<bool> {
        let stored = self.listed_at()?;
        let write = match (listed, stored) {
            (true, stored) if routing::lease::store_report_time(stored, now, lease_ms) => {
                self.set_meta(LISTED, &now.to_string())?;
                Some(Some(now))
            }
            (false, Some(_)) => {
                self.delete_meta(LISTED)?;
                Some(None)
            }
            _ => None,
        };
        if let Some(value) = write {
            self.listed.set(Some(value));
        }
        Ok(write.is_some())
    }

    pub fn delete_meta(&self, key: &str) -> worker::Result<()> {
        self.sql
            .exec("DELETE FROM meta WHERE key = ?", vec![key.into()])?;
        Ok(())
    }

    pub fn meta_u64(&self, key: &str) -> worker::Result<Option<u64>> {
        Ok(self.meta(key)?.and_then(|v| v.parse().ok()))
    }

    /// Idempotency keys younger than the window, to restore after a wake.
    pub fn recent_ids(&self, now_ms: u64) -> worker::Result<Vec<IdRow>> {
        self.sql
            .exec(
                "SELECT id, seq, ts FROM idempotency WHERE ts >= ? ORDER BY ts",
                vec![int(now_ms.saturating_sub(IDEMPOTENCY_MS))],
            )?
            .to_array()
    }

    /// Topic lists too large for a socket attachment are kept here.
    pub fn spill_topics(&self, client_id: &str, topics_json: &str) -> worker::Result<()> {
        self.sql.exec(
            "INSERT INTO spilled_topics (client_id, topics) VALUES (?, ?) \
             ON CONFLICT(client_id) DO UPDATE SET topics = excluded.topics",
            vec![client_id.into(), topics_json.into()],
        )?;
        Ok(())
    }

    pub fn spilled_topics(&self, client_id: &str) -> worker::Result<Option<String>> {
        let rows: Vec<TopicsRow> = self
            .sql
            .exec(
                "SELECT topics FROM spilled_topics WHERE client_id = ?",
                vec![client_id.into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().next().map(|r| r.topics))
    }

    pub fn drop_spilled_topics(&self, client_id: &str) -> worker::Result<()> {
        self.sql.exec(
            "DELETE FROM spilled_topics WHERE client_id = ?",
            vec![client_id.into()],
        )?;
        Ok(())
    }
}

#[derive(Deserialize)]
struct RelayRow {
    idx: f64,
    sockets: f64,
}

impl Store {
    /// The relays the character's object feeds (number, sockets when it
    /// joined), so a restarted object keeps feeding them.
    pub fn relays(&self) -> worker::Result<Vec<(u32, usize)>> {
        let rows: Vec<RelayRow> = self
            .sql
            .exec("SELECT idx, sockets FROM relays ORDER BY idx", None)?
            .to_array()?;
        Ok(rows
            .into_iter()
            .map(|r| (r.idx as u32, r.sockets as usize))
            .collect())
    }

    pub fn add_relay(&self, index: u32, sockets: usize) -> worker::Result<()> {
        self.sql.exec(
            "INSERT INTO relays (idx, sockets) VALUES (?, ?) \
             ON CONFLICT(idx) DO UPDATE SET sockets = excluded.sockets",
            vec![int(u64::from(index)), int(sockets as u64)],
        )?;
        Ok(())
    }

    pub fn drop_relay(&self, index: u32) -> worker::Result<()> {
        self.sql.exec(
            "DELETE FROM relays WHERE idx = ?",
            vec![int(u64::from(index))],
        )?;
        Ok(())
    }
}

#[derive(Deserialize)]
struct SceneRow {
    name: String,
}

impl Store {
    /// The scene objects the character's object feeds, by name.
    pub fn scenes(&self) -> worker::Result<Vec<String>> {
        let rows: Vec<SceneRow> = self
            .sql
            .exec("SELECT name FROM scenes ORDER BY name", None)?
            .to_array()?;
        Ok(rows.into_iter().map(|r| r.name).collect())
    }

    pub fn add_scene(&self, name: &str) -> worker::Result<()> {
        self.sql.exec(
            "INSERT OR IGNORE INTO scenes (name) VALUES (?)",
            vec![name.into()],
        )?;
        Ok(())
    }

    pub fn drop_scene(&self, name: &str) -> worker::Result<()> {
        self.sql
            .exec("DELETE FROM scenes WHERE name = ?", vec![name.into()])?;
        Ok(())
    }
}

fn decode(row: CommandRow) -> Option<StoredCommand> {
    let topic = Topic::parse(&row.topic).ok()?;
    let name = CommandName::parse(&row.name).ok()?;
    let params = match serde_json::from_str(&row.params) {
        Ok(p) => p,
        Err(e) => {
            console_error!("stored command {} has unreadable params: {e}", row.seq);
            return None;
        }
    };
    Some(StoredCommand {
        seq: row.seq as u64,
        ts: row.ts as u64,
        command: Command {
            topic,
            name,
            params,
            duration_ms: row.duration_ms.map(|d| d as u32),
            id: row.id,
            at: row.at.map(|at| at as u64),
            retain: row.retain.is_some_and(|r| r != 0.0),
        },
    })
}
