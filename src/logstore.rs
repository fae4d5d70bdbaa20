//! The character's event-log buffer in its SQLite (`log_buffer`): events
//! wait here, serialized, until a flush writes them to KV in large batches
//! (`routing::logbuf` decides when). Being in SQLite, they survive
//! hibernation, eviction and a crash. A flushed row is marked, not deleted,
//! and stays readable in the tail for `LOG_FLUSHED_GRACE_MS` (at most the
//! newest `LOGS_MAX_LIMIT` rows), because a KV listing elsewhere may not show
//! its new key yet.

use routing::logbuf::{Held, LOG_FLUSHED_GRACE_MS};
use routing::query::LOGS_MAX_LIMIT;
use serde::Deserialize;
use worker::{SqlStorage, SqlStorageValue};

pub struct LogStore {
    sql: SqlStorage,
}

/// One unflushed row, as a flush reads it.
#[derive(Deserialize)]
pub struct LogRow {
    pub id: f64,
    pub ts: f64,
    pub body: String,
}

#[derive(Deserialize)]
struct HeldRow {
    rows: f64,
    bytes: Option<f64>,
    oldest: Option<f64>,
}

#[derive(Deserialize)]
struct IdRow {
    id: Option<f64>,
}

#[derive(Deserialize)]
struct BodyRow {
    body: String,
}

#[derive(Deserialize)]
struct DroppedRow {
    n: f64,
    oldest: Option<f64>,
    newest: Option<f64>,
}

/// What [`LogStore::drop_oldest`] removed.
pub struct Dropped {
    pub rows: u64,
    pub oldest_ts: Option<u64>,
    pub newest_ts: Option<u64>,
}

fn int(v: u64) -> SqlStorageValue {
    // ids, ms timestamps and counts stay far below 2^53.
    SqlStorageValue::Integer(v as i64)
}

impl LogStore {
    pub fn open(sql: SqlStorage) -> worker::Result<Self> {
        // AUTOINCREMENT: ids never come back after deletes, so "every row up
        // to id N" means the same rows for the whole of a flush.
        sql.exec(
            "CREATE TABLE IF NOT EXISTS log_buffer (id INTEGER PRIMARY KEY AUTOINCREMENT, \
             ts INTEGER NOT NULL, body TEXT NOT NULL, flushed_at INTEGER)",
            None,
        )?;
        Ok(Self { sql })
    }

    /// Buffers one serialized event.
    pub fn append(&self, ts: u64, body: &str) -> worker::Result<()> {
        self.sql.exec(
            "INSERT INTO log_buffer (ts, body) VALUES (?, ?)",
            vec![int(ts), body.into()],
        )?;
        Ok(())
    }

    /// What is waiting for a flush (bytes as UTF-8).
    pub fn held(&self) -> worker::Result<Held> {
        let rows: Vec<HeldRow> = self
            .sql
            .exec(
                "SELECT COUNT(*) AS rows, SUM(LENGTH(CAST(body AS BLOB))) AS bytes, MIN(ts) AS oldest \
                 FROM log_buffer WHERE flushed_at IS NULL",
                None,
            )?
            .to_array()?;
        Ok(rows.first().map_or(Held::default(), |r| Held {
            rows: r.rows as u64,
            bytes: r.bytes.unwrap_or(0.0) as u64,
            oldest_ts: r.oldest.map(|t| t as u64),
        }))
    }

    /// The newest unflushed id: a flush writes the rows up to it.
    pub fn newest_unflushed(&self) -> worker::Result<Option<u64>> {
        let rows: Vec<IdRow> = self
            .sql
            .exec(
                "SELECT MAX(id) AS id FROM log_buffer WHERE flushed_at IS NULL",
                None,
            )?
            .to_array()?;
        Ok(rows.first().and_then(|r| r.id).map(|id| id as u64))
    }

    /// The oldest unflushed rows up to `through`, at most `limit`.
    pub fn unflushed(&self, through: u64, limit: u64) -> worker::Result<Vec<LogRow>> {
        self.sql
            .exec(
                "SELECT id, ts, body FROM log_buffer WHERE flushed_at IS NULL AND id <= ? \
                 ORDER BY id LIMIT ?",
                vec![int(through), int(limit)],
            )?
            .to_array()
    }

    /// The rows up to `through` are in KV now.
    pub fn mark_flushed(&self, through: u64, now: u64) -> worker::Result<()> {
        self.sql.exec(
            "UPDATE log_buffer SET flushed_at = ? WHERE flushed_at IS NULL AND id <= ?",
            vec![int(now), int(through)],
        )?;
        Ok(())
    }

    /// Deletes flushed rows past their grace, and any beyond the newest
    /// `LOGS_MAX_LIMIT` rows (no read can need those from the tail).
    pub fn prune(&self, now: u64) -> worker::Result<()> {
        self.sql.exec(
            "DELETE FROM log_buffer WHERE flushed_at IS NOT NULL AND (flushed_at < ? OR id <= \
             (SELECT id FROM log_buffer ORDER BY id DESC LIMIT 1 OFFSET ?))",
            vec![
                int(now.saturating_sub(LOG_FLUSHED_GRACE_MS)),
                int(LOGS_MAX_LIMIT as u64),
            ],
        )?;
        Ok(())
    }

    /// Drops the oldest `n` unflushed rows (the buffer is full while KV
    /// writes fail).
    pub fn drop_oldest(&self, n: u64) -> worker::Result<Dropped> {
        const OLDEST: &str =
            "SELECT id FROM log_buffer WHERE flushed_at IS NULL ORDER BY id LIMIT ?";
        let rows: Vec<DroppedRow> = self
            .sql
            .exec(
                &format!(
                    "SELECT COUNT(*) AS n, MIN(ts) AS oldest, MAX(ts) AS newest FROM log_buffer \
                     WHERE id IN ({OLDEST})"
                ),
                vec![int(n)],
            )?
            .to_array()?;
        self.sql.exec(
            &format!("DELETE FROM log_buffer WHERE id IN ({OLDEST})"),
            vec![int(n)],
        )?;
        Ok(rows.first().map_or(
            Dropped {
                rows: 0,
                oldest_ts: None,
                newest_ts: None,
            },
            |r| Dropped {
                rows: r.n as u64,
                oldest_ts: r.oldest.map(|t| t as u64),
                newest_ts: r.newest.map(|t| t as u64),
            },
        ))
    }

    /// The newest `limit` buffered events (flushed ones in their grace
    /// included), serialized, newest first.
    pub fn tail(&self, limit: u64) -> worker::Result<Vec<String>> {
        let rows: Vec<BodyRow> = self
            .sql
            .exec(
                "SELECT body FROM log_buffer ORDER BY id DESC LIMIT ?",
                vec![int(limit)],
            )?
            .to_array()?;
        Ok(rows.into_iter().map(|r| r.body).collect())
    }
}
