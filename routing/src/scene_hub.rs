//! A scene object's state machine, sans I/O: the sockets of one scene (a
//! fixed list of characters, `scene`), their topic filters and token
//! timers, and one [`Follower`] per character (epoch, last applied seq,
//! ring of recent rows), fed by each character's own object like a relay.
//! Every method returns the [`SceneEffect`]s for the shell to apply in
//! order.
//!
//! Frames: `command` frames are the single-character ones (they carry
//! `character`); scene sockets get no `batch` frames (each command is sent
//! as it is applied). Presence frames come from each character's object
//! (which counts the scene's sockets and hears of their joins and leaves);
//! the scene sends them, with `character`, to its presence sockets except
//! the one the frame is about. `welcome` carries `characters`;
//! `recovered` carries `character`, one per resumed character. A client
//! `subscribe`/`unsubscribe` changes the filters for every character; a
//! client `publish` names its `character`, which must be the scene's.
//! A character whose stream restarts (new epoch, or a gap history no longer
//! covers) closes every socket with 1011, so clients resume.
//!
//! Retained commands: the scene keeps a copy of each character's set
//! (`retained`), taken from the character's object at each join and kept
//! up to date by the retained rows it applies. A new socket gets, right
//! after `welcome`, the retained commands its filters match of every
//! character it does not resume (`since`), character by character in
//! name order, each in seq order.
//!
//! Each connect and each end of a socket is a [`SceneEffect::Log`] (the
//! shell passes it to every character's object, whose event log holds it)
//! and a [`SceneEffect::SubscribersChanged`] (the shell reports the scene's
//! sockets to the registry under each character, and again every lease
//! refresh while it holds sockets).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use serde_json::Value;

use crate::catalogue::{echo_close_code, CloseCode, MAX_BAD_FRAMES, MAX_FILTERS, MAX_FRAME_BYTES};
use crate::events::{DisconnectReason, EventKind};
use crate::hub::{ClientInfo, ClientKey, Gone, Resume, StoredCommand};
use crate::protocol::{
    command_frame_json, error_frame_json, parse_client_frame, recovered_frame_json,
    retained_frame_json, subscribed_frame_json, ClientFrame, Command, ErrorCode,
};
use crate::relay::Follower;
use crate::retained::RetainedSet;
use crate::subscriptions::SubscriptionMap;
use crate::topic::{CharacterId, TopicFilter};

/// Something the shell must do, in the order returned.
#[derive(Clone, Debug, PartialEq)]
pub enum SceneEffect {
    Send {
        to: Vec<ClientKey>,
        text: Rc<str>,
    },
    /// Close the socket and drop it; the scene has forgotten it.
    Close {
        client: ClientKey,
        code: u16,
        reason: &'static str,
    },
    /// The client's filters changed: save its attachment.
    SaveClient {
        client: ClientKey,
    },
    /// A client's publish, for the character's own object; the shell
    /// answers the client with `published` or an `error` frame.
    Publish {
        client: ClientKey,
        character: CharacterId,
        command: Command,
        r#ref: Option<String>,
    },
    /// A connect or disconnect for the event log of every character of the
    /// scene; the shell stamps it with the turn's time.
    Log {
        kind: EventKind,
        client_id: String,
        user: Option<String>,
    },
    /// The sockets or their filters changed, or the registry lease is due
    /// for a refresh: report to the registry (the shell coalesces).
    SubscribersChanged,
}

#[derive(Debug)]
struct SceneClient {
    info: ClientInfo,
    expires_at: Option<u64>,
    bad_frames: u32,
}

/// One scene's sockets and streams.
#[derive(Debug)]
pub struct SceneHub {
    streams: BTreeMap<CharacterId, Follower>,
    subs: SubscriptionMap<ClientKey>,
    clients: BTreeMap<ClientKey, SceneClient>,
    by_id: HashMap<String, ClientKey>,
    expiry: BTreeSet<(u64, ClientKey)>,
    /// Each character's retained commands, as far as the scene knows them.
    retained: BTreeMap<CharacterId, RetainedSet>,
    /// While sockets are held, the registry lease is refreshed this often
    /// (0 = never); `refresh_at` is the next refresh.
    refresh_every_ms: u64,
    refresh_at: Option<u64>,
}

impl SceneHub {
    /// A scene on these characters, each at its follower's place.
    pub fn new(streams: Vec<(CharacterId, Follower)>) -> Self {
        Self {
            streams: streams.into_iter().collect(),
            subs: SubscriptionMap::new(),
            clients: BTreeMap::new(),
            by_id: HashMap::new(),
            expiry: BTreeSet::new(),
            retained: BTreeMap::new(),
            refresh_every_ms: 0,
            refresh_at: None,
        }
    }

    /// `c`'s retained commands `rows` at revision `rev`, which its object
    /// read at seq `at` (the join answer), brought to the place this scene
    /// delivers `c` from ([`RetainedSet::adopt`]). False when not taken
    /// (the ring no longer covers `at`).
    pub fn adopt_retained(
        &mut self,
        c: &CharacterId,
        rows: Vec<StoredCommand>,
        at: u64,
        rev: u64,
    ) -> bool {
        let Some(f) = self.streams.get(c) else {
            return false;
        };
        let applied = f.applied_after(at);
        let mut set = RetainedSet::unknown();
        let adopted = set.adopt(rows, at, rev, f.last(), applied.as_deref());
        if adopted {
            self.retained.insert(c.clone(), set);
        }
        adopted
    }

    /// `c`'s retained commands as the scene knows them.
    pub fn retained(&self, c: &CharacterId) -> Option<&RetainedSet> {
        self.retained.get(c)
    }

    /// Refreshes the registry lease every `every_ms` while sockets are held.
    pub fn with_refresh(mut self, every_ms: u64) -> Self {
        self.refresh_every_ms = every_ms;
        self
    }

    /// After a wake whose restored sockets the registry still lists: the
    /// next lease refresh at `at` (`routing::lease`).
    pub fn resume_refresh(&mut self, at: u64) {
        self.refresh_at = (self.refresh_every_ms > 0 && !self.clients.is_empty()).then_some(at);
    }

    /// The shell reported to the registry at `now`: the next refresh is
    /// due one interval later while sockets are held.
    pub fn reported(&mut self, now: u64) {
        self.refresh_at = (self.refresh_every_ms > 0 && !self.clients.is_empty())
            .then(|| now.saturating_add(self.refresh_every_ms));
    }

    /// The filters in force and how many sockets hold each (the same for
    /// every character of the scene), for the registry.
    pub fn filter_counts(&self) -> BTreeMap<String, usize> {
        self.subs.filter_counts()
    }

    pub fn characters(&self) -> Vec<CharacterId> {
        self.streams.keys().cloned().collect()
    }

    pub fn follower(&self, c: &CharacterId) -> Option<&Follower> {
        self.streams.get(c)
    }

    pub fn subscriber_count(&self) -> usize {
        self.clients.len()
    }

    pub fn clients(&self) -> impl Iterator<Item = (ClientKey, &ClientInfo)> {
        self.clients.iter().map(|(k, c)| (*k, &c.info))
    }

    pub fn client(&self, key: ClientKey) -> Option<&ClientInfo> {
        self.clients.get(&key).map(|c| &c.info)
    }

    pub fn expires_at(&self, key: ClientKey) -> Option<u64> {
        self.clients.get(&key).and_then(|c| c.expires_at)
    }

    pub fn key_of(&self, client_id: &str) -> Option<ClientKey> {
        self.by_id.get(client_id).copied()
    }

    /// The earliest token expiry or lease refresh, for the shell's alarm.
    pub fn poll_timeout(&self) -> Option<u64> {
        let expiry = self.expiry.first().map(|(at, _)| *at);
        [expiry, self.refresh_at].into_iter().flatten().min()
    }

    /// A socket found again on wake.
    pub fn restore(&mut self, key: ClientKey, info: ClientInfo, expires_at: Option<u64>) {
        self.register(key, info, expires_at);
    }

    /// The character's object took this scene on at (`epoch`, `seq`); a
    /// stream that moves (another epoch, or behind with nobody held) closes
    /// the sockets held, which resume. True when it moved (persist it).
    pub fn join(
        &mut self,
        c: &CharacterId,
        epoch: &str,
        seq: u64,
        holding: bool,
    ) -> (Vec<SceneEffect>, bool) {
        let mut out = Vec::new();
        let Some(f) = self.streams.get_mut(c) else {
            return (out, false);
        };
        let moved = f.subscribe(epoch, seq, holding).is_some();
        if moved {
            self.retained.remove(c);
            self.close_all(CloseCode::Internal, &mut out);
        }
        (out, moved)
    }

    /// A feed from `c`'s object (see [`Follower::feed`]); the effects and
    /// the last seq applied for `c` (`None` when `c` is not the scene's).
    pub fn feed(
        &mut self,
        c: &CharacterId,
        epoch: &str,
        after: u64,
        lost: bool,
        rows: Vec<StoredCommand>,
        holding: bool,
    ) -> (Vec<SceneEffect>, Option<u64>) {
        let mut out = Vec::new();
        let Some(f) = self.streams.get_mut(c) else {
            return (out, None);
        };
        let plan = f.feed(epoch, after, lost, rows, holding);
        let epoch = f.epoch().to_string();
        let last = f.last();
        if plan.resync.is_some() {
            self.retained.remove(c);
            self.close_all(CloseCode::Internal, &mut out);
        }
        if let Some(set) = self.retained.get_mut(c) {
            for row in &plan.apply {
                set.apply(row);
            }
        }
        for row in &plan.apply {
            let to = self.subs.matching(&row.command.topic);
            if !to.is_empty() {
                let text = command_frame_json(c, &epoch, row.seq, row.ts, &row.command);
                out.push(SceneEffect::Send {
                    to,
                    text: Rc::from(text),
                });
            }
        }
        (out, Some(last))
    }

    /// Whether a socket asked for presence.
    pub fn presence_held(&self) -> bool {
        self.clients.values().any(|c| c.info.presence)
    }

    /// `c`'s presence frames (from its object, without `character`): each
    /// to every presence socket but the one it is about. Unreadable frames
    /// and frames of another character are skipped.
    pub fn presence_frames(&self, c: &CharacterId, frames: &[String]) -> Vec<SceneEffect> {
        let mut out = Vec::new();
        if !self.streams.contains_key(c) {
            return out;
        }
        for frame in frames {
            let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(frame) else {
                continue;
            };
            if obj.get("type").and_then(Value::as_str) != Some("presence") {
                continue;
            }
            let about = obj
                .get("client_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let to: Vec<ClientKey> = self
                .clients
                .iter()
                .filter(|(_, x)| x.info.presence && x.info.client_id != about)
                .map(|(k, _)| *k)
                .collect();
            if to.is_empty() {
                continue;
            }
            obj.insert("character".into(), Value::String(c.as_str().to_string()));
            out.push(SceneEffect::Send {
                to,
                text: Rc::from(Value::Object(obj).to_string()),
            });
        }
        out
    }

    /// A resume of `c` from the ring alone, when it covers `since`.
    pub fn replay(
        &self,
        c: &CharacterId,
        since: u64,
        epoch: Option<&str>,
        filters: &[TopicFilter],
        limit: usize,
    ) -> Option<Resume> {
        self.streams.get(c)?.replay(since, epoch, filters, limit)
    }

    /// `c`'s object's resume read joined to the rows applied since.
    pub fn extend(
        &self,
        c: &CharacterId,
        resume: Resume,
        covered: u64,
        filters: &[TopicFilter],
        limit: usize,
    ) -> Resume {
        match self.streams.get(c) {
            Some(f) => f.extend(resume, covered, filters, limit),
            None => resume,
        }
    }

    /// A new socket: `welcome` with every character's place, then for each
    /// resumed character its replayed rows and its `recovered` frame.
    pub fn connect(
        &mut self,
        key: ClientKey,
        info: ClientInfo,
        expires_at: Option<u64>,
        resumes: Vec<(CharacterId, Resume)>,
    ) -> Vec<SceneEffect> {
        let mut out = Vec::new();
        self.register(key, info, expires_at);
        let Some(client) = self.clients.get(&key) else {
            return out;
        };
        let topics = client.info.topics.clone();
        let places: serde_json::Map<String, Value> = self
            .streams
            .iter()
            .map(|(c, f)| {
                let place = serde_json::json!({ "epoch": f.epoch(), "seq": f.last() });
                (c.as_str().to_string(), place)
            })
            .collect();
        let welcome = serde_json::json!({
            "type": "welcome",
            "client_id": client.info.client_id,
            "characters": places,
            "topics": topics,
        });
        out.push(send(key, welcome.to_string()));
        for (c, f) in &self.streams {
            if resumes.iter().any(|(r, _)| r == c) {
                continue;
            }
            let Some(set) = self.retained.get(c) else {
                continue;
            };
            for row in set.matching(&topics) {
                let frame = retained_frame_json(c, f.epoch(), row.seq, row.ts, &row.command);
                out.push(send(key, frame));
            }
        }
        out.push(SceneEffect::Log {
            kind: EventKind::Connect {
                topics: topics.clone(),
            },
            client_id: client.info.client_id.clone(),
            user: client.info.user.clone(),
        });
        out.push(SceneEffect::SubscribersChanged);
        for (c, resume) in resumes {
            let Some(f) = self.streams.get(&c) else {
                continue;
            };
            for row in resume
                .rows
                .iter()
                .filter(|r| topics.iter().any(|t| t.matches(&r.command.topic)))
            {
                let frame = command_frame_json(&c, f.epoch(), row.seq, row.ts, &row.command);
                out.push(send(key, frame));
            }
            let complete = resume.complete && resume.since <= f.last();
            let frame = recovered_frame_json(resume.since, f.last(), complete, resume.next_since);
            out.push(send(key, with_character(&frame, &c)));
        }
        out
    }

    /// The socket went away on the client's side.
    pub fn gone(&mut self, key: ClientKey, how: Gone) -> Vec<SceneEffect> {
        let (code, reason) = match how {
            Gone::Closed(code) => (echo_close_code(code), DisconnectReason::ClientClosed(code)),
            Gone::Error => (CloseCode::Internal.code(), DisconnectReason::SocketError),
        };
        let mut out = Vec::new();
        self.end(key, code, "closed", reason, &mut out);
        out
    }

    /// An admin disconnect by client id: whether the scene had it.
    pub fn kick(&mut self, client_id: &str) -> (Vec<SceneEffect>, bool) {
        let mut out = Vec::new();
        let Some(key) = self.key_of(client_id) else {
            return (out, false);
        };
        self.close(key, CloseCode::ByAdmin, &mut out);
        (out, true)
    }

    /// Closes every socket of `user` with 4003; how many.
    pub fn revoke(&mut self, user: &str) -> (Vec<SceneEffect>, usize) {
        let keys: Vec<ClientKey> = self
            .clients
            .iter()
            .filter(|(_, c)| c.info.user.as_deref() == Some(user))
            .map(|(k, _)| *k)
            .collect();
        let mut out = Vec::new();
        for k in &keys {
            self.close(*k, CloseCode::RightsWithdrawn, &mut out);
        }
        (out, keys.len())
    }

    /// Token timers due at `now`, and the lease refresh.
    pub fn timeout(&mut self, now: u64) -> Vec<SceneEffect> {
        let mut out = Vec::new();
        if self.refresh_at.is_some_and(|at| at <= now) {
            self.refresh_at = None;
            out.push(SceneEffect::SubscribersChanged);
        }
        while let Some(&(at, key)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.remove(&(at, key));
            self.close(key, CloseCode::TokenExpired, &mut out);
        }
        out
    }

    /// A client text frame.
    pub fn text(&mut self, key: ClientKey, text: &str) -> Vec<SceneEffect> {
        let mut out = Vec::new();
        let Some(client) = self.clients.get(&key) else {
            return out;
        };
        let can_publish = client.info.can_publish;
        let (character, parsed) = parse_scene_frame(text);
        let frame = match parsed {
            Ok(f) => f,
            Err(e) => {
                self.refuse(key, e.code, &e.message, e.r#ref.as_deref(), &mut out);
                return out;
            }
        };
        match frame {
            ClientFrame::Subscribe { topics, r#ref } => {
                let current = self.subs.filters_of(key);
                let new: Vec<TopicFilter> = topics
                    .into_iter()
                    .filter(|f| !current.contains(f))
                    .collect();
                if current.len() + new.len() > MAX_FILTERS {
                    let msg = format!("a subscription holds at most {MAX_FILTERS} filters");
                    self.refuse(key, ErrorCode::BadRequest, &msg, r#ref.as_deref(), &mut out);
                    return out;
                }
                let changed = !new.is_empty();
                for f in new {
                    self.subs.subscribe(key, f);
                }
                self.topics_changed(key, changed, &mut out);
            }
            ClientFrame::Unsubscribe { topics, .. } => {
                let mut changed = false;
                for f in &topics {
                    changed |= self.subs.unsubscribe(key, f);
                }
                self.topics_changed(key, changed, &mut out);
            }
            ClientFrame::Publish { command, r#ref } => {
                let named = character
                    .as_deref()
                    .and_then(|c| CharacterId::parse(c).ok())
                    .filter(|c| self.streams.contains_key(c));
                let Some(character) = named else {
                    let msg =
                        "a publish on a scene socket names its `character`, one of the scene's";
                    self.refuse(key, ErrorCode::BadRequest, msg, r#ref.as_deref(), &mut out);
                    return out;
                };
                if !can_publish {
                    let msg = "this connection may not publish";
                    self.refuse(key, ErrorCode::Forbidden, msg, r#ref.as_deref(), &mut out);
                    return out;
                }
                if let Some(c) = self.clients.get_mut(&key) {
                    c.bad_frames = 0;
                }
                out.push(SceneEffect::Publish {
                    client: key,
                    character,
                    command,
                    r#ref,
                });
            }
        }
        out
    }

    fn register(&mut self, key: ClientKey, mut info: ClientInfo, expires_at: Option<u64>) {
        self.forget(key);
        self.subs.add_client(key);
        for f in info.topics.drain(..) {
            self.subs.subscribe(key, f);
        }
        info.topics = self.subs.filters_of(key);
        self.by_id.insert(info.client_id.clone(), key);
        if let Some(at) = expires_at {
            self.expiry.insert((at, key));
        }
        self.clients.insert(
            key,
            SceneClient {
                info,
                expires_at,
                bad_frames: 0,
            },
        );
    }

    fn forget(&mut self, key: ClientKey) -> Option<ClientInfo> {
        let c = self.clients.remove(&key)?;
        self.subs.remove_client(key);
        if let Some(at) = c.expires_at {
            self.expiry.remove(&(at, key));
        }
        if self.by_id.get(&c.info.client_id) == Some(&key) {
            self.by_id.remove(&c.info.client_id);
        }
        if self.clients.is_empty() {
            self.refresh_at = None;
        }
        Some(c.info)
    }

    fn end(
        &mut self,
        key: ClientKey,
        code: u16,
        reason: &'static str,
        why: DisconnectReason,
        out: &mut Vec<SceneEffect>,
    ) {
        if let Some(info) = self.forget(key) {
            out.push(SceneEffect::Close {
                client: key,
                code,
                reason,
            });
            out.push(SceneEffect::Log {
                kind: EventKind::Disconnect { reason: why },
                client_id: info.client_id,
                user: info.user,
            });
            out.push(SceneEffect::SubscribersChanged);
        }
    }

    fn close(&mut self, key: ClientKey, code: CloseCode, out: &mut Vec<SceneEffect>) {
        self.end(
            key,
            code.code(),
            code.reason(),
            DisconnectReason::Closed(code),
            out,
        );
    }

    fn close_all(&mut self, code: CloseCode, out: &mut Vec<SceneEffect>) {
        let keys: Vec<ClientKey> = self.clients.keys().copied().collect();
        for k in keys {
            self.close(k, code, out);
        }
    }

    fn topics_changed(&mut self, key: ClientKey, changed: bool, out: &mut Vec<SceneEffect>) {
        let topics = self.subs.filters_of(key);
        if let Some(c) = self.clients.get_mut(&key) {
            c.bad_frames = 0;
            if changed {
                c.info.topics = topics.clone();
            }
        }
        if changed {
            out.push(SceneEffect::SaveClient { client: key });
            out.push(SceneEffect::SubscribersChanged);
        }
        out.push(send(key, subscribed_frame_json(&topics)));
    }

    fn refuse(
        &mut self,
        key: ClientKey,
        code: ErrorCode,
        message: &str,
        r#ref: Option<&str>,
        out: &mut Vec<SceneEffect>,
    ) {
        out.push(send(key, error_frame_json(code, message, r#ref)));
        let bad = self.clients.get_mut(&key).map_or(0, |c| {
            c.bad_frames += 1;
            c.bad_frames
        });
        if bad >= MAX_BAD_FRAMES {
            self.close(key, CloseCode::BadFrames, out);
        }
    }
}

/// A client frame of a scene socket: its `character` field (taken out when
/// it is a string) and the frame as any socket's. Oversized or malformed
/// text goes to the common parser unchanged, for the common error.
fn parse_scene_frame(
    text: &str,
) -> (
    Option<String>,
    Result<ClientFrame, crate::protocol::FrameError>,
) {
    if text.len() > MAX_FRAME_BYTES {
        return (None, parse_client_frame(text));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut obj)) => match obj.remove("character") {
            Some(Value::String(c)) => {
                let rest = Value::Object(obj).to_string();
                (Some(c), parse_client_frame(&rest))
            }
            Some(_) => {
                let msg = "field `character` must be a string";
                let r#ref = obj.get("ref").and_then(Value::as_str).map(str::to_string);
                let e = crate::protocol::FrameError {
                    code: ErrorCode::BadRequest,
                    message: msg.to_string(),
                    r#ref,
                };
                (None, Err(e))
            }
            None => (None, parse_client_frame(text)),
        },
        _ => (None, parse_client_frame(text)),
    }
}

/// A frame's JSON with `character` added.
fn with_character(frame: &str, c: &CharacterId) -> String {
    match serde_json::from_str::<Value>(frame) {
        Ok(Value::Object(mut obj)) => {
            obj.insert("character".into(), Value::String(c.as_str().to_string()));
            Value::Object(obj).to_string()
        }
        _ => frame.to_string(),
    }
}

fn send(key: ClientKey, text: String) -> SceneEffect {
    SceneEffect::Send {
        to: vec![key],
        text: Rc::from(text),
    }
}

#[cfg(test)]
#[path = "scene_hub_tests.rs"]
mod tests;
