//! A hot character's relays, as the character's own object (the owner) sees
//! them: where the next subscriber goes, which relays are fed and from which
//! seq. Sans I/O: the shell forwards subscribes, posts rows and reports
//! every answer back here.
//!
//! Placement: the owner holds sockets itself until it has `FANOUT_LIMIT`;
//! then a subscriber goes to the least-loaded relay with room, and relay
//! `n` is opened only when relays with lower numbers in use are full (the
//! lowest free number). A relay is named `<character>~r<n>`
//! ([`relay_name`]); `~` is no character-name byte, so no character's own
//! object can have a relay's name. Presence subscribers always stay with
//! the owner (docs/protocol.md, "Relays").
//!
//! Feeding: each relay has at most one request in flight (the shell's task
//! scheduler); [`RelaySet::feed_from`] says from which seq the next one
//! starts, [`RelaySet::answered`] takes the relay's answer: the last seq it
//! applied and how many sockets it holds. A relay that answers 0 sockets,
//! with no subscribe on its way to it, leaves the set and is not fed again.

use std::collections::BTreeMap;

use crate::topic::CharacterId;

/// Separates a character's name from its relay number in a relay's name.
pub const RELAY_MARK: &str = "~r";

/// The object name of relay `index` of `character`.
pub fn relay_name(character: &CharacterId, index: u32) -> String {
    format!("{}{RELAY_MARK}{index}", character.as_str())
}

/// The opaque id the admin listing shows for relay `index`.
pub fn relay_id(index: u32) -> String {
    format!("r{index}")
}

/// A relay's object name split into its character and number; `None` for
/// any other name (a character's own object).
pub fn parse_relay_name(name: &str) -> Option<(CharacterId, u32)> {
    let (character, index) = name.split_once(RELAY_MARK)?;
    let index: u32 = index.parse().ok()?;
    if index.to_string() != name[character.len() + RELAY_MARK.len()..] {
        return None;
    }
    Some((CharacterId::parse(character).ok()?, index))
}

/// What the owner knows of one relay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Relay {
    /// Sockets it held at its last answer, plus those placed since.
    pub sockets: usize,
    /// Subscribes forwarded to it and not answered yet.
    pub placing: usize,
    /// The last seq it said it applied; `None` when unknown (after a wake
    /// or a failed request): the next request is a probe without rows.
    pub acked: Option<u64>,
}

/// Where a new subscriber goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Owner,
    Relay(u32),
    /// The character and its relays hold their maximum.
    Full,
}

/// The owner's relays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelaySet {
    fanout: usize,
    relays: BTreeMap<u32, Relay>,
    /// Scene objects fed beside the numbered relays (`scene_feeds`).
    pub scenes: crate::scene_feeds::SceneFeeds,
}

impl RelaySet {
    /// `fanout`: most sockets per object (`FANOUT_LIMIT`, at least 1).
    pub fn new(fanout: usize) -> Self {
        Self {
            fanout: fanout.max(1),
            relays: BTreeMap::new(),
            scenes: crate::scene_feeds::SceneFeeds::default(),
        }
    }

    pub fn fanout(&self) -> usize {
        self.fanout
    }

    /// A relay found in storage on wake: its sockets as last known, its
    /// place in the stream unknown until it answers.
    pub fn restore(&mut self, index: u32, sockets: usize) {
        if index < crate::catalogue::MAX_RELAYS {
            self.relays.insert(
                index,
                Relay {
                    sockets,
                    ..Relay::default()
                },
            );
        }
    }

    pub fn get(&self, index: u32) -> Option<&Relay> {
        self.relays.get(&index)
    }

    /// The relays in the set, ascending.
    pub fn indices(&self) -> Vec<u32> {
        self.relays.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.relays.len()
    }

    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    /// Sockets held by relays (as last known, with subscribes on their way).
    pub fn relay_sockets(&self) -> usize {
        self.relays.values().map(|r| r.sockets + r.placing).sum()
    }

    /// Whether the character holds `max_total` (`MAX_SUBSCRIBERS`) sockets
    /// or more: the owner's, its relays' and its scene objects' (as they
    /// last said).
    pub fn is_full(&self, owner_sockets: usize, max_total: usize) -> bool {
        owner_sockets + self.relay_sockets() + self.scenes.sockets() >= max_total
    }

    /// Where the next subscriber goes, given the sockets the owner holds and
    /// `max_total` (`MAX_SUBSCRIBERS`).
    pub fn place(&self, owner_sockets: usize, presence: bool, max_total: usize) -> Placement {
        if self.is_full(owner_sockets, max_total) {
            return Placement::Full;
        }
        if presence || owner_sockets < self.fanout {
            return Placement::Owner;
        }
        let least = self
            .relays
            .iter()
            .map(|(i, r)| (r.sockets + r.placing, *i))
            .filter(|(load, _)| *load < self.fanout)
            .min();
        if let Some((_, i)) = least {
            return Placement::Relay(i);
        }
        match (0..crate::catalogue::MAX_RELAYS).find(|i| !self.relays.contains_key(i)) {
            Some(i) => Placement::Relay(i),
            None => Placement::Full,
        }
    }

    /// A subscribe is on its way to relay `index`; true when the relay just
    /// joined the set (the shell persists the set).
    pub fn placing(&mut self, index: u32) -> bool {
        let joined = !self.relays.contains_key(&index);
        self.relays.entry(index).or_default().placing += 1;
        joined
    }

    /// The relay answered a forwarded subscribe: `accepted` (a socket is
    /// open), else refused as full (`full`) or failed. `sockets`/`last`: the
    /// relay's own counts when its answer carried them. True when the relay
    /// left the set.
    pub fn placed(
        &mut self,
        index: u32,
        accepted: bool,
        full: bool,
        sockets: Option<usize>,
        last: Option<u64>,
    ) -> bool {
        let fanout = self.fanout;
        let Some(r) = self.relays.get_mut(&index) else {
            return false;
        };
        r.placing = r.placing.saturating_sub(1);
        if accepted {
            r.sockets += 1;
        }
        if let Some(n) = sockets {
            r.sockets = n;
        }
        if full {
            r.sockets = r.sockets.max(fanout);
        }
        if let Some(last) = last {
            r.acked = Some(r.acked.map_or(last, |a| a.max(last)));
        }
        self.drop_if_empty(index)
    }

    /// The seq after which the next request to relay `index` starts, when
    /// one is needed with the owner at `seq`: its acknowledged seq when
    /// behind, or `seq` itself for a probe when unknown.
    pub fn feed_from(&self, index: u32, seq: u64) -> Option<u64> {
        match self.relays.get(&index)?.acked {
            None => Some(seq),
            Some(a) if a < seq => Some(a),
            Some(_) => None,
        }
    }

    /// The relay's answer to a feed: the last seq it applied and its
    /// sockets. True when it left the set (empty, nothing on its way).
    pub fn answered(&mut self, index: u32, last: u64, sockets: usize) -> bool {
        let Some(r) = self.relays.get_mut(&index) else {
            return false;
        };
        r.acked = Some(last);
        r.sockets = sockets;
        self.drop_if_empty(index)
    }

    /// A feed failed: its place is unknown until the next answer.
    pub fn failed(&mut self, index: u32) {
        if let Some(r) = self.relays.get_mut(&index) {
            r.acked = None;
        }
    }

    /// Its socket count as a listing found it. True when it left the set.
    pub fn counted(&mut self, index: u32, sockets: usize) -> bool {
        let Some(r) = self.relays.get_mut(&index) else {
            return false;
        };
        r.sockets = sockets;
        self.drop_if_empty(index)
    }

    fn drop_if_empty(&mut self, index: u32) -> bool {
        let empty = self
            .relays
            .get(&index)
            .is_some_and(|r| r.sockets == 0 && r.placing == 0);
        if empty {
            self.relays.remove(&index);
        }
        empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> CharacterId {
        CharacterId::parse("alice").unwrap()
    }

    #[test]
    fn relay_names_round_trip_and_never_name_a_character() {
        assert_eq!(relay_name(&alice(), 3), "alice~r3");
        assert_eq!(parse_relay_name("alice~r3"), Some((alice(), 3)));
        for bad in [
            "alice",
            "alice~r",
            "alice~rx",
            "alice~r03",
            "~r1",
            "a~r1~r2",
            "alice~r-1",
        ] {
            assert_eq!(parse_relay_name(bad), None, "{bad}");
        }
        assert!(CharacterId::parse("alice~r3").is_err());
    }

    /// Fill the owner, then relay 0 to the limit, then relay 1, ...; the
    /// least-loaded relay with room comes first; presence stays home.
    #[test]
    fn scene_sockets_count_towards_the_characters_maximum() {
        let mut set = RelaySet::new(10);
        assert!(!set.is_full(3, 5));
        set.scenes.join("~s0123456789abcdef", 0);
        set.scenes.told("~s0123456789abcdef", 2, false);
        assert!(set.is_full(3, 5));
        assert_eq!(set.place(3, false, 5), Placement::Full);
        assert_eq!(set.place(2, false, 5), Placement::Owner);
    }

    #[test]
    fn placement_fills_the_owner_then_the_lowest_relays() {
        let mut set = RelaySet::new(2);
        assert_eq!(set.place(0, false, 100), Placement::Owner);
        assert_eq!(set.place(1, false, 100), Placement::Owner);
        assert_eq!(set.place(2, true, 100), Placement::Owner);
        let cases = [0, 0, 1, 1, 2, 2, 3];
        for want in cases {
            let Placement::Relay(i) = set.place(2, false, 100) else {
                panic!("not a relay")
            };
            assert_eq!(i, want);
            set.placing(i);
            set.placed(i, true, false, None, None);
        }
        // Relay 1 loses a socket: it is the least loaded with room.
        set.counted(1, 1);
        assert_eq!(set.place(2, false, 100), Placement::Relay(1));
        // Total bound (owner 2 + relays 6).
        assert_eq!(set.place(2, false, 9), Placement::Relay(1));
        assert_eq!(set.place(2, false, 8), Placement::Full);
    }

    #[test]
    fn a_subscribe_on_its_way_counts_and_a_full_relay_is_skipped() {
        let mut set = RelaySet::new(2);
        assert!(set.placing(0));
        assert!(!set.placing(0));
        assert_eq!(set.place(2, false, 100), Placement::Relay(1));
        // The relay refused one as full: it counts as full from now on.
        set.placed(0, false, true, None, None);
        assert_eq!(set.get(0).unwrap().sockets, 2);
        assert_eq!(set.place(2, false, 100), Placement::Relay(1));
    }

    #[test]
    fn relays_run_out_at_the_bound() {
        let mut set = RelaySet::new(1);
        for i in 0..crate::catalogue::MAX_RELAYS {
            set.placing(i);
            set.placed(i, true, false, None, None);
        }
        assert_eq!(set.place(1, false, usize::MAX), Placement::Full);
    }

    /// Feeding: a probe when the place is unknown, rows from the
    /// acknowledged seq when behind, nothing when caught up; an empty relay
    /// leaves the set unless a subscribe is on its way to it.
    #[test]
    fn feeding_follows_the_answers_and_empty_relays_leave() {
        let mut set = RelaySet::new(10);
        set.restore(4, 3);
        assert_eq!(set.feed_from(4, 20), Some(20), "probe");
        assert!(!set.answered(4, 17, 3));
        assert_eq!(set.feed_from(4, 20), Some(17));
        assert!(!set.answered(4, 20, 3));
        assert_eq!(set.feed_from(4, 20), None);
        set.failed(4);
        assert_eq!(set.feed_from(4, 20), Some(20));
        // Empty, but a subscribe is on its way: it stays.
        set.placing(4);
        assert!(!set.answered(4, 20, 0));
        assert!(
            set.placed(4, false, false, None, None),
            "refused: now it leaves"
        );
        assert_eq!(set.feed_from(4, 21), None);
        assert!(set.is_empty());
        // Acknowledged seqs from subscribe answers only move forward.
        set.placing(1);
        set.placed(1, true, false, Some(1), Some(30));
        set.placing(1);
        set.placed(1, true, false, Some(2), Some(25));
        assert_eq!(set.get(1).unwrap().acked, Some(30));
    }
}
