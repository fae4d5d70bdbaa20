//! Deferred work that must not slow a publish: event-log flushes to KV
//! (asked for by `routing::logbuf` when the buffer is large or old enough),
//! subscriber reports to the registry and moving full history pages to the
//! KV archive. A failed archive attempt is retried with exponential backoff
//! (`routing::backoff::Backoff`) from the object's alarm, and logged.
//! Each kind is coalesced by `routing::tasks::Scheduler`: at most
//! one run at a time, and one more run when it was asked for meanwhile.

use std::time::Duration;

use routing::archive::{encode_page, next_page_ready, page_key, page_of, unarchived};
use routing::events::LogEvent;
use routing::logbuf::{batch_body, batch_len, LOG_FLUSH_BYTES, LOG_STAGE_MS};
use routing::wire::{path, RegistryReport};
use worker::{console_error, Delay, Env, Result};

use super::core::Shared;
use crate::{kv, registry};

/// The kinds of deferred work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Writes the staged log events to SQLite (`routing::logbuf`).
    StageLogs,
    FlushLogs,
    Report,
    Archive,
    /// Owner: rows (or a probe) to relay `n`; one request in flight each.
    Feed(u32),
    /// Owner: rows (or a probe) to the scene object in slot `n`.
    FeedScene(u32),
}

impl Task {
    /// How long a task waits before it runs, gathering more work.
    fn delay(self) -> Duration {
        match self {
            Task::StageLogs => Duration::from_millis(LOG_STAGE_MS),
            // Asked for only when due (size or interval, `routing::logbuf`).
            Task::FlushLogs => Duration::ZERO,
            // Registry reports are coalesced over this window.
            Task::Report => Duration::from_millis(200),
            Task::Archive | Task::Feed(_) | Task::FeedScene(_) => Duration::ZERO,
        }
    }
}

/// Starts the tasks that the last handler asked for.
pub fn start_queued(shared: &Shared, env: &Env) {
    let (queued, forwards) = match shared.borrow_mut().as_mut() {
        Some(core) => (
            std::mem::take(&mut core.to_start),
            std::mem::take(&mut core.to_forward),
        ),
        None => return,
    };
    for task in queued {
        spawn(shared.clone(), env.clone(), task);
    }
    for pending in forwards {
        super::relay::forward_publish(shared.clone(), env.clone(), pending);
    }
}

fn spawn(shared: Shared, env: Env, task: Task) {
    wasm_bindgen_futures::spawn_local(async move {
        let delay = task.delay();
        if !delay.is_zero() {
            Delay::from(delay).await;
        }
        if let Some(core) = shared.borrow_mut().as_mut() {
            core.tasks.begin(task);
        }
        let result = match task {
            Task::StageLogs => {
                if let Some(core) = shared.borrow_mut().as_mut() {
                    core.write_staged();
                }
                Ok(())
            }
            Task::FlushLogs => flush_logs(&shared, &env).await,
            Task::Report => report(&shared, &env).await,
            Task::Feed(index) => super::relays::feed(&shared, &env, index).await,
            Task::FeedScene(slot) => super::scenes::feed_scene(&shared, &env, slot).await,
            Task::Archive => {
                let result = archive_pages(&shared, &env).await;
                archive_settled(&shared, &result);
                result
            }
        };
        if let Err(e) = result {
            console_error!("{task:?}: {e}");
        }
        if let Some(core) = shared.borrow_mut().as_mut() {
            if core.tasks.end(task) {
                core.to_start.push(task);
            }
        }
        // Work asked for while this task ran (its own next run included).
        start_queued(&shared, &env);
        if matches!(task, Task::Archive | Task::FlushLogs | Task::StageLogs) {
            super::sync_alarm(&shared, super::now_ms()).await;
        }
    });
}

/// Records how an archive attempt went: a failure schedules the retry
/// (1 s, doubling to a minute) and logs `archive_failed`; the first success
/// after failures logs `archive_recovered`.
fn archive_settled(shared: &Shared, result: &Result<()>) {
    let now = super::now_ms();
    let mut guard = shared.borrow_mut();
    let Some(core) = guard.as_mut() else {
        return;
    };
    let character = core.hub.character().as_str().to_string();
    let backlog = unarchived(core.archived_through, core.hub.seq());
    let event = match result {
        Ok(()) => {
            if !core.archive.succeeded() {
                return;
            }
            let mut event = LogEvent::new(now, "archive_recovered", Some(&character));
            event.detail = Some(serde_json::json!({ "unarchived": backlog }));
            event
        }
        Err(e) => {
            let retry_at = core.archive.failed(now);
            let mut event = LogEvent::new(now, "archive_failed", Some(&character));
            event.detail = Some(serde_json::json!({
                "error": e.to_string(),
                "failures": core.archive.failures,
                "unarchived": backlog,
                "retry_at": retry_at,
            }));
            event
        }
    };
    core.log(&event);
    core.settle_log();
}

/// Writes the buffered events (those there when it starts) to KV, in
/// values of up to `LOG_FLUSH_BYTES`, oldest first; each value's rows are
/// marked flushed only after its write succeeded, so a failure loses
/// nothing: the rest waits for the retry (1 s, doubling to a minute).
async fn flush_logs(shared: &Shared, env: &Env) -> Result<()> {
    let now = super::now_ms();
    let result = write_buffered_logs(shared, env, now).await;
    let mut guard = shared.borrow_mut();
    let Some(core) = guard.as_mut() else {
        return result;
    };
    let held = match core.store.logs.held() {
        Ok(held) => held,
        Err(e) => {
            // Counts unknown: keep the old ones, and try again after backoff.
            core.logbuf.failed(super::now_ms(), core.logbuf.held());
            return Err(e);
        }
    };
    match &result {
        Ok(()) => core.logbuf.succeeded(held),
        Err(_) => {
            core.logbuf.failed(super::now_ms(), held);
        }
    }
    result
}

/// Rows a flush reads from SQLite at once (each value takes a prefix):
/// more than the smallest events (about 90 bytes) fill of `LOG_FLUSH_BYTES`,
/// so values are cut by size, not by this.
const FLUSH_READ_ROWS: u64 = 4_000;

async fn write_buffered_logs(shared: &Shared, env: &Env, now: u64) -> Result<()> {
    let (through, character, ttl, fail) = {
        let guard = shared.borrow();
        let Some(core) = guard.as_ref() else {
            return Ok(());
        };
        if let Err(e) = core.store.logs.prune(now) {
            console_error!("pruning flushed log rows: {e}");
        }
        let Some(through) = core.store.logs.newest_unflushed()? else {
            return Ok(());
        };
        (
            through,
            core.hub.character().as_str().to_string(),
            core.config.log_ttl_seconds,
            core.config.fail_log_writes,
        )
    };
    loop {
        let next = {
            let guard = shared.borrow();
            let Some(core) = guard.as_ref() else {
                return Ok(());
            };
            let rows = core.store.logs.unflushed(through, FLUSH_READ_ROWS)?;
            let sizes: Vec<u64> = rows.iter().map(|r| r.body.len() as u64).collect();
            let n = batch_len(&sizes, LOG_FLUSH_BYTES);
            let batch = &rows[..n];
            match batch.last() {
                None => None,
                Some(last) => {
                    let newest = batch.iter().map(|r| r.ts as u64).max().unwrap_or(0);
                    let body = batch_body(batch.iter().map(|r| r.body.as_str()));
                    Some((last.id as u64, newest, body))
                }
            }
        };
        let Some((last_id, newest, body)) = next else {
            return Ok(());
        };
        if fail {
            return Err(worker::Error::RustError(
                "event-log writes fail (TEST_FAIL_LOG_WRITES)".into(),
            ));
        }
        kv::put_log_batch(env, Some(&character), newest, body, ttl).await?;
        let guard = shared.borrow();
        let Some(core) = guard.as_ref() else {
            return Ok(());
        };
        core.store.logs.mark_flushed(last_id, super::now_ms())?;
    }
}

async fn report(shared: &Shared, env: &Env) -> Result<()> {
    let (body, listed) = {
        let mut guard = shared.borrow_mut();
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        core.report_version = super::now_ms().max(core.report_version + 1);
        // A relay reports under its own name; the registry adds it to its
        // character's entry.
        let report = RegistryReport {
            character: core.name.clone(),
            subscribers: core.hub.subscriber_count() as u64,
            topics: core.hub.filter_counts(),
            version: core.report_version,
            lease_ms: core.config.registry_lease_ms,
        };
        let listed = report.subscribers > 0;
        let body =
            serde_json::to_string(&report).map_err(|e| worker::Error::RustError(e.to_string()))?;
        (body, listed)
    };
    registry::post_report(env, path::REPORT, &body).await?;
    if let Some(core) = shared.borrow().as_ref() {
        let lease_ms = core.config.registry_lease_ms;
        core.store
            .record_report(listed, super::now_ms(), lease_ms)?;
    }
    Ok(())
}

/// Moves full pages beyond the newest `HISTORY_LIMIT` commands to KV, one
/// page at a time: write the page, then delete its rows.
async fn archive_pages(shared: &Shared, env: &Env) -> Result<()> {
    loop {
        let next = {
            let guard = shared.borrow();
            let Some(core) = guard.as_ref() else {
                return Ok(());
            };
            let limit = core.config.history_limit;
            match next_page_ready(core.archived_through, core.hub.seq(), limit, core.page_size) {
                None => None,
                Some(_) if core.config.fail_archive => {
                    return Err(worker::Error::RustError(
                        "archive writes fail (TEST_FAIL_ARCHIVE)".into(),
                    ));
                }
                Some((from, to)) => {
                    let rows = core.store.range(from, to)?;
                    let key = page_key(
                        core.hub.character(),
                        core.hub.epoch(),
                        page_of(from, core.page_size),
                    );
                    Some((key, encode_page(&rows), to))
                }
            }
        };
        let Some((key, body, to)) = next else {
            return Ok(());
        };
        kv::put_page(env, &key, body).await?;
        let mut guard = shared.borrow_mut();
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        core.store.delete_through(to)?;
        core.archived_through = to;
    }
}
