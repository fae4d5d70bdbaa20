//! A relay object's place in its character's stream, sans I/O. A relay
//! holds sockets and forwards what the character's own object (the owner)
//! stored: it never sequences or stores commands. It remembers the epoch it
//! follows and the last seq it applied (the shell persists both, so a relay
//! that wakes after eviction knows its place), and the newest applied rows
//! in a bounded ring ([`RELAY_RING_ROWS`]) for resumes of its sockets.
//!
//! Every feed from the owner says "these are all rows after `after`":
//! * a different epoch (or a gap history no longer covers, `lost`) restarts
//!   the stream at `after`; sockets held are closed with 1011 (resume);
//! * a gap (`after` past the last applied seq) is skipped over when the
//!   relay holds no sockets (nobody would miss anything); otherwise nothing
//!   is applied and the answer's `last` makes the owner send from there;
//! * rows at or below the last applied seq are duplicates and skipped.
//!
//! Resumes: [`Follower::replay`] answers from the ring when it covers
//! `since`; otherwise the owner reads its history (bounded like any resume)
//! and [`Follower::extend`] joins that read to the rows applied since.

use std::collections::VecDeque;

use crate::catalogue::RELAY_RING_ROWS;
use crate::hub::{Resume, StoredCommand};
use crate::topic::TopicFilter;

/// What a feed leads to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeedPlan {
    /// The stream restarts: (epoch, seq) for the hub's `Resync`.
    pub resync: Option<(String, u64)>,
    /// Rows to deliver, in seq order, each after the last applied.
    pub apply: Vec<StoredCommand>,
}

/// The relay's place in the stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Follower {
    epoch: String,
    last: u64,
    /// Applied rows, oldest first: every seq in (`base`, `last`] is here.
    ring: VecDeque<StoredCommand>,
    base: u64,
    cap: usize,
}

impl Follower {
    /// A relay at `last` in `epoch` (empty when it never followed one).
    pub fn new(epoch: String, last: u64) -> Self {
        Self::with_capacity(epoch, last, RELAY_RING_ROWS)
    }

    pub fn with_capacity(epoch: String, last: u64, cap: usize) -> Self {
        Self {
            epoch,
            last,
            ring: VecDeque::new(),
            base: last,
            cap: cap.max(1),
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn last(&self) -> u64 {
        self.last
    }

    /// The rows applied after `at`, oldest first, when the ring still holds
    /// them all (a retained snapshot read at `at` is brought up to date with
    /// them, `retained::RetainedSet::adopt`); `None` when it does not.
    pub fn applied_after(&self, at: u64) -> Option<Vec<StoredCommand>> {
        (at >= self.base).then(|| self.ring.iter().filter(|r| r.seq > at).cloned().collect())
    }

    /// Restarts the stream at `at` in `epoch`; the hub moves with it.
    fn restart(&mut self, epoch: &str, at: u64) -> Option<(String, u64)> {
        self.epoch = epoch.to_string();
        self.last = at;
        self.base = at;
        self.ring.clear();
        Some((self.epoch.clone(), at))
    }

    /// A feed: all rows after `after` in `epoch` (contiguous from there, or
    /// starting past a gap when `lost`). `holding`: the relay holds sockets
    /// or has a subscribe in progress.
    pub fn feed(
        &mut self,
        epoch: &str,
        after: u64,
        lost: bool,
        rows: Vec<StoredCommand>,
        holding: bool,
    ) -> FeedPlan {
        let mut plan = FeedPlan::default();
        if epoch != self.epoch || (after > self.last && (lost || !holding)) {
            plan.resync = self.restart(epoch, after);
        } else if after > self.last {
            // A gap the owner can fill: apply nothing, answer `last`.
            return plan;
        }
        for row in rows {
            if row.seq <= self.last {
                continue;
            }
            self.last = row.seq;
            self.ring.push_back(row.clone());
            if self.ring.len() > self.cap {
                if let Some(old) = self.ring.pop_front() {
                    self.base = old.seq;
                }
            }
            plan.apply.push(row);
        }
        plan
    }

    /// A subscribe forwarded by the owner, whose stream is at `seq` in
    /// `epoch`: a relay that follows another epoch, or that is behind and
    /// holds nobody, moves there first (a resync for the hub).
    pub fn subscribe(&mut self, epoch: &str, seq: u64, holding: bool) -> Option<(String, u64)> {
        if epoch != self.epoch || (seq > self.last && !holding) {
            return self.restart(epoch, seq);
        }
        None
    }

    /// A resume answered from the ring alone: `None` when the ring does not
    /// cover `since` (or the client names another epoch); the owner's
    /// history read is needed then.
    pub fn replay(
        &self,
        since: u64,
        client_epoch: Option<&str>,
        filters: &[TopicFilter],
        limit: usize,
    ) -> Option<Resume> {
        if client_epoch.is_some_and(|e| e != self.epoch) || since < self.base || since > self.last {
            return None;
        }
        let mut resume = Resume {
            since,
            rows: Vec::new(),
            complete: true,
            next_since: None,
        };
        self.append(&mut resume, since, filters, limit);
        Some(resume)
    }

    /// Joins the owner's read for a resume (which covered every seq through
    /// `covered` unless it was cut, `next_since`) to the rows this relay
    /// applied since, ending at the last applied seq: rows beyond it come
    /// live. `limit` bounds the whole replay.
    pub fn extend(
        &self,
        mut resume: Resume,
        covered: u64,
        filters: &[TopicFilter],
        limit: usize,
    ) -> Resume {
        resume.rows.retain(|r| r.seq <= self.last);
        match resume.next_since {
            Some(n) if n >= self.last => resume.next_since = None,
            Some(_) => return resume,
            None => {}
        }
        if covered < self.last {
            if covered < self.base {
                // Applied rows between the read and now left the ring.
                resume.complete = false;
            }
            self.append(&mut resume, covered.max(self.base), filters, limit);
        }
        resume
    }

    /// Ring rows after `after` matching `filters` onto `resume`, up to
    /// `limit` rows in all; cut there with `next_since` when more follow.
    fn append(&self, resume: &mut Resume, after: u64, filters: &[TopicFilter], limit: usize) {
        let limit = limit.max(1);
        let mut rows = self.ring.iter().filter(|r| r.seq > after).peekable();
        while let Some(row) = rows.next() {
            if !filters.iter().any(|f| f.matches(&row.command.topic)) {
                continue;
            }
            resume.rows.push(row.clone());
            if resume.rows.len() >= limit {
                if rows.peek().is_some() {
                    resume.next_since = Some(row.seq);
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_command;

    fn row(seq: u64, topic: &str) -> StoredCommand {
        StoredCommand {
            seq,
            ts: seq,
            command: parse_command(&serde_json::json!({"topic": topic, "name": "n"})).unwrap(),
        }
    }
    fn rows(seqs: std::ops::RangeInclusive<u64>) -> Vec<StoredCommand> {
        seqs.map(|s| row(s, "face")).collect()
    }
    fn seqs(rows: &[StoredCommand]) -> Vec<u64> {
        rows.iter().map(|r| r.seq).collect()
    }
    fn all() -> Vec<TopicFilter> {
        vec![TopicFilter::parse(">").unwrap()]
    }

    /// (epoch, after, lost, rows, holding) -> (resync, applied, last after).
    #[test]
    fn feeds_apply_in_order_once_and_gaps_are_filled_or_skipped() {
        type Case = (&'static str, u64, bool, std::ops::RangeInclusive<u64>, bool);
        type Want = (Option<(&'static str, u64)>, Vec<u64>, u64);
        let cases: Vec<(Case, Want)> = vec![
            // In order.
            (("e", 10, false, 11..=12, true), (None, vec![11, 12], 12)),
            // Duplicates (a re-sent feed overlapping) are skipped.
            (("e", 8, false, 9..=11, true), (None, vec![11], 11)),
            // A gap while holding sockets: nothing applied, answer 10.
            (("e", 12, false, 13..=13, true), (None, vec![], 10)),
            // A gap with nobody held: skip ahead.
            (
                ("e", 12, false, 13..=13, false),
                (Some(("e", 12)), vec![13], 13),
            ),
            // A gap history no longer covers: restart there even when holding.
            (
                ("e", 40, true, 41..=41, true),
                (Some(("e", 40)), vec![41], 41),
            ),
            // A new epoch restarts at `after`.
            (("f", 2, false, 3..=3, true), (Some(("f", 2)), vec![3], 3)),
            // Behind the relay (a row it already applied): nothing to do.
            (("e", 5, false, 1..=1, true), (None, vec![], 10)),
        ];
        for (i, ((epoch, after, lost, range, holding), (resync, applied, last))) in
            cases.into_iter().enumerate()
        {
            let mut f = Follower::new("e".into(), 10);
            let plan = f.feed(epoch, after, lost, rows(range), holding);
            let want = resync.map(|(e, s)| (e.to_string(), s));
            assert_eq!(plan.resync, want, "case {i}");
            assert_eq!(seqs(&plan.apply), applied, "case {i}");
            assert_eq!(f.last(), last, "case {i}");
        }
    }

    #[test]
    fn a_fresh_relay_adopts_the_owner_stream_on_subscribe() {
        let mut f = Follower::new(String::new(), 0);
        assert_eq!(f.subscribe("e", 30, false), Some(("e".into(), 30)));
        assert_eq!((f.epoch(), f.last()), ("e", 30));
        // Behind while holding: the feeds catch it up instead.
        assert_eq!(f.subscribe("e", 35, true), None);
        // Ahead of the forwarded seq (fed meanwhile): stays.
        assert_eq!(f.subscribe("e", 20, false), None);
        assert_eq!(f.last(), 30);
    }

    #[test]
    fn the_ring_answers_resumes_it_covers_within_the_limit() {
        let mut f = Follower::with_capacity("e".into(), 10, 5);
        f.feed("e", 10, false, rows(11..=17), true);
        // Ring holds 13..=17 (base 12).
        assert_eq!(f.replay(11, None, &all(), 100), None, "older than the ring");
        assert_eq!(f.replay(12, Some("x"), &all(), 100), None, "other epoch");
        let r = f.replay(12, Some("e"), &all(), 100).unwrap();
        assert_eq!(
            (seqs(&r.rows), r.complete, r.next_since),
            (vec![13, 14, 15, 16, 17], true, None)
        );
        let r = f.replay(12, None, &all(), 2).unwrap();
        assert_eq!((seqs(&r.rows), r.next_since), (vec![13, 14], Some(14)));
        let r = f.replay(15, None, &all(), 2).unwrap();
        assert_eq!((seqs(&r.rows), r.next_since), (vec![16, 17], None));
        let body = vec![TopicFilter::parse("body").unwrap()];
        let r = f.replay(12, None, &body, 2).unwrap();
        assert!(r.rows.is_empty() && r.complete);
        assert_eq!(f.replay(17, None, &all(), 2).unwrap().rows, vec![]);
        assert_eq!(
            f.replay(18, None, &all(), 2),
            None,
            "from the future: the owner says"
        );
    }

    #[test]
    fn an_owner_read_is_joined_to_the_rows_applied_since() {
        let mut f = Follower::with_capacity("e".into(), 10, 5);
        f.feed("e", 10, false, rows(11..=14), true);
        let read = |seqs: std::ops::RangeInclusive<u64>, next: Option<u64>| Resume {
            since: 2,
            rows: rows(seqs),
            complete: true,
            next_since: next,
        };
        // The owner read through 12; 13 and 14 come from the ring.
        let r = f.extend(read(3..=12, None), 12, &all(), 100);
        assert_eq!(seqs(&r.rows), (3..=14).collect::<Vec<_>>());
        assert!(r.complete && r.next_since.is_none());
        // The owner is ahead of the relay: its rows past 14 come live.
        let r = f.extend(read(3..=16, None), 16, &all(), 100);
        assert_eq!(seqs(&r.rows), (3..=14).collect::<Vec<_>>());
        // Cut by the limit before the relay's last: stays cut.
        let r = f.extend(read(3..=5, Some(5)), 16, &all(), 3);
        assert_eq!((seqs(&r.rows), r.next_since), (vec![3, 4, 5], Some(5)));
        // The limit bounds the joined replay.
        let r = f.extend(read(3..=12, None), 12, &all(), 11);
        assert_eq!((r.rows.len(), r.next_since), (11, Some(13)));
        // The rows between the read and now left the ring: not complete.
        f.feed("e", 14, false, rows(15..=20), true);
        let r = f.extend(read(3..=12, None), 12, &all(), 100);
        assert!(!r.complete);
    }
}
