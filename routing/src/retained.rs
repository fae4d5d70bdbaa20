//! Retained commands (contract §8): per topic, the newest command published
//! with `retain: true`. A subscriber that connects without `since` gets the
//! ones its filters match right after `welcome`, marked `retained: true`,
//! in seq order; `GET .../state` lists them all.
//!
//! The character's own object holds the set of record (its SQLite keeps it
//! apart from history, so trimming or archiving never drops one) and
//! numbers its revisions: a clear (`DELETE .../retained/{topic}`) makes a new
//! one. Relays and scene objects keep a copy that must match the place in
//! the stream they deliver from: retained rows they apply update it in seq
//! order, and a copy whose revision is unknown or old is replaced by the
//! owner's snapshot ([`RetainedSet::adopt`]) before a socket is served
//! from it. A restarted stream (new epoch, or a gap) makes the copy unknown.

use std::collections::BTreeMap;

use crate::catalogue::MAX_RETAINED_TOPICS;
use crate::hub::StoredCommand;
use crate::protocol::{ApiError, Command};
use crate::topic::{Topic, TopicFilter};

/// One character's retained commands, by topic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetainedSet {
    entries: BTreeMap<Topic, StoredCommand>,
    /// The owner's revision this set matches; `None` for a copy that must
    /// be fetched again before it is used.
    rev: Option<u64>,
}

impl RetainedSet {
    /// An empty copy of unknown revision (a relay's or scene's at start).
    pub fn unknown() -> Self {
        Self::default()
    }

    /// The owner's set as stored: `rows` (retained commands) at `rev`.
    pub fn of_record(rows: Vec<StoredCommand>, rev: u64) -> Self {
        let mut set = Self {
            entries: BTreeMap::new(),
            rev: Some(rev),
        };
        for row in rows {
            set.apply(&row);
        }
        set
    }

    pub fn rev(&self) -> Option<u64> {
        self.rev
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, topic: &Topic) -> bool {
        self.entries.contains_key(topic)
    }

    /// A delivered row: when it was published with `retain`, it becomes its
    /// topic's retained command (unless a newer one is held). True when the
    /// set changed.
    pub fn apply(&mut self, row: &StoredCommand) -> bool {
        if !row.command.retain {
            return false;
        }
        match self.entries.get(&row.command.topic) {
            Some(held) if held.seq >= row.seq => false,
            _ => {
                self.entries.insert(row.command.topic.clone(), row.clone());
                true
            }
        }
    }

    /// Owner: the revision after clearing one topic.
    pub fn next_rev(&self) -> u64 {
        self.rev.unwrap_or(0).saturating_add(1)
    }

    /// Owner: clears `topic`'s retained command, moving to revision `rev`
    /// (persisted by the shell first). Whether one was held.
    pub fn clear(&mut self, topic: &Topic, rev: u64) -> bool {
        let held = self.entries.remove(topic).is_some();
        if held {
            self.rev = Some(rev);
        }
        held
    }

    /// The stream restarted: the copy is empty and unknown until adopted.
    pub fn reset(&mut self) {
        self.entries.clear();
        self.rev = None;
    }

    /// Every retained command, in seq order.
    pub fn rows(&self) -> Vec<&StoredCommand> {
        let mut rows: Vec<&StoredCommand> = self.entries.values().collect();
        rows.sort_by_key(|r| r.seq);
        rows
    }

    /// The retained commands one of `filters` matches, in seq order.
    pub fn matching(&self, filters: &[TopicFilter]) -> Vec<&StoredCommand> {
        let mut rows = self.rows();
        rows.retain(|r| filters.iter().any(|f| f.matches(&r.command.topic)));
        rows
    }

    /// Refuses `commands` when retaining them would hold more than
    /// [`MAX_RETAINED_TOPICS`] topics (nothing of the publish is stored).
    pub fn admits<'a>(
        &self,
        commands: impl IntoIterator<Item = &'a Command>,
    ) -> Result<(), ApiError> {
        let mut new: Vec<&Topic> = commands
            .into_iter()
            .filter(|c| c.retain && !self.entries.contains_key(&c.topic))
            .map(|c| &c.topic)
            .collect();
        new.sort();
        new.dedup();
        if self.entries.len() + new.len() > MAX_RETAINED_TOPICS {
            return Err(ApiError::payload_too_large(format!(
                "a character retains commands for at most {MAX_RETAINED_TOPICS} topics; \
                 clear one first (DELETE /v1/characters/{{character}}/retained/{{topic}})"
            )));
        }
        Ok(())
    }

    /// A copy (a relay's or scene's, whose stream is at `last`) takes the
    /// owner's snapshot `rows` at revision `rev`, which the owner read when
    /// its own stream was at `at`:
    /// * `at == last`: taken as it is;
    /// * `at > last`: the rows past `last` are left out; they reach the copy
    ///   in seq order like any row (so a topic retained again past `last`
    ///   has nothing retained until then);
    /// * `at < last`: the copy has delivered rows since; `since_at` must hold
    ///   every row it applied after `at` (its ring), which are applied on
    ///   top. `None` there (the ring no longer covers `at`): not adopted,
    ///   false, and the copy stays unknown.
    pub fn adopt(
        &mut self,
        rows: Vec<StoredCommand>,
        at: u64,
        rev: u64,
        last: u64,
        since_at: Option<&[StoredCommand]>,
    ) -> bool {
        let mut set = Self::of_record(rows.into_iter().filter(|r| r.seq <= last).collect(), rev);
        if at < last {
            let Some(applied) = since_at else {
                return false;
            };
            for row in applied.iter().filter(|r| r.seq > at && r.seq <= last) {
                set.apply(row);
            }
        }
        *self = set;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse_command;

    fn row(seq: u64, topic: &str, retain: bool) -> StoredCommand {
        StoredCommand {
            seq,
            ts: seq * 10,
            command: parse_command(
                &serde_json::json!({"topic": topic, "name": "n", "retain": retain}),
            )
            .unwrap(),
        }
    }
    fn seqs(rows: &[&StoredCommand]) -> Vec<u64> {
        rows.iter().map(|r| r.seq).collect()
    }
    fn filters(list: &[&str]) -> Vec<TopicFilter> {
        list.iter()
            .map(|f| TopicFilter::parse(f).unwrap())
            .collect()
    }

    #[test]
    fn the_newest_retained_command_per_topic_wins_and_plain_ones_do_not_count() {
        let mut s = RetainedSet::of_record(vec![], 0);
        assert!(s.apply(&row(1, "face", true)));
        assert!(!s.apply(&row(2, "face", false)), "not retained");
        assert!(s.apply(&row(3, "body.arms", true)));
        assert!(s.apply(&row(4, "face", true)), "replaces seq 1");
        assert!(!s.apply(&row(1, "face", true)), "an older row never wins");
        assert_eq!(seqs(&s.rows()), vec![3, 4]);
        assert_eq!(seqs(&s.matching(&filters(&["face"]))), vec![4]);
        assert_eq!(seqs(&s.matching(&filters(&["body.*", "face"]))), vec![3, 4]);
        assert_eq!(seqs(&s.matching(&filters(&["legs"]))), Vec::<u64>::new());
        assert_eq!(seqs(&s.matching(&filters(&[">"]))), vec![3, 4]);
    }

    #[test]
    fn a_clear_moves_the_revision_only_when_something_was_held() {
        let mut s = RetainedSet::of_record(vec![row(1, "face", true)], 7);
        let face = Topic::parse("face").unwrap();
        let rev = s.next_rev();
        assert_eq!(rev, 8);
        assert!(s.clear(&face, rev));
        assert_eq!((s.len(), s.rev()), (0, Some(8)));
        assert!(!s.clear(&face, 9));
        assert_eq!(s.rev(), Some(8));
        s.apply(&row(2, "face", true));
        s.reset();
        assert_eq!((s.is_empty(), s.rev()), (true, None));
    }

    #[test]
    fn the_bound_counts_new_topics_once() {
        let held: Vec<StoredCommand> = (0..MAX_RETAINED_TOPICS as u64 - 1)
            .map(|i| row(i + 1, &format!("t{i}"), true))
            .collect();
        let s = RetainedSet::of_record(held, 0);
        let cmd = |topic: &str, retain: bool| row(0, topic, retain).command;
        // One new topic (twice in the batch) fits; replacing a held one is free.
        assert!(s
            .admits(&[cmd("new", true), cmd("new", true), cmd("t0", true)])
            .is_ok());
        // Plain commands never count.
        assert!(s.admits(&[cmd("x", false), cmd("y", false)]).is_ok());
        let e = s
            .admits(&[cmd("new", true), cmd("other", true)])
            .unwrap_err();
        assert_eq!(e.status(), 413);
    }

    /// (snapshot at, copy's last, ring rows) -> adopted seqs.
    #[test]
    fn a_copy_adopts_the_snapshot_at_its_own_place() {
        let snapshot = || vec![row(3, "face", true), row(8, "body", true)];
        let ring = [row(9, "face", true), row(10, "legs", false)];
        type Case = (u64, u64, Option<usize>, Option<Vec<u64>>);
        let cases: Vec<Case> = vec![
            // Same place: as it is.
            (8, 8, None, Some(vec![3, 8])),
            // The owner read ahead of the copy: rows past `last` come later.
            (8, 5, None, Some(vec![3])),
            // The copy delivered 9 and 10 since: applied on top.
            (8, 10, Some(2), Some(vec![8, 9])),
            // It cannot tell what it delivered since: not adopted.
            (8, 10, None, None),
        ];
        for (i, (at, last, ring_rows, want)) in cases.into_iter().enumerate() {
            let mut s = RetainedSet::unknown();
            let since = ring_rows.map(|n| &ring[..n]);
            let adopted = s.adopt(snapshot(), at, 4, last, since);
            assert_eq!(adopted, want.is_some(), "case {i}");
            match want {
                Some(w) => {
                    assert_eq!(seqs(&s.rows()), w, "case {i}");
                    assert_eq!(s.rev(), Some(4), "case {i}");
                }
                None => assert_eq!(s.rev(), None, "case {i}"),
            }
        }
    }
}
