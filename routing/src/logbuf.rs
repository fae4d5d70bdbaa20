//! The event-log buffer's policy. A character object appends each log event
//! to its SQLite (so buffered events survive hibernation, eviction and a
//! crash) and writes them to KV in large batches: when the buffered bytes
//! reach [`LOG_FLUSH_BYTES`], or [`LogPolicy::interval_ms`]
//! (`LOG_FLUSH_SECONDS`) after the oldest buffered event, whichever comes
//! first. The flush deadline is one of the deadlines the object's single
//! alarm is armed for. A failed write keeps the rows and is retried with
//! backoff. When writes keep failing the buffer is bounded
//! ([`LOG_BUFFER_MAX_ROWS`], [`LOG_BUFFER_MAX_BYTES`]): the oldest
//! [`LOG_DROP_ROWS`] rows are dropped and a `log_dropped` event counts them.
//!
//! Events of a turn that writes nothing else to SQLite (a connect, a
//! disconnect, a kick) are first staged in memory, for at most
//! [`LOG_STAGE_MS`] or [`LOG_STAGE_MAX_EVENTS`] events, and then written to
//! SQLite together in one turn: a write turn's commit costs more than the
//! rest of a reconnect (measured in BENCHMARKS.md). A turn that writes
//! anyway (a publish stores its command) writes the staged events with its
//! own. A pending timer keeps a Durable Object from hibernating, so staged
//! events are lost only when the object is shut down (a deploy, a runtime
//! restart, a crash) within [`LOG_STAGE_MS`] of them.
//!
//! Reads: `GET /v1/admin/logs?character=` merges the object's buffered tail
//! with KV ([`merge_newest`], which also drops an event seen on both sides of
//! the flush boundary).

use crate::backoff::Backoff;
use crate::events::LogEvent;

/// Buffered bytes (serialized events) at which a flush starts at once; also
/// the largest KV value a flush writes (one event larger than this is
/// written alone). Large enough that a busy character writes about once per
/// 1,000–2,000 events, small enough that an admin read of the newest
/// events opens little more than it needs.
pub const LOG_FLUSH_BYTES: u64 = 256 * 1024;
/// The most unflushed rows an object keeps (reached only when KV writes keep
/// failing; a working flush starts at [`LOG_FLUSH_BYTES`]).
pub const LOG_BUFFER_MAX_ROWS: u64 = 20_000;
/// The most unflushed bytes an object keeps (same: only while KV fails).
pub const LOG_BUFFER_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Rows dropped at once when a bound is reached (the oldest ones), so a
/// failing KV costs one delete per this many events, not one per event.
pub const LOG_DROP_ROWS: u64 = 1_000;
/// Default of `LOG_FLUSH_SECONDS`: the longest an event waits in the buffer
/// while KV writes succeed.
pub const DEFAULT_LOG_FLUSH_SECONDS: u64 = 30;
/// The longest an event of a turn that writes nothing else waits in memory
/// before it is written to SQLite (see the module's paragraph).
pub const LOG_STAGE_MS: u64 = 1_000;
/// Staged events written at once when this many wait (bounds the memory
/// and the loss on a shutdown).
pub const LOG_STAGE_MAX_EVENTS: usize = 256;

/// Whether staged events are written now rather than when the stage timer
/// fires: the turn writes to SQLite anyway, or the stage is full.
pub fn write_staged_now(staged: usize, turn_writes: bool) -> bool {
    staged > 0 && (turn_writes || staged >= LOG_STAGE_MAX_EVENTS)
}

/// Bounds of `LOG_FLUSH_SECONDS`.
pub const MIN_LOG_FLUSH_SECONDS: u64 = 1;
pub const MAX_LOG_FLUSH_SECONDS: u64 = 600;
/// How long flushed rows stay readable in the object's tail: KV lists are
/// eventually consistent (a new key may be missing from a listing elsewhere
/// for up to 60 s), so the tail keeps answering for them meanwhile.
pub const LOG_FLUSHED_GRACE_MS: u64 = 60_000;

/// `LOG_FLUSH_SECONDS` (unset or unreadable: the default), clamped to its
/// bounds, in ms.
pub fn flush_interval_ms(configured: Option<u64>) -> u64 {
    configured
        .unwrap_or(DEFAULT_LOG_FLUSH_SECONDS)
        .clamp(MIN_LOG_FLUSH_SECONDS, MAX_LOG_FLUSH_SECONDS)
        * 1000
}

/// What the buffer holds (unflushed rows only), as SQLite counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub rows: u64,
    pub bytes: u64,
    /// The ts of the oldest unflushed event.
    pub oldest_ts: Option<u64>,
}

/// The buffer's state: what it holds, whether a flush is running, and the
/// backoff after failed flushes. The shell keeps one per object, rebuilt
/// from SQLite on wake ([`LogBuffer::new`] with [`Held`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogBuffer {
    interval_ms: u64,
    held: Held,
    flushing: bool,
    /// Failed flushes since the last one that succeeded, and the retry.
    pub retry: Backoff,
}

/// What the shell must do after appending a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AfterAdd {
    /// Start a flush now (the size trigger).
    pub flush: bool,
    /// Drop this many of the oldest unflushed rows (a bound was reached).
    pub drop_oldest: u64,
}

impl LogBuffer {
    pub fn new(interval_ms: u64, held: Held) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            held,
            flushing: false,
            retry: Backoff::default(),
        }
    }

    pub fn held(&self) -> Held {
        self.held
    }

    /// A row of `bytes` with event time `ts` was appended.
    pub fn added(&mut self, ts: u64, bytes: u64) -> AfterAdd {
        self.held.rows += 1;
        self.held.bytes += bytes;
        self.held.oldest_ts = Some(self.held.oldest_ts.map_or(ts, |t| t.min(ts)));
        let full = self.held.rows > LOG_BUFFER_MAX_ROWS || self.held.bytes > LOG_BUFFER_MAX_BYTES;
        AfterAdd {
            flush: !self.flushing && self.retry.retry_at.is_none() && self.over_size(),
            drop_oldest: if full { LOG_DROP_ROWS } else { 0 },
        }
    }

    /// The counts after the shell dropped rows (or anything else changed
    /// them behind the buffer's back), read again from SQLite.
    pub fn recount(&mut self, held: Held) {
        self.held = held;
    }

    fn over_size(&self) -> bool {
        self.held.bytes >= LOG_FLUSH_BYTES
    }

    /// When the alarm must fire for the log: never while empty or while a
    /// flush runs (its end decides again); at the retry after a failure;
    /// otherwise at once when over size, else one interval after the
    /// oldest buffered event.
    pub fn flush_at(&self) -> Option<u64> {
        if self.held.rows == 0 || self.flushing {
            return None;
        }
        if let Some(at) = self.retry.retry_at {
            return Some(at);
        }
        let oldest = self.held.oldest_ts?;
        if self.over_size() {
            return Some(oldest);
        }
        Some(oldest.saturating_add(self.interval_ms))
    }

    /// The flush deadline that events still staged in memory (the oldest
    /// at `oldest_staged`) will have once written: an alarm armed for it
    /// before they are written need not move afterwards.
    pub fn staged_flush_at(&self, oldest_staged: Option<u64>) -> Option<u64> {
        oldest_staged.map(|ts| ts.saturating_add(self.interval_ms))
    }

    /// Whether a flush should start at `now`.
    pub fn due(&self, now: u64) -> bool {
        self.flush_at().is_some_and(|at| at <= now)
    }

    /// A flush was asked for: no deadline (and no size trigger) until it
    /// ends with [`LogBuffer::succeeded`] or [`LogBuffer::failed`].
    pub fn begin(&mut self) {
        self.flushing = true;
    }

    /// The run wrote everything it took; `held` is what arrived meanwhile.
    pub fn succeeded(&mut self, held: Held) {
        self.flushing = false;
        self.retry.succeeded();
        self.held = held;
    }

    /// The run failed at `now` (some batches may have been written; `held`
    /// is what is left). The next attempt waits as [`Backoff::failed`] says;
    /// returns when it is due.
    pub fn failed(&mut self, now: u64, held: Held) -> u64 {
        self.flushing = false;
        self.held = held;
        self.retry.failed(now)
    }
}

/// How many of `sizes` (serialized rows, oldest first) go into the next KV
/// value: as many as fit in `max_bytes` as a JSON array, at least one.
pub fn batch_len(sizes: &[u64], max_bytes: u64) -> usize {
    // "[" + rows joined by "," + "]"
    let mut total = 1u64;
    for (i, size) in sizes.iter().enumerate() {
        total = total.saturating_add(size.saturating_add(1));
        if total > max_bytes && i > 0 {
            return i;
        }
    }
    sizes.len()
}

/// The JSON array of already-serialized events, as one KV value.
pub fn batch_body<'a>(rows: impl IntoIterator<Item = &'a str>) -> String {
    let mut body = String::from("[");
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(row);
    }
    body.push(']');
    body
}

/// The newest `limit` events of both sources, newest first, each event
/// once: a flush writes rows to KV before the object lets them go, so an
/// event may be in both for a while. Events are told apart by their whole
/// content (a character's events always differ: connects and disconnects
/// name their client, publishes their seqs); equal events at the same ms
/// are one.
pub fn merge_newest(tail: Vec<LogEvent>, stored: Vec<LogEvent>, limit: usize) -> Vec<LogEvent> {
    let mut all: Vec<LogEvent> = tail.into_iter().chain(stored).collect();
    // Stable: same-ms events keep their source order.
    all.sort_by_key(|e| std::cmp::Reverse(e.ts));
    let mut out: Vec<LogEvent> = Vec::with_capacity(all.len().min(limit));
    let mut same_ms_from = 0;
    for event in all {
        if out.len() >= limit {
            break;
        }
        if out.last().is_none_or(|last| last.ts != event.ts) {
            same_ms_from = out.len();
        }
        if !out[same_ms_from..].contains(&event) {
            out.push(event);
        }
    }
    out
}

#[cfg(test)]
#[path = "logbuf_tests.rs"]
mod tests;
