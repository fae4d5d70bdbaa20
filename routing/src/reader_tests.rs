//! Tests of the history reader, driven against a small in-memory KV archive
//! and SQLite table whose archive task can move pages between steps.

use super::*;
use crate::protocol::Command;
use crate::topic::{CommandName, Topic};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// Seq % 3 picks the topic: 0 `face`, 1 `body.arms`, 2 `main`.
const TOPICS: [&str; 3] = ["face", "body.arms", "main"];

fn row(seq: u64) -> StoredCommand {
    StoredCommand {
        seq,
        ts: 1_000 + seq,
        command: Command {
            topic: Topic::parse(TOPICS[(seq % 3) as usize]).unwrap(),
            name: CommandName::parse("smile").unwrap(),
            params: serde_json::Map::new(),
            duration_ms: None,
            id: None,
            at: None,
            retain: false,
        },
    }
}

fn filters(list: &[&str]) -> Vec<TopicFilter> {
    list.iter()
        .map(|f| TopicFilter::parse(f).unwrap())
        .collect()
}

fn seqs(o: &ReadOutcome) -> Vec<u64> {
    o.rows.iter().map(|r| r.seq).collect()
}

/// The storage of one character: KV pages and SQLite rows.
struct World {
    size: u64,
    latest: u64,
    mark: u64,
    /// page -> contents; `None` is an unreadable page, no entry a missing one.
    kv: BTreeMap<u64, Option<Vec<StoredCommand>>>,
    sqlite: BTreeMap<u64, StoredCommand>,
    /// Most rows one SQLite read returns, to exercise paging.
    answer_cap: u64,
    /// Global step number -> archive through this seq before that step.
    moves: BTreeMap<usize, u64>,
    step: usize,
    log: Vec<Need>,
}

impl World {
    /// Seqs 1..=latest, the first `pages` pages archived.
    fn new(latest: u64, pages: u64, size: u64) -> World {
        let mut w = World {
            size,
            latest,
            mark: 0,
            kv: BTreeMap::new(),
            sqlite: (1..=latest).map(|s| (s, row(s))).collect(),
            answer_cap: u64::MAX,
            moves: BTreeMap::new(),
            step: 0,
            log: Vec::new(),
        };
        w.archive_through(pages * size);
        assert_eq!(w.mark, pages * size, "archived pages must be full");
        w
    }

    /// What the archive task does: move whole pages out of SQLite, with
    /// whatever rows SQLite still holds for them.
    fn archive_through(&mut self, to: u64) {
        while self.mark + self.size <= to.min(self.latest) {
            let (lo, hi) = page_bounds(page_of(self.mark + 1, self.size), self.size);
            let rows: Vec<StoredCommand> =
                (lo..=hi).filter_map(|s| self.sqlite.remove(&s)).collect();
            self.kv.insert(page_of(lo, self.size), Some(rows));
            self.mark = hi;
        }
    }

    fn unreadable_page(&mut self, page: u64) {
        self.kv.insert(page, None);
    }

    fn missing_page(&mut self, page: u64) {
        self.kv.remove(&page);
    }

    /// A row lost wherever it is (hard cap, a row that no longer decodes).
    fn lose_row(&mut self, seq: u64) {
        self.sqlite.remove(&seq);
        for rows in self.kv.values_mut().flatten() {
            rows.retain(|r| r.seq != seq);
        }
    }

    fn spec(&self, since: u64) -> ReadSpec {
        ReadSpec {
            since,
            client_epoch: None,
            epoch: "e1".into(),
            latest_seq: self.latest,
            archived_through: self.mark,
            page_size: self.size,
            limit: 1_000,
            max_pages: 1_000,
            filters: vec![TopicFilter::all()],
        }
    }

    /// Drives a reader until it is done, as the Worker shell would.
    fn run(&mut self, spec: ReadSpec) -> ReadOutcome {
        let mut reader = Reader::new(spec);
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 100_000, "the read does not end");
            if let Some(to) = self.moves.remove(&self.step) {
                self.archive_through(to);
            }
            self.step += 1;
            let need = reader.next();
            assert_eq!(need, reader.next(), "next() is stable");
            self.log.push(need);
            match need {
                Need::Done => return reader.finish(),
                Need::Pages { first, last } => {
                    assert!(first <= last && last - first < PAGES_PER_STEP, "{need:?}");
                    let pages = (first..=last)
                        .map(|p| (p, self.kv.get(&p).cloned().flatten()))
                        .collect();
                    reader.feed_pages(pages);
                }
                Need::Rows { after, limit } => {
                    let rows = self
                        .sqlite
                        .range(after + 1..)
                        .take(limit.min(self.answer_cap) as usize)
                        .map(|(_, r)| r.clone())
                        .collect();
                    reader.feed_rows(rows, self.mark);
                }
            }
        }
    }

    fn pages_fetched(&self) -> u64 {
        self.log
            .iter()
            .map(|n| match n {
                Need::Pages { first, last } => last - first + 1,
                _ => 0,
            })
            .sum()
    }

    fn page_steps(&self) -> Vec<(u64, u64)> {
        self.log
            .iter()
            .filter_map(|n| match n {
                Need::Pages { first, last } => Some((*first, *last)),
                _ => None,
            })
            .collect()
    }
}

fn range(from: u64, to: u64) -> Vec<u64> {
    (from..=to).collect()
}

// ---- positions of `since` ----

#[test]
fn since_zero_reads_the_archive_then_sqlite() {
    let mut w = World::new(10, 2, 3);
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), range(1, 10));
    assert!(o.complete);
    assert_eq!(o.next_since, None);
    assert_eq!(w.log[0], Need::Pages { first: 0, last: 1 });
    assert_eq!(
        w.log[1],
        Need::Rows {
            after: 6,
            limit: ROWS_PER_STEP
        }
    );
}

#[test]
fn since_inside_a_page_reads_from_the_next_seq() {
    let mut w = World::new(10, 2, 3);
    let o = w.run(w.spec(4));
    assert_eq!(seqs(&o), range(5, 10));
    assert!(o.complete);
    assert_eq!(w.log[0], Need::Pages { first: 1, last: 1 });
}

#[test]
fn since_past_the_archive_reads_only_sqlite() {
    for since in [6, 8] {
        let mut w = World::new(10, 2, 3);
        let o = w.run(w.spec(since));
        assert_eq!(seqs(&o), range(since + 1, 10));
        assert!(o.complete);
        assert_eq!(w.pages_fetched(), 0);
    }
}

#[test]
fn since_at_latest_is_complete_and_empty() {
    let mut w = World::new(10, 2, 3);
    let o = w.run(w.spec(10));
    assert!(o.rows.is_empty());
    assert!(o.complete);
    assert_eq!(o.next_since, None);
}

#[test]
fn since_beyond_latest_is_incomplete_and_reads_nothing() {
    let mut w = World::new(10, 2, 3);
    let o = w.run(w.spec(11));
    assert!(o.rows.is_empty());
    assert!(!o.complete);
    assert_eq!(o.next_since, None);
    assert_eq!(w.log, vec![Need::Done]);
}

#[test]
fn an_empty_history_is_complete() {
    let mut w = World::new(0, 0, 3);
    let o = w.run(w.spec(0));
    assert!(o.rows.is_empty());
    assert!(o.complete);
}

// ---- holes ----

/// `history` used to skip a missing archive page silently.
#[test]
fn regression_history_skipped_a_missing_page() {
    let mut w = World::new(10, 2, 3);
    w.missing_page(0);
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), range(4, 10));
    assert!(!o.complete);
}

#[test]
fn an_unreadable_page_is_incomplete() {
    let mut w = World::new(10, 2, 3);
    w.unreadable_page(1);
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), [1, 2, 3, 7, 8, 9, 10]);
    assert!(!o.complete);
    // A hole before `since` does not count.
    let o = w.run(w.spec(6));
    assert!(o.complete);
}

#[test]
fn a_page_lacking_a_row_is_incomplete() {
    let mut w = World::new(10, 2, 3);
    w.lose_row(2);
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), [1, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert!(!o.complete);
    assert!(w.run(w.spec(2)).complete);
    // The last seq of a page.
    let mut w = World::new(10, 2, 3);
    w.lose_row(6);
    assert!(!w.run(w.spec(4)).complete);
}

#[test]
fn a_hard_cap_gap_between_archive_and_sqlite_is_incomplete() {
    let mut w = World::new(10, 2, 3);
    w.lose_row(7);
    w.lose_row(8);
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), [1, 2, 3, 4, 5, 6, 9, 10]);
    assert!(!o.complete);
    assert!(!w.run(w.spec(6)).complete);
    assert!(w.run(w.spec(8)).complete);
}

#[test]
fn a_hard_cap_gap_without_an_archive_is_incomplete() {
    let mut w = World::new(10, 0, 3);
    for s in 1..=4 {
        w.lose_row(s);
    }
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), range(5, 10));
    assert!(!o.complete);
    assert!(w.run(w.spec(4)).complete);
}

#[test]
fn a_gap_inside_sqlite_is_incomplete() {
    let mut w = World::new(10, 2, 3);
    w.lose_row(9);
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), [1, 2, 3, 4, 5, 6, 7, 8, 10]);
    assert!(!o.complete);
}

#[test]
fn lost_newest_rows_are_incomplete() {
    let mut w = World::new(10, 2, 3);
    w.lose_row(10);
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), range(1, 9));
    assert!(!o.complete);
    assert_eq!(o.next_since, None);
}

// ---- epochs ----

#[test]
fn a_changed_epoch_replays_every_sqlite_row_and_is_incomplete() {
    for since in [0, 3, 8, 100] {
        let mut w = World::new(10, 2, 3);
        let o = w.run(ReadSpec {
            client_epoch: Some("old".into()),
            ..w.spec(since)
        });
        assert_eq!(seqs(&o), range(7, 10), "since {since}");
        assert!(!o.complete);
        assert_eq!(o.next_since, None);
        assert_eq!(w.pages_fetched(), 0);
    }
}

#[test]
fn a_changed_epoch_with_a_limit_says_where_to_go_on() {
    let mut w = World::new(10, 2, 3);
    let o = w.run(ReadSpec {
        client_epoch: Some("old".into()),
        limit: 2,
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), [7, 8]);
    assert!(!o.complete);
    assert_eq!(o.next_since, Some(8));
}

#[test]
fn naming_our_epoch_is_the_same_as_naming_none() {
    let mut w = World::new(10, 2, 3);
    let o = w.run(ReadSpec {
        client_epoch: Some("e1".into()),
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), range(1, 10));
    assert!(o.complete);
}

// ---- the archive moving during a read ----

#[test]
fn rows_archived_during_the_page_read_are_read_from_kv() {
    let mut w = World::new(20, 1, 3);
    // After the first Pages step, pages 1 and 2 (seqs 4..=9) move to KV.
    w.moves.insert(1, 9);
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), range(1, 20));
    assert!(o.complete);
    assert_eq!(
        w.log[..4],
        [
            Need::Pages { first: 0, last: 0 },
            Need::Rows {
                after: 3,
                limit: ROWS_PER_STEP
            },
            Need::Pages { first: 1, last: 2 },
            Need::Rows {
                after: 9,
                limit: ROWS_PER_STEP
            },
        ]
    );
}

#[test]
fn rows_archived_between_rows_steps_are_read_from_kv() {
    let mut w = World::new(12, 0, 3);
    w.answer_cap = 2;
    // Rows 1..=4 are read two at a time, then 1..=6 move to KV.
    w.moves.insert(2, 6);
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), range(1, 12));
    assert!(o.complete);
    assert_eq!(w.page_steps(), [(1, 1)]);
}

#[test]
fn rows_archived_during_a_changed_epoch_replay_are_not_skipped() {
    let mut w = World::new(12, 1, 3);
    w.answer_cap = 2;
    w.moves.insert(1, 9);
    let o = w.run(ReadSpec {
        client_epoch: Some("old".into()),
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), range(4, 12));
    assert!(!o.complete);
}

#[test]
fn archived_rows_with_a_hole_stay_incomplete() {
    let mut w = World::new(12, 0, 3);
    w.lose_row(5);
    w.answer_cap = 2;
    w.moves.insert(2, 6);
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12]);
    assert!(!o.complete);
}

#[test]
fn a_mark_told_before_reading_turns_rows_into_pages() {
    let w = World::new(10, 0, 3);
    let mut r = Reader::new(w.spec(0));
    assert_eq!(
        r.next(),
        Need::Rows {
            after: 0,
            limit: ROWS_PER_STEP
        }
    );
    r.update_archived_through(6);
    assert_eq!(r.next(), Need::Pages { first: 0, last: 1 });
    r.update_archived_through(3); // the mark never goes back
    assert_eq!(r.next(), Need::Pages { first: 0, last: 1 });
}

// ---- limit and max_pages ----

#[test]
fn a_limit_cut_sets_next_since_and_the_continuation_reads_the_rest() {
    let mut w = World::new(10, 2, 3);
    let mut since = 0;
    let mut got = Vec::new();
    let mut cuts = Vec::new();
    loop {
        let o = w.run(ReadSpec {
            limit: 4,
            ..w.spec(since)
        });
        assert!(o.complete);
        got.extend(seqs(&o));
        match o.next_since {
            Some(s) => {
                assert_eq!(Some(s), o.rows.last().map(|r| r.seq));
                cuts.push(s);
                since = s;
            }
            None => break,
        }
    }
    assert_eq!(got, range(1, 10));
    assert_eq!(cuts, [4, 8]);
}

#[test]
fn a_limit_reached_on_the_newest_row_has_no_next_since() {
    let mut w = World::new(10, 2, 3);
    let o = w.run(ReadSpec {
        limit: 10,
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), range(1, 10));
    assert!(o.complete);
    assert_eq!(o.next_since, None);
    // The probe for a row after the last one.
    assert_eq!(
        w.log[w.log.len() - 2],
        Need::Rows {
            after: 10,
            limit: 1
        }
    );
    // Everything archived: the limit is reached in KV, then the probe.
    let mut w = World::new(6, 2, 3);
    let o = w.run(ReadSpec {
        limit: 6,
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), range(1, 6));
    assert_eq!(o.next_since, None);
    assert!(o.complete);
}

#[test]
fn a_probe_that_finds_a_row_cuts_the_read() {
    let mut w = World::new(6, 0, 3);
    w.answer_cap = 3;
    let o = w.run(ReadSpec {
        limit: 3,
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), [1, 2, 3]);
    assert_eq!(o.next_since, Some(3));
    assert!(o.complete);
    // A mark that passes the cursor during the probe cuts it too.
    let mut r = Reader::new(ReadSpec {
        limit: 3,
        ..w.spec(0)
    });
    r.feed_rows((1..=3).map(row).collect(), 0);
    assert_eq!(r.next(), Need::Rows { after: 3, limit: 1 });
    r.update_archived_through(6);
    assert_eq!(r.next(), Need::Done);
    assert_eq!(r.finish().next_since, Some(3));
}

#[test]
fn a_limit_cut_inside_the_archive_needs_no_probe() {
    let mut w = World::new(10, 2, 3);
    let o = w.run(ReadSpec {
        limit: 2,
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), [1, 2]);
    assert_eq!(o.next_since, Some(2));
    assert_eq!(w.log, [Need::Pages { first: 0, last: 1 }, Need::Done]);
}

#[test]
fn max_pages_cuts_the_read_with_next_since() {
    let mut w = World::new(30, 10, 3);
    let o = w.run(ReadSpec {
        max_pages: 4,
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), range(1, 12));
    assert!(o.complete);
    assert_eq!(o.next_since, Some(12));
    assert_eq!(w.pages_fetched(), 4);
    // Starting mid-page: the partial page counts as one.
    let mut w = World::new(30, 10, 3);
    let o = w.run(ReadSpec {
        max_pages: 2,
        ..w.spec(4)
    });
    assert_eq!(seqs(&o), range(5, 9));
    assert_eq!(o.next_since, Some(9));
}

#[test]
fn max_pages_counts_pages_asked_after_the_mark_moved() {
    let mut w = World::new(30, 2, 3);
    w.moves.insert(1, 27);
    let o = w.run(ReadSpec {
        max_pages: 5,
        ..w.spec(0)
    });
    assert_eq!(w.pages_fetched(), 5);
    assert_eq!(seqs(&o), range(1, 15));
    assert_eq!(o.next_since, Some(15));
}

#[test]
fn pages_are_asked_at_most_twenty_at_a_time() {
    let mut w = World::new(50, 50, 1);
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), range(1, 50));
    assert_eq!(w.page_steps(), [(0, 19), (20, 39), (40, 49)]);
}

#[test]
fn a_filter_matching_nothing_reads_at_most_max_pages() {
    let mut w = World::new(300, 100, 3);
    let o = w.run(ReadSpec {
        max_pages: 5,
        filters: filters(&["nothing"]),
        ..w.spec(0)
    });
    assert!(o.rows.is_empty());
    assert!(o.complete);
    assert_eq!(o.next_since, Some(15));
    assert_eq!(w.pages_fetched(), 5);
}

#[test]
fn filters_select_rows_and_count_toward_limit() {
    let mut w = World::new(10, 2, 3);
    let o = w.run(ReadSpec {
        filters: filters(&["face"]),
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), [3, 6, 9]);
    assert!(o.complete);
    let o = w.run(ReadSpec {
        filters: filters(&["face"]),
        limit: 2,
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), [3, 6]);
    assert_eq!(o.next_since, Some(6));
    let o = w.run(ReadSpec {
        filters: filters(&["body.*", "main"]),
        ..w.spec(5)
    });
    assert_eq!(seqs(&o), [7, 8, 10]);
    let o = w.run(ReadSpec {
        filters: Vec::new(),
        ..w.spec(0)
    });
    assert!(o.rows.is_empty());
    assert!(o.complete);
}

#[test]
fn zero_limit_and_zero_max_pages_still_move_on() {
    let mut w = World::new(10, 2, 3);
    let o = w.run(ReadSpec {
        limit: 0,
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), [1]);
    assert_eq!(o.next_since, Some(1));
    let o = w.run(ReadSpec {
        max_pages: 0,
        ..w.spec(0)
    });
    assert_eq!(seqs(&o), [1, 2, 3]);
    assert_eq!(o.next_since, Some(3));
}

// ---- what the shell may get wrong ----

#[test]
fn rows_are_paged_until_an_empty_answer() {
    let mut w = World::new(9, 0, 3);
    w.answer_cap = 2;
    let o = w.run(w.spec(0));
    assert_eq!(seqs(&o), range(1, 9));
    let afters: Vec<u64> = w
        .log
        .iter()
        .filter_map(|n| match n {
            Need::Rows { after, .. } => Some(*after),
            _ => None,
        })
        .collect();
    assert_eq!(afters, [0, 2, 4, 6, 8, 9]);
}

#[test]
fn pages_not_given_count_as_missing() {
    let w = World::new(10, 2, 3);
    let mut r = Reader::new(w.spec(0));
    assert_eq!(r.next(), Need::Pages { first: 0, last: 1 });
    // Page 1 left out; page 7 was not asked for.
    r.feed_pages(vec![
        (0, Some((1..=3).map(row).collect())),
        (7, Some(vec![row(22)])),
    ]);
    r.feed_rows((7..=10).map(row).collect(), 6);
    r.feed_rows(Vec::new(), 6);
    assert_eq!(r.next(), Need::Done);
    let o = r.finish();
    assert_eq!(seqs(&o), [1, 2, 3, 7, 8, 9, 10]);
    assert!(!o.complete);
}

#[test]
fn stale_or_repeated_rows_are_dropped_and_end_the_read() {
    let w = World::new(10, 0, 3);
    let mut r = Reader::new(w.spec(5));
    r.feed_rows(vec![row(6), row(6), row(7), row(3)], 0);
    r.feed_rows(vec![row(4), row(7)], 0);
    assert_eq!(r.next(), Need::Done);
    let o = r.finish();
    assert_eq!(seqs(&o), [6, 7]);
    assert!(!o.complete, "8..=10 were never given");
}

#[test]
fn a_feed_that_was_not_asked_for_changes_nothing() {
    let w = World::new(10, 0, 3);
    let mut r = Reader::new(w.spec(0));
    r.feed_pages(vec![(0, Some(vec![row(1)]))]);
    assert_eq!(
        r.next(),
        Need::Rows {
            after: 0,
            limit: ROWS_PER_STEP
        }
    );
    let mut r = Reader::new(w.spec(11));
    r.feed_rows(vec![row(12)], 0);
    assert!(r.finish().rows.is_empty());
}

#[test]
fn finishing_early_counts_as_cut_short() {
    let w = World::new(10, 2, 3);
    let mut r = Reader::new(w.spec(0));
    r.feed_pages(vec![
        (0, Some((1..=3).map(row).collect())),
        (1, Some((4..=6).map(row).collect())),
    ]);
    let o = r.finish();
    assert_eq!(seqs(&o), range(1, 6));
    assert!(o.complete);
    assert_eq!(o.next_since, Some(6));
}

// ---- against a model ----

#[derive(Clone, Debug)]
struct Case {
    latest: u64,
    size: u64,
    pages: u64,
    since: u64,
    limit: usize,
    filters: Vec<&'static str>,
    changed_epoch: bool,
    lost_pages: Vec<u64>,
    lost_rows: Vec<u64>,
    moves: Vec<(usize, u64)>,
    answer_cap: u64,
}

fn case() -> impl Strategy<Value = Case> {
    let filter_sets = vec![
        vec![">"],
        vec!["face"],
        vec!["body.*", "main"],
        vec!["nothing"],
        vec!["face", "main"],
    ];
    (0..40u64, 1..5u64)
        .prop_flat_map(move |(latest, size)| {
            let full = latest / size;
            (
                (
                    Just(latest),
                    Just(size),
                    0..=full,
                    0..=latest + 2,
                    1..25usize,
                ),
                prop::sample::select(filter_sets.clone()),
                prop::bool::weighted(0.2),
                prop::collection::vec(0..=full, 0..3),
                prop::collection::vec(1..=latest.max(1), 0..4),
                prop::collection::vec((0..30usize, 0..=latest), 0..4),
                1..6u64,
            )
        })
        .prop_map(
            |(
                (latest, size, pages, since, limit),
                filters,
                changed_epoch,
                lost_pages,
                lost_rows,
                moves,
                answer_cap,
            )| Case {
                latest,
                size,
                pages,
                since,
                limit,
                filters,
                changed_epoch,
                lost_pages,
                lost_rows,
                moves,
                answer_cap,
            },
        )
}

impl Case {
    /// The world, and the seqs lost in it.
    fn world(&self) -> (World, BTreeSet<u64>) {
        let mut w = World::new(self.latest, self.pages, self.size);
        w.answer_cap = self.answer_cap;
        w.moves = self.moves.iter().copied().collect();
        let mut lost = BTreeSet::new();
        for (i, &p) in self.lost_pages.iter().enumerate() {
            if p < self.pages {
                if i % 2 == 0 {
                    w.missing_page(p);
                } else {
                    w.unreadable_page(p);
                }
                let (lo, hi) = page_bounds(p, self.size);
                lost.extend(lo..=hi);
            }
        }
        for &s in &self.lost_rows {
            if s <= self.latest {
                w.lose_row(s);
                lost.insert(s);
            }
        }
        (w, lost)
    }

    fn matches(&self, seq: u64) -> bool {
        let topic = Topic::parse(TOPICS[(seq % 3) as usize]).unwrap();
        filters(&self.filters).iter().any(|f| f.matches(&topic))
    }

    /// Every surviving matching seq after `from`.
    fn model(&self, from: u64, lost: &BTreeSet<u64>) -> Vec<u64> {
        (from + 1..=self.latest)
            .filter(|s| !lost.contains(s) && self.matches(*s))
            .collect()
    }
}

proptest! {
    #[test]
    fn reader_agrees_with_the_model(c in case()) {
        let (mut w, lost) = c.world();
        let spec = ReadSpec {
            client_epoch: c.changed_epoch.then(|| "old".to_string()),
            limit: c.limit,
            filters: filters(&c.filters),
            ..w.spec(c.since)
        };
        let o = w.run(spec);
        let got = seqs(&o);
        if !c.changed_epoch && c.since > c.latest {
            prop_assert!(got.is_empty());
            prop_assert!(!o.complete);
            prop_assert_eq!(o.next_since, None);
            return Ok(());
        }
        let start = if c.changed_epoch { c.pages * c.size } else { c.since };
        let model = c.model(start, &lost);
        let want: Vec<u64> = model.iter().copied().take(c.limit).collect();
        prop_assert_eq!(&got, &want);
        if model.len() > c.limit {
            prop_assert_eq!(o.next_since, got.last().copied());
        } else if model.len() < c.limit {
            prop_assert_eq!(o.next_since, None);
        } else if o.next_since.is_some() {
            prop_assert_eq!(o.next_since, got.last().copied());
        }
        let end = o.next_since.unwrap_or(c.latest);
        let hole = end > c.since && lost.range(c.since + 1..=end).next().is_some();
        prop_assert_eq!(o.complete, !c.changed_epoch && !hole);
    }

    #[test]
    fn reads_chained_by_next_since_return_everything(
        c in case(),
        max_pages in 1..4u64,
    ) {
        let (mut w, lost) = c.world();
        let first = c.since.min(c.latest);
        let mut since = first;
        let mut got = Vec::new();
        for _ in 0..1_000 {
            let before = w.log.len();
            let o = w.run(ReadSpec {
                limit: c.limit,
                max_pages,
                filters: filters(&c.filters),
                ..w.spec(since)
            });
            let fetched: u64 = w.log[before..]
                .iter()
                .map(|n| match n {
                    Need::Pages { first, last } => last - first + 1,
                    _ => 0,
                })
                .sum();
            prop_assert!(fetched <= max_pages);
            prop_assert!(o.rows.len() <= c.limit);
            let end = o.next_since.unwrap_or(c.latest);
            let hole = end > since && lost.range(since + 1..=end).next().is_some();
            prop_assert_eq!(o.complete, !hole);
            got.extend(seqs(&o));
            match o.next_since {
                Some(next) => {
                    prop_assert!(next > since);
                    since = next;
                }
                None => break,
            }
        }
        prop_assert_eq!(got, c.model(first, &lost));
    }
}
