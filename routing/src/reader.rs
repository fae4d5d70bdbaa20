//! A history reader without I/O: it says which read it needs next (KV
//! archive pages or SQLite rows), is fed the answers and finally decides
//! what the read returns and whether it is `complete`. Both the `history`
//! endpoint and the replay of a resume drive it, so the rules for gaps,
//! epochs and the archive moving under a read live here, table-tested.
//!
//! Storage model: SQLite holds the rows with seq > `archived_through`, except
//! rows the hard cap dropped (so SQLite may also miss its oldest seqs); KV
//! holds full pages of `page_size` seqs for 1..=`archived_through` (see
//! [`crate::archive`]). The archive task may move a page from SQLite to KV
//! (and advance `archived_through`) at any await point, i.e. between two
//! steps of a read; the reader then fetches what moved from KV instead of
//! skipping it.
//!
//! Driving it:
//! ```text
//! let mut reader = Reader::new(spec);
//! loop {
//!     reader.update_archived_through(mark_now);           // after any await
//!     match reader.next() {
//!         Need::Pages { first, last } => reader.feed_pages(read_kv(first..=last).await),
//!         Need::Rows { after, limit } => reader.feed_rows(sqlite_after(after, limit), mark_now),
//!         Need::Done => break,
//!     }
//! }
//! let outcome = reader.finish();
//! ```
//! A resume must deliver nothing twice and lose nothing between replay and
//! live delivery: the shell awaits the `Pages` steps before the socket joins,
//! then joins and answers every `Rows` step in the same synchronous turn. Once
//! [`Reader::update_archived_through`] has been told the mark of that turn and
//! [`Reader::next`] says `Rows`, no `Pages` step can follow in that turn
//! (the mark cannot move without an await).
//!
//! Termination: every `Pages` step moves the cursor past at least one page
//! and spends at least one page of `max_pages`, so a read makes at most
//! `max_pages` of them however often the mark moves (it only grows). Every
//! `Rows` step either moves the cursor past at least one stored row, or ends
//! the read (an empty or stale answer), or is followed by a `Pages` step (the
//! mark passed the cursor); so the number of steps is bounded by
//! `max_pages` plus the rows stored, plus one probe.

use std::collections::BTreeMap;

use crate::archive::{page_bounds, page_of};
use crate::hub::StoredCommand;
use crate::topic::TopicFilter;

/// Most KV pages asked for in one [`Need::Pages`] step (read concurrently).
pub const PAGES_PER_STEP: u64 = 20;
/// Rows asked for in one [`Need::Rows`] step.
pub const ROWS_PER_STEP: u64 = 500;

/// What to read, as known when the read starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadSpec {
    /// Return commands with seq > `since`.
    pub since: u64,
    /// The epoch the client's `since` belongs to; `None` (not given) means ours.
    pub client_epoch: Option<String>,
    /// The character's epoch now.
    pub epoch: String,
    /// The newest seq now; seqs since+1..=latest_seq must all be found for
    /// the read to be complete (later ones, published during the read, are
    /// returned too).
    pub latest_seq: u64,
    /// The archive mark now: seqs up to it are in KV, not in SQLite.
    pub archived_through: u64,
    /// Seqs per KV page (`archive::page_size`).
    pub page_size: u64,
    /// Most matching commands returned; 0 counts as 1 so a read always moves on.
    pub limit: usize,
    /// Most KV pages one read fetches in total; 0 counts as 1. When reached
    /// before the archive is read through, the read stops with `next_since`.
    pub max_pages: u64,
    /// Only rows matching one of these are returned and count toward
    /// `limit` (an empty list matches nothing; pass `[TopicFilter::all()]`).
    pub filters: Vec<TopicFilter>,
}

/// The next read the reader needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// KV pages `first..=last` (page numbers, at most [`PAGES_PER_STEP`] of
    /// them) of the current epoch; answer with [`Reader::feed_pages`].
    Pages { first: u64, last: u64 },
    /// At most `limit` SQLite rows with seq > `after`, oldest first, as
    /// stored (unfiltered); answer with [`Reader::feed_rows`].
    Rows { after: u64, limit: u64 },
    /// Nothing more: call [`Reader::finish`].
    Done,
}

/// The result of a read.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadOutcome {
    /// Matching commands, in seq order, without duplicates, at most `limit`.
    pub rows: Vec<StoredCommand>,
    /// Every seq from since+1 through the last seq the read considered (the
    /// newest seq, or `next_since` when cut) was found, in the client's epoch.
    /// False on a missing or unreadable page, a page or SQLite lacking seqs,
    /// a `since` beyond the newest seq, or a changed epoch.
    pub complete: bool,
    /// `Some(seq)` when `limit` or `max_pages` stopped the read before the
    /// newest seq: a history read with `since = seq` continues it. The seq is
    /// the last returned row's when the limit stopped it.
    pub next_since: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Reading,
    /// The limit was reached on the last row known; one row is read after
    /// it to learn whether the read was cut (`next_since`) or is at the end.
    Probing,
    /// `more`: seqs after the cursor exist (the read was cut).
    Done {
        more: bool,
    },
}

/// One read in progress; see the module documentation for how to drive it.
#[derive(Clone, Debug)]
pub struct Reader {
    latest_seq: u64,
    page_size: u64,
    limit: usize,
    max_pages: u64,
    filters: Vec<TopicFilter>,
    epoch_changed: bool,
    /// Same epoch and `since` beyond the newest seq.
    from_the_future: bool,
    /// Every seq up to here has been considered (returned, filtered out or
    /// found missing).
    cursor: u64,
    /// The archive mark as last told.
    mark: u64,
    pages_read: u64,
    /// Some seq in since+1..=cursor was not found.
    missing: bool,
    rows: Vec<StoredCommand>,
    state: State,
}

impl Reader {
    /// Starts a read. With the client's epoch differing from ours the client's
    /// `since` means nothing here: the read returns the rows still in SQLite
    /// (seq > `archived_through`), as the replay always did, and is never
    /// complete. A `since` beyond `latest_seq` in our epoch (a client from
    /// the future) reads nothing and is not complete.
    pub fn new(spec: ReadSpec) -> Reader {
        let epoch_changed = spec.client_epoch.as_ref().is_some_and(|e| *e != spec.epoch);
        let from_the_future = !epoch_changed && spec.since > spec.latest_seq;
        let cursor = if epoch_changed {
            spec.archived_through
        } else {
            spec.since
        };
        let mut reader = Reader {
            latest_seq: spec.latest_seq,
            page_size: spec.page_size.max(1),
            limit: spec.limit.max(1),
            max_pages: spec.max_pages.max(1),
            filters: spec.filters,
            epoch_changed,
            from_the_future,
            cursor,
            mark: spec.archived_through,
            pages_read: 0,
            missing: false,
            rows: Vec::new(),
            state: if from_the_future {
                State::Done { more: false }
            } else {
                State::Reading
            },
        };
        reader.settle();
        reader
    }

    /// The read needed next; the same answer until something is fed.
    pub fn next(&self) -> Need {
        match self.state {
            State::Done { .. } => Need::Done,
            State::Probing => Need::Rows {
                after: self.cursor,
                limit: 1,
            },
            State::Reading if self.cursor < self.mark => {
                let first = page_of(self.cursor.saturating_add(1), self.page_size);
                let budget = self.max_pages.saturating_sub(self.pages_read).max(1);
                let last = page_of(self.mark, self.page_size)
                    .min(first.saturating_add(PAGES_PER_STEP - 1))
                    .min(first.saturating_add(budget - 1));
                Need::Pages { first, last }
            }
            State::Reading => Need::Rows {
                after: self.cursor,
                limit: ROWS_PER_STEP,
            },
        }
    }

    /// Tells the reader the archive mark now (it only grows; a smaller value
    /// is ignored). Call it after every await, before [`Reader::next`], so
    /// a mark that moved turns into a `Pages` step before any row is read.
    pub fn update_archived_through(&mut self, archived_through: u64) {
        self.mark = self.mark.max(archived_through);
        self.settle();
    }

    /// Answers a [`Need::Pages`]: one entry per page asked for, `None` for a
    /// missing or unreadable page. A page asked for but not given counts as
    /// missing, entries for other pages are ignored, and a call when no
    /// pages were asked for changes nothing.
    pub fn feed_pages(&mut self, pages: Vec<(u64, Option<Vec<StoredCommand>>)>) {
        let Need::Pages { first, last } = self.next() else {
            return;
        };
        self.pages_read = self.pages_read.saturating_add(last - first + 1);
        let mut given: BTreeMap<u64, Option<Vec<StoredCommand>>> = BTreeMap::new();
        for (page, rows) in pages {
            if (first..=last).contains(&page) {
                given.entry(page).or_insert(rows);
            }
        }
        for page in first..=last {
            // Pages are written whole, but never read past the mark: seqs
            // beyond it come from SQLite.
            let hi = page_bounds(page, self.page_size).1.min(self.mark);
            if let Some(Some(mut rows)) = given.remove(&page) {
                rows.sort_by_key(|r| r.seq);
                for row in rows.into_iter().take_while(|r| r.seq <= hi) {
                    if self.take(row) {
                        self.state = if self.cursor < self.mark {
                            State::Done { more: true }
                        } else {
                            State::Probing
                        };
                        return;
                    }
                }
            }
            self.skip_to(hi);
        }
        self.settle();
    }

    /// Answers a [`Need::Rows`]: the rows as stored (unfiltered), oldest
    /// first, and `archived_through` as it was when they were read (in the
    /// same synchronous turn). If the mark has passed the cursor, the seqs
    /// between are in KV now: rows after that hole are dropped and the next
    /// step asks for those pages (then rows again). An empty answer, or one
    /// with nothing after the cursor, ends the read.
    pub fn feed_rows(&mut self, mut rows: Vec<StoredCommand>, archived_through: u64) {
        let need = self.next();
        self.mark = self.mark.max(archived_through);
        match (self.state, need) {
            (State::Probing, _) => {
                let more = self.cursor < self.mark || rows.iter().any(|r| r.seq > self.cursor);
                self.state = State::Done { more };
            }
            (State::Reading, Need::Rows { .. }) => {
                rows.sort_by_key(|r| r.seq);
                let before = self.cursor;
                let mut rows = rows.into_iter();
                while let Some(row) = rows.next() {
                    if row.seq <= self.cursor {
                        continue;
                    }
                    if row.seq > self.cursor.saturating_add(1) && self.cursor < self.mark {
                        // The hole before this row moved to KV during the
                        // await: read it first, this row again later.
                        break;
                    }
                    if self.take(row) {
                        let more = self.cursor < self.mark || rows.any(|r| r.seq > self.cursor);
                        self.state = if more {
                            State::Done { more: true }
                        } else {
                            State::Probing
                        };
                        return;
                    }
                }
                if self.cursor == before && self.cursor >= self.mark {
                    self.state = State::Done { more: false };
                }
                self.settle();
            }
            _ => self.settle(),
        }
    }

    /// The result. Called before `next()` says `Done` (the shell gave up),
    /// the read counts as cut short: `next_since` is where it got to.
    pub fn finish(self) -> ReadOutcome {
        let more = match self.state {
            State::Done { more } => more,
            State::Reading | State::Probing => true,
        };
        let complete = !self.epoch_changed
            && !self.from_the_future
            && !self.missing
            && (more || self.cursor >= self.latest_seq);
        ReadOutcome {
            rows: self.rows,
            complete,
            next_since: more.then_some(self.cursor),
        }
    }

    /// Takes the next stored row (seq order); true when the limit is reached.
    fn take(&mut self, row: StoredCommand) -> bool {
        if row.seq <= self.cursor {
            return false;
        }
        if row.seq > self.cursor.saturating_add(1) {
            self.missing = true;
        }
        self.cursor = row.seq;
        if !self.filters.iter().any(|f| f.matches(&row.command.topic)) {
            return false;
        }
        self.rows.push(row);
        self.rows.len() >= self.limit
    }

    /// Everything through `to` has been considered; what was not found is missing.
    fn skip_to(&mut self, to: u64) {
        if self.cursor < to {
            self.missing = true;
            self.cursor = to;
        }
    }

    /// Ends the read when the page budget is spent with archive left to
    /// read, or when a probe is answered by a mark that passed the cursor.
    fn settle(&mut self) {
        if self.cursor < self.mark {
            match self.state {
                State::Reading if self.pages_read >= self.max_pages => {
                    self.state = State::Done { more: true };
                }
                State::Probing => self.state = State::Done { more: true },
                _ => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
