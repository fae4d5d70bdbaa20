//! Tests of the event-log buffer's policy: when a flush is due, how rows
//! are cut into KV values, the bounds, and the merge of the object's tail
//! with KV across the flush boundary.

use super::*;
use crate::backoff::RETRY_MAX_MS;
use proptest::prelude::*;

const MIN: u64 = 60_000;

fn held(rows: u64, bytes: u64, oldest_ts: u64) -> Held {
    Held {
        rows,
        bytes,
        oldest_ts: Some(oldest_ts),
    }
}

#[test]
fn the_interval_is_clamped_and_defaults_to_30_s() {
    assert_eq!(flush_interval_ms(None), 30_000);
    assert_eq!(flush_interval_ms(Some(45)), 45_000);
    assert_eq!(flush_interval_ms(Some(0)), 1_000);
    assert_eq!(flush_interval_ms(Some(86_400)), 600_000);
}

#[test]
fn an_empty_buffer_needs_no_alarm() {
    let b = LogBuffer::new(30_000, Held::default());
    assert_eq!(b.flush_at(), None);
    assert!(!b.due(u64::MAX));
}

#[test]
fn staged_events_have_the_deadline_they_will_have_once_written() {
    let mut b = LogBuffer::new(30_000, Held::default());
    assert_eq!(b.staged_flush_at(None), None);
    let staged_at = b.staged_flush_at(Some(5_000));
    assert_eq!(staged_at, Some(35_000));
    b.added(5_000, 100);
    assert_eq!(
        b.flush_at(),
        staged_at,
        "the alarm armed for them stays right"
    );
}

/// A quiet character: 100 small events over 20 s cost no flush until one
/// interval after the first, then one.
#[test]
fn a_quiet_character_flushes_once_per_interval() {
    let mut b = LogBuffer::new(30_000, Held::default());
    for i in 0..100 {
        let after = b.added(1_000 + i * 200, 150);
        assert_eq!(
            after,
            AfterAdd {
                flush: false,
                drop_oldest: 0
            }
        );
    }
    assert_eq!(b.flush_at(), Some(31_000), "one interval after the oldest");
    assert!(!b.due(30_999));
    assert!(b.due(31_000));
    b.begin();
    assert_eq!(b.flush_at(), None, "no deadline while flushing");
    // One event arrived during the write.
    b.succeeded(held(1, 150, 31_500));
    assert_eq!(b.flush_at(), Some(61_500));
}

#[test]
fn size_triggers_a_flush_at_once() {
    let mut b = LogBuffer::new(30_000, Held::default());
    let per = 200;
    let needed = LOG_FLUSH_BYTES.div_ceil(per);
    for i in 0..needed - 1 {
        assert!(!b.added(5_000 + i, per).flush);
    }
    assert!(b.added(9_000, per).flush, "the row that reaches the size");
    assert!(b.due(9_000), "due now, not one interval later");
    b.begin();
    assert!(!b.added(9_001, per).flush, "not twice while one runs");
}

#[test]
fn a_failed_flush_keeps_the_rows_and_backs_off() {
    let mut b = LogBuffer::new(30_000, held(10, 1_000, 0));
    b.begin();
    assert_eq!(b.failed(30_000, held(10, 1_000, 0)), 31_000);
    assert_eq!(b.held().rows, 10, "nothing lost");
    assert_eq!(b.flush_at(), Some(31_000));
    b.begin();
    assert_eq!(b.failed(31_000, held(10, 1_000, 0)), 33_000);
    for _ in 0..20 {
        b.begin();
        b.failed(0, held(10, 1_000, 0));
    }
    assert_eq!(b.flush_at(), Some(RETRY_MAX_MS), "capped at a minute");
    // While a retry waits, the size trigger waits too.
    assert!(!b.added(1, LOG_FLUSH_BYTES).flush);
    b.begin();
    b.succeeded(Held::default());
    assert_eq!(b.retry.failures, 0);
    assert_eq!(b.flush_at(), None);
}

#[test]
fn the_bounds_drop_the_oldest_in_chunks() {
    let mut b = LogBuffer::new(30_000, held(LOG_BUFFER_MAX_ROWS, 100, 0));
    assert_eq!(b.added(1, 10).drop_oldest, LOG_DROP_ROWS);
    b.recount(held(LOG_BUFFER_MAX_ROWS - LOG_DROP_ROWS, 100, 0));
    assert_eq!(b.added(2, 10).drop_oldest, 0);
    let mut b = LogBuffer::new(30_000, held(5, LOG_BUFFER_MAX_BYTES, 0));
    assert_eq!(b.added(1, 1).drop_oldest, LOG_DROP_ROWS);
}

#[test]
fn a_restored_buffer_keeps_its_deadline() {
    // After a restart the oldest row's ts sets the deadline, even if overdue.
    let b = LogBuffer::new(30_000, held(3, 450, 1_000));
    assert_eq!(b.flush_at(), Some(31_000));
    assert!(b.due(100_000));
}

#[test]
fn batches_fill_values_up_to_the_size() {
    // "[" + 3 rows of 10 + 2 commas + "]" = 34.
    assert_eq!(batch_len(&[10, 10, 10], 34), 3);
    assert_eq!(batch_len(&[10, 10, 10], 33), 2);
    assert_eq!(batch_len(&[], 10), 0);
    // One row larger than a value goes alone.
    assert_eq!(batch_len(&[100, 1], 10), 1);
    let rows = ["{\"a\":1}", "{\"b\":2}"];
    let body = batch_body(rows);
    assert_eq!(body, "[{\"a\":1},{\"b\":2}]");
    let sizes: Vec<u64> = rows.iter().map(|r| r.len() as u64).collect();
    assert_eq!(batch_len(&sizes, body.len() as u64), 2);
    assert_eq!(batch_body([]), "[]");
}

proptest! {
    /// Cutting any rows into values: every row once, in order, every value
    /// within the size unless it is a single row.
    #[test]
    fn batching_covers_every_row_once(sizes in prop::collection::vec(1u64..400, 0..200), max in 50u64..2_000) {
        let mut at = 0;
        while at < sizes.len() {
            let n = batch_len(&sizes[at..], max);
            prop_assert!(n >= 1);
            let bytes: u64 = 1 + sizes[at..at + n].iter().map(|s| s + 1).sum::<u64>();
            prop_assert!(n == 1 || bytes <= max, "value of {} bytes over {}", bytes, max);
            at += n;
        }
        prop_assert_eq!(at, sizes.len());
    }
}

fn publish(ts: u64, seq: u64) -> LogEvent {
    let mut e = LogEvent::new(ts, "publish", Some("alice"));
    e.detail = Some(serde_json::json!({ "seqs": [seq], "delivered": 1 }));
    e
}

#[test]
fn merge_takes_the_newest_of_both_without_duplicates() {
    // KV holds seqs 1..=5; the tail holds 4..=8 (4 and 5 flushed but still
    // in the tail's grace window).
    let stored: Vec<LogEvent> = (1..=5).rev().map(|s| publish(s * 10, s)).collect();
    let tail: Vec<LogEvent> = (4..=8).rev().map(|s| publish(s * 10, s)).collect();
    let seqs = |events: &[LogEvent]| -> Vec<u64> {
        events
            .iter()
            .map(|e| e.detail.as_ref().unwrap()["seqs"][0].as_u64().unwrap())
            .collect()
    };
    let merged = merge_newest(tail.clone(), stored.clone(), 100);
    assert_eq!(seqs(&merged), [8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(
        seqs(&merge_newest(tail.clone(), stored.clone(), 3)),
        [8, 7, 6]
    );
    assert_eq!(seqs(&merge_newest(tail, stored, 6)), [8, 7, 6, 5, 4, 3]);
}

#[test]
fn merge_keeps_different_events_of_the_same_ms() {
    let a = publish(10, 1);
    let b = publish(10, 2);
    let mut admin = LogEvent::new(10, "admin", Some("alice"));
    admin.detail = Some(serde_json::json!({ "path": "/v1/admin/logs" }));
    let merged = merge_newest(
        vec![b.clone(), a.clone()],
        vec![a.clone(), admin.clone(), b.clone()],
        10,
    );
    assert_eq!(merged.len(), 3);
    assert!(merged.contains(&a) && merged.contains(&b) && merged.contains(&admin));
}

proptest! {
    /// Whatever part of a character's events were flushed (some of them
    /// still in the tail), the merge is exactly the newest `limit` of them.
    #[test]
    fn merge_equals_the_newest_of_the_whole_log(
        n in 0u64..60, flushed in 0u64..60, grace in 0u64..60, limit in 1usize..80,
        dup_ms in prop::collection::vec(any::<bool>(), 60),
    ) {
        // Event i at ms (i - dups so far): some share a ms with the previous one.
        let mut ts = 0u64;
        let all: Vec<LogEvent> = (0..n).map(|i| {
            if !(i > 0 && dup_ms[i as usize]) { ts += 7; }
            publish(ts + MIN, i)
        }).collect();
        let flushed = flushed.min(n) as usize;
        let keep_from = flushed.saturating_sub(grace as usize);
        let stored: Vec<LogEvent> = all[..flushed].iter().rev().cloned().collect();
        let tail: Vec<LogEvent> = all[keep_from..].iter().rev().cloned().collect();
        let merged = merge_newest(tail, stored, limit);
        let mut want: Vec<LogEvent> = all.iter().rev().take(limit).cloned().collect();
        let mut got = merged.clone();
        let key = |e: &LogEvent| (e.ts, e.detail.as_ref().unwrap()["seqs"][0].as_u64().unwrap());
        want.sort_by_key(key);
        got.sort_by_key(key);
        prop_assert_eq!(got, want);
        prop_assert!(merged.windows(2).all(|w| w[0].ts >= w[1].ts), "newest first");
    }
}

#[test]
fn staged_events_wait_unless_the_turn_writes_or_the_stage_is_full() {
    let cases = [
        // (staged, turn_writes, write now)
        (0, false, false),
        (0, true, false),
        (1, false, false),
        (1, true, true),
        (LOG_STAGE_MAX_EVENTS - 1, false, false),
        (LOG_STAGE_MAX_EVENTS, false, true),
        (LOG_STAGE_MAX_EVENTS + 1, false, true),
    ];
    for (staged, writes, now) in cases {
        assert_eq!(
            write_staged_now(staged, writes),
            now,
            "{staged} staged, turn writes: {writes}"
        );
    }
}
