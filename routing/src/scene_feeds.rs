//! The scene objects a character's own object (the owner) feeds, as the
//! owner sees them: like its numbered relays (`relays`), each is fed the
//! stored rows in seq order with one request in flight, from the seq it
//! last acknowledged, and leaves the set when it answers that it holds no
//! sockets. A scene joins by asking (`POST /scene/join`, each time it
//! accepts a socket); a join made while a feed was in flight keeps the
//! scene in the set even if that feed's answer says 0 sockets (the answer
//! may predate the socket). At most [`MAX_SCENE_FEEDS`] scenes per
//! character; a join past it is refused (`character_full`).
//!
//! A scene that holds presence sockets (it says so with each batch of its
//! sockets' connects and disconnects) is also sent the character's presence
//! frames, with the next feed; at most [`MAX_PENDING_PRESENCE`] wait per
//! scene (presence is sent only while the character has at most 256
//! sockets anyway), older ones are dropped.

use std::collections::BTreeMap;
use std::rc::Rc;

/// Most scene objects one character feeds.
pub const MAX_SCENE_FEEDS: usize = 256;
/// Most presence frames waiting for one scene object.
pub const MAX_PENDING_PRESENCE: usize = 256;

/// What the owner knows of one scene object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SceneFeed {
    pub name: String,
    pub sockets: usize,
    /// The last seq it said it applied; `None` when unknown (a probe next).
    pub acked: Option<u64>,
    /// Joins so far: a feed answer counts only if none came since it left.
    pub joins: u64,
    /// It holds presence sockets; presence frames waiting for its next feed.
    pub presence: bool,
    pub frames: Vec<Rc<str>>,
}

/// The owner's scene objects, by slot (the feed task's key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SceneFeeds {
    slots: BTreeMap<u32, SceneFeed>,
}

impl SceneFeeds {
    fn slot_of(&self, name: &str) -> Option<u32> {
        self.slots
            .iter()
            .find(|(_, f)| f.name == name)
            .map(|(s, _)| *s)
    }

    /// Scene `name` joins (again): its slot and whether it is new (the shell
    /// persists it); `None` when the character feeds its maximum of scenes.
    pub fn join(&mut self, name: &str, at: u64) -> Option<(u32, bool)> {
        if let Some(slot) = self.slot_of(name) {
            let f = self.slots.get_mut(&slot)?;
            f.joins += 1;
            f.sockets = f.sockets.max(1);
            f.acked = Some(f.acked.map_or(at, |a| a.min(at)));
            return Some((slot, false));
        }
        if self.slots.len() >= MAX_SCENE_FEEDS {
            return None;
        }
        let slot = (0..).find(|s| !self.slots.contains_key(s))?;
        self.slots.insert(
            slot,
            SceneFeed {
                name: name.to_string(),
                sockets: 1,
                acked: Some(at),
                joins: 1,
                ..SceneFeed::default()
            },
        );
        Some((slot, true))
    }

    /// A scene found in storage on wake: fed from a probe.
    pub fn restore(&mut self, name: &str) {
        if self.slots.len() < MAX_SCENE_FEEDS && self.slot_of(name).is_none() {
            let slot = self.slots.len() as u32;
            let slot = (slot..)
                .find(|s| !self.slots.contains_key(s))
                .unwrap_or(slot);
            self.slots.insert(
                slot,
                SceneFeed {
                    name: name.to_string(),
                    sockets: 1,
                    acked: None,
                    joins: 0,
                    ..SceneFeed::default()
                },
            );
        }
    }

    pub fn slots(&self) -> Vec<u32> {
        self.slots.keys().copied().collect()
    }

    pub fn get(&self, slot: u32) -> Option<&SceneFeed> {
        self.slots.get(&slot)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Sockets the scenes held at their last answers.
    pub fn sockets(&self) -> usize {
        self.slots.values().map(|f| f.sockets).sum()
    }

    /// From which seq the next feed of `slot` starts with the owner at
    /// `seq`: its acknowledged seq when behind, `seq` for a probe or when
    /// only presence frames wait.
    pub fn feed_from(&self, slot: u32, seq: u64) -> Option<u64> {
        let f = self.slots.get(&slot)?;
        match f.acked {
            None => Some(seq),
            Some(a) if a < seq => Some(a),
            Some(a) if !f.frames.is_empty() => Some(a),
            Some(_) => None,
        }
    }

    /// What scene `name` said with its sockets' connects and disconnects:
    /// how many it holds and whether one asked for presence.
    pub fn told(&mut self, name: &str, sockets: usize, presence: bool) {
        if let Some(f) = self.slot_of(name).and_then(|s| self.slots.get_mut(&s)) {
            f.sockets = sockets;
            f.presence = presence;
            if !presence {
                f.frames.clear();
            }
        }
    }

    /// Whether any scene holds presence sockets.
    pub fn presence_wanted(&self) -> bool {
        self.slots.values().any(|f| f.presence)
    }

    /// A presence frame for every scene that holds presence sockets: the
    /// slots to feed.
    pub fn push_presence(&mut self, frame: &Rc<str>) -> Vec<u32> {
        let mut slots = Vec::new();
        for (slot, f) in self.slots.iter_mut().filter(|(_, f)| f.presence) {
            if f.frames.len() >= MAX_PENDING_PRESENCE {
                f.frames.remove(0);
            }
            f.frames.push(Rc::clone(frame));
            slots.push(*slot);
        }
        slots
    }

    /// The presence frames waiting for `slot`, taken for its next feed.
    pub fn take_presence(&mut self, slot: u32) -> Vec<Rc<str>> {
        self.slots
            .get_mut(&slot)
            .map(|f| std::mem::take(&mut f.frames))
            .unwrap_or_default()
    }

    /// The scene's answer to a feed sent after `joins` joins: its place and
    /// sockets. The scene's name when it left the set (the shell forgets it).
    pub fn answered(&mut self, slot: u32, last: u64, sockets: usize, joins: u64) -> Option<String> {
        let f = self.slots.get_mut(&slot)?;
        f.acked = Some(last);
        f.sockets = sockets;
        if sockets == 0 && f.joins == joins {
            return self.slots.remove(&slot).map(|f| f.name);
        }
        None
    }

    /// A feed failed: its place is unknown until the next answer.
    pub fn failed(&mut self, slot: u32) {
        if let Some(f) = self.slots.get_mut(&slot) {
            f.acked = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_feeds_and_leaving() {
        let mut s = SceneFeeds::default();
        assert_eq!(s.join("~sA", 10), Some((0, true)));
        assert_eq!(s.join("~sB", 10), Some((1, true)));
        assert_eq!(s.join("~sA", 12), Some((0, false)));
        // Caught up at the join: nothing to send until the owner moves on.
        assert_eq!(s.feed_from(0, 10), None);
        assert_eq!(s.feed_from(0, 13), Some(10));
        // An answer of 0 sockets sent before the last join does not drop it.
        let joins = s.get(0).unwrap().joins;
        assert_eq!(s.answered(0, 13, 0, joins - 1), None);
        assert_eq!(s.answered(0, 13, 0, joins), Some("~sA".to_string()));
        assert_eq!(s.len(), 1);
        // The freed slot is reused; a failed feed probes next.
        assert_eq!(s.join("~sC", 20), Some((0, true)));
        s.failed(0);
        assert_eq!(s.feed_from(0, 20), Some(20));
        // Restored scenes probe; the bound holds.
        let mut r = SceneFeeds::default();
        r.restore("~sA");
        r.restore("~sA");
        assert_eq!((r.len(), r.feed_from(0, 5)), (1, Some(5)));
        for i in 0..MAX_SCENE_FEEDS {
            r.join(&format!("~s{i}"), 0);
        }
        assert_eq!(r.len(), MAX_SCENE_FEEDS);
        assert_eq!(r.join("~sZ", 0), None);
    }

    #[test]
    fn presence_frames_wait_for_the_scenes_that_want_them() {
        let mut s = SceneFeeds::default();
        s.join("~sA", 5);
        s.join("~sB", 5);
        assert!(!s.presence_wanted());
        let frame: Rc<str> = Rc::from("{}");
        assert!(s.push_presence(&frame).is_empty());
        s.told("~sB", 3, true);
        s.told("~sZ", 1, true);
        assert!(s.presence_wanted());
        assert_eq!(s.sockets(), 4);
        assert_eq!(s.push_presence(&frame), vec![1]);
        // Caught up, but a frame waits: fed at its own seq.
        assert_eq!((s.feed_from(0, 5), s.feed_from(1, 5)), (None, Some(5)));
        assert_eq!(s.take_presence(1).len(), 1);
        assert_eq!(s.feed_from(1, 5), None);
        for _ in 0..MAX_PENDING_PRESENCE + 5 {
            s.push_presence(&frame);
        }
        assert_eq!(s.get(1).unwrap().frames.len(), MAX_PENDING_PRESENCE);
        // No presence socket left: nothing waits.
        s.told("~sB", 2, false);
        assert!(!s.presence_wanted() && s.get(1).unwrap().frames.is_empty());
    }
}
