//! One character's state machine, sans I/O: who is connected and subscribed
//! to what, the latest `seq`, the idempotency window, the batching buffer and
//! every timer (batch flushes, token expiry). It has one way in,
//! [`Hub::handle`]`(now, input)`, which returns the [`Effect`]s for the
//! Worker shell to apply in order, and one question about time,
//! [`Hub::poll_timeout`], from which the shell arms its single alarm (in the
//! manner of quinn-proto's `Connection`). Log events are effects too, so every
//! connect, disconnect and publish is logged exactly once, whichever path
//! caused it.
//!
//! History rows are persisted by the shell, so a publish is two inputs: a
//! [`Input::Publish`] plans seqs and changes nothing, answering
//! [`Effect::Store`]; once the rows are stored the shell feeds back
//! [`Input::Stored`], which commits and delivers.

use crate::catalogue::{
    echo_close_code, CloseCode, IDEMPOTENCY_WINDOW_MS, MAX_BAD_FRAMES, MAX_BATCH_FRAME_BYTES,
    MAX_FILTERS, MAX_IDEMPOTENCY_IDS, MAX_PRESENCE_SOCKETS,
};
use crate::events::{DisconnectReason, Event, EventKind};
use crate::protocol::{
    batch_frame_json, command_frame_json, error_frame_json, parse_client_frame,
    presence_frame_json, published_frame_json, recovered_frame_json, retained_frame_json,
    subscribed_frame_json, welcome_frame_json, ApiError, ClientFrame, Command, ErrorCode,
    PresenceEvent,
};
use crate::retained::RetainedSet;
use crate::subscriptions::SubscriptionMap;
use crate::topic::{CharacterId, TopicFilter};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;

/// The shell's handle for a socket, chosen by the shell and never reused
/// while the hub lives.
pub type ClientKey = u32;

/// Who a socket's client is and what it asked for: what the shell keeps in
/// the socket's attachment and the admin API lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub client_id: String,
    pub user: Option<String>,
    pub topics: Vec<TopicFilter>,
    pub presence: bool,
    pub connected_at: u64,
    pub can_publish: bool,
}

/// A history row: what the shell stores and reads back for replay.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredCommand {
    pub seq: u64,
    pub ts: u64,
    pub command: Command,
}

/// What a resuming socket gets replayed, read by the shell (with
/// `reader::Reader`) before it connects: the rows after `since` that match
/// the socket's filters, in seq order, and whether history still held all.
/// `next_since` is the reader's: `Some` when the replay was cut short and
/// `GET .../history` continues after that seq.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resume {
    pub since: u64,
    pub rows: Vec<StoredCommand>,
    pub complete: bool,
    pub next_since: Option<u64>,
}

/// Where a publish came from: the HTTP API, or a client's `publish` frame
/// (answered with `published` and its `ref`).
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    Http,
    Client {
        client: ClientKey,
        r#ref: Option<String>,
    },
}

/// A planned publish: seqs decided, nothing changed yet.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    /// One per input command, in order; a duplicate `id` gets the original seq.
    pub seqs: Vec<u64>,
    /// Only the new commands, for the shell to store before [`Input::Stored`].
    pub rows: Vec<StoredCommand>,
    pub origin: Origin,
}

/// How a socket went away without us closing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gone {
    /// The client closed it with this code (1005/1006: none, or no frame).
    Closed(u16),
    /// The runtime reported an error on it.
    Error,
}

/// Everything that can happen to a character.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A socket of before the object slept, found again on wake. Emits
    /// nothing; its token timer is armed again.
    Restore {
        client: ClientKey,
        info: ClientInfo,
        expires_at: Option<u64>,
    },
    /// A new socket, accepted by the shell under `client` (its attachment
    /// already saved): `welcome`, the replay if any, presence `join`.
    Connect {
        client: ClientKey,
        info: ClientInfo,
        expires_at: Option<u64>,
        resume: Option<Resume>,
    },
    /// A client text frame (`ping` never reaches the hub).
    Text { client: ClientKey, text: String },
    /// A client binary frame (not part of the protocol).
    Binary { client: ClientKey },
    /// The socket went away on the client's side.
    Gone { client: ClientKey, how: Gone },
    /// An admin disconnect by client id; answered with a [`Reply`].
    Kick { client_id: String },
    /// The user's rights were withdrawn: close every socket of that user
    /// (token `sub`) with 4003; answered with [`Reply::Revoked`].
    Revoke { user: String },
    /// A publish over HTTP; answered with [`Effect::Store`].
    Publish { commands: Vec<Command> },
    /// The rows of a [`Pending`] publish are stored: commit and deliver.
    Stored(Pending),
    /// Storing them failed: nothing was committed.
    StoreFailed(Pending),
    /// The shell refused to store them because archiving lags (the history
    /// backlog is full): nothing was stored or committed.
    Backlogged(Pending),
    /// The alarm fired (early or repeated calls are harmless).
    Timeout,
    /// Relay role: rows the character's own object already stored and
    /// sequenced, in seq order. Delivered like a commit (filters, frames,
    /// batching), without storing, idempotency or a publish log event; rows
    /// at or below the current seq are skipped.
    Relayed { rows: Vec<StoredCommand> },
    /// A scene object's socket of this character joined or left: presence
    /// frames to this object's presence sockets (and to the scene objects
    /// that want them, [`Effect::ScenePresence`]); `count` includes the
    /// scene sockets set by [`Hub::set_scenes`], after the event.
    ScenePresence {
        event: PresenceEvent,
        client_id: String,
        user: Option<String>,
    },
    /// Relay role: the stream this hub follows restarts at `seq` in `epoch`
    /// (a new epoch, or a gap history no longer covers). Every socket is
    /// closed with 1011, which tells clients to resume, and seq and epoch
    /// are set; the retained copy is unknown until adopted again.
    Resync { epoch: String, seq: u64 },
    /// Owner: `DELETE .../retained/{topic}`, already persisted by the shell
    /// with revision `rev` ([`RetainedSet::next_rev`]); answered with
    /// [`Reply::Cleared`].
    ClearRetained {
        topic: crate::topic::Topic,
        rev: u64,
    },
}

/// The answer to the request that caused an input.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Published {
        seqs: Vec<u64>,
        delivered: usize,
    },
    /// The publish was refused: the history backlog is full.
    Backlogged,
    Kicked,
    NoSuchClient,
    /// Sockets closed by a [`Input::Revoke`].
    Revoked {
        closed: usize,
    },
    /// The publish was refused, nothing stored (the retained-topic bound).
    Refused(ApiError),
    /// Whether the topic had a retained command to clear.
    Cleared {
        cleared: bool,
    },
}

/// Something the shell must do, in the order returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send `text` to each listed socket (the text is shared, serialized once).
    Send {
        to: Vec<ClientKey>,
        text: Rc<str>,
    },
    /// Close the socket with `code` and drop it; the hub has forgotten it.
    Close {
        client: ClientKey,
        code: u16,
        reason: &'static str,
    },
    /// The client's [`ClientInfo`] changed: save the socket's attachment.
    SaveClient {
        client: ClientKey,
    },
    /// Store `rows` (in one turn), then feed back [`Input::Stored`].
    Store(Pending),
    Reply(Reply),
    Log(Event),
    /// The subscriber summary (count, filter counts) changed.
    SubscribersChanged,
    /// A presence frame for the presence sockets of scene objects (each
    /// sends it on with `character` added, except to the socket it is about).
    ScenePresence(Rc<str>),
}

#[derive(Debug)]
struct Client {
    info: ClientInfo,
    /// Token expiry, ms since the Unix epoch.
    expires_at: Option<u64>,
    /// Consecutive refused frames; any accepted frame resets it.
    bad_frames: u32,
}

/// One character's live state.
#[derive(Debug)]
pub struct Hub {
    character: CharacterId,
    epoch: String,
    seq: u64,
    batch_window_ms: u64,
    subs: SubscriptionMap<ClientKey>,
    clients: BTreeMap<ClientKey, Client>,
    by_id: HashMap<String, ClientKey>,
    /// Token timers: (expires_at, client).
    expiry: BTreeSet<(u64, ClientKey)>,
    /// id -> (seq, ts) of its first publish.
    idempotency: HashMap<String, (u64, u64)>,
    /// (id, ts) in insertion order, so expiry pops from the front.
    idempotency_order: VecDeque<(String, u64)>,
    /// Batching: frames waiting for the flush at `flush_at`, per client.
    pending: BTreeMap<ClientKey, Vec<Rc<str>>>,
    flush_at: Option<u64>,
    /// While clients are connected, the subscriber summary is reported again
    /// this often (the registry's lease refresh); 0 = never.
    refresh_every_ms: u64,
    refresh_at: Option<u64>,
    /// Retained commands: the owner's set of record, or a relay's copy.
    retained: RetainedSet,
    /// Sockets of the scene objects this character feeds (as they last
    /// said), counted in presence `count`; and whether one of them holds a
    /// presence socket (then presence frames go to them too).
    scene_sockets: usize,
    scene_presence: bool,
}

impl Hub {
    /// A hub for `character` whose history is at `latest_seq` in `epoch`.
    /// `batch_window_ms == 0` sends every command at once.
    pub fn new(
        character: CharacterId,
        epoch: String,
        latest_seq: u64,
        batch_window_ms: u64,
    ) -> Hub {
        Hub {
            character,
            epoch,
            seq: latest_seq,
            batch_window_ms,
            subs: SubscriptionMap::new(),
            clients: BTreeMap::new(),
            by_id: HashMap::new(),
            expiry: BTreeSet::new(),
            idempotency: HashMap::new(),
            idempotency_order: VecDeque::new(),
            pending: BTreeMap::new(),
            flush_at: None,
            refresh_every_ms: 0,
            refresh_at: None,
            retained: RetainedSet::unknown(),
            scene_sockets: 0,
            scene_presence: false,
        }
    }

    /// The retained commands as stored (owner) or adopted (relay); part of
    /// building the hub, or a relay's copy taking the owner's snapshot.
    pub fn set_retained(&mut self, set: RetainedSet) {
        self.retained = set;
    }

    pub fn retained(&self) -> &RetainedSet {
        &self.retained
    }

    /// The `command` frame of a retained command (`retained: true`).
    pub fn retained_frame_of(&self, row: &StoredCommand) -> String {
        retained_frame_json(&self.character, &self.epoch, row.seq, row.ts, &row.command)
    }

    /// What the shell knows of its scene objects: their sockets (counted in
    /// presence `count`) and whether any holds a presence socket.
    pub fn set_scenes(&mut self, sockets: usize, presence: bool) {
        self.scene_sockets = sockets;
        self.scene_presence = presence;
    }

    /// Reports the subscriber summary again every `every_ms` while clients
    /// are connected (0 = only on change): the registry's entries are leases
    /// that lapse when their object stops refreshing them.
    pub fn with_refresh(mut self, every_ms: u64) -> Hub {
        self.refresh_every_ms = every_ms;
        self
    }

    /// Re-learns a recent idempotency key on wake (from stored history);
    /// part of building the hub, before any input.
    pub fn restore_idempotency(&mut self, id: String, seq: u64, ts: u64) {
        self.remember_id(id, seq, ts);
    }

    /// Records an id's first publish, forgetting the oldest ids past
    /// [`MAX_IDEMPOTENCY_IDS`].
    fn remember_id(&mut self, id: String, seq: u64, ts: u64) {
        self.idempotency.insert(id.clone(), (seq, ts));
        self.idempotency_order.push_back((id, ts));
        while self.idempotency.len() > MAX_IDEMPOTENCY_IDS {
            let Some((old, at)) = self.idempotency_order.pop_front() else {
                break;
            };
            // An entry whose id was recorded again later is stale: skip it.
            if self.idempotency.get(&old).map(|e| e.1) == Some(at) {
                self.idempotency.remove(&old);
            }
        }
    }

    /// Idempotency ids held (at most [`MAX_IDEMPOTENCY_IDS`]).
    pub fn idempotency_len(&self) -> usize {
        self.idempotency.len()
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn character(&self) -> &CharacterId {
        &self.character
    }

    pub fn client(&self, key: ClientKey) -> Option<&ClientInfo> {
        self.clients.get(&key).map(|c| &c.info)
    }

    pub fn expires_at(&self, key: ClientKey) -> Option<u64> {
        self.clients.get(&key).and_then(|c| c.expires_at)
    }

    /// Connected clients, ascending by key.
    pub fn clients(&self) -> impl Iterator<Item = (ClientKey, &ClientInfo)> {
        self.clients.iter().map(|(k, c)| (*k, &c.info))
    }

    pub fn key_of(&self, client_id: &str) -> Option<ClientKey> {
        self.by_id.get(client_id).copied()
    }

    /// Connected sockets (the presence `count`).
    pub fn subscriber_count(&self) -> usize {
        self.clients.len()
    }

    /// Whether a new socket must be refused: the character already holds
    /// `max` (the `MAX_SUBSCRIBERS` var).
    pub fn is_full(&self, max: usize) -> bool {
        self.clients.len() >= max
    }

    /// Filter -> number of sockets holding it.
    pub fn filter_counts(&self) -> BTreeMap<String, usize> {
        self.subs.filter_counts()
    }

    /// The `command` frame of a history row.
    pub fn command_frame_of(&self, row: &StoredCommand) -> String {
        command_frame_json(&self.character, &self.epoch, row.seq, row.ts, &row.command)
    }

    /// When the hub next needs [`Input::Timeout`]: the earliest batch flush
    /// or token expiry.
    pub fn poll_timeout(&self) -> Option<u64> {
        let expiry = self.expiry.first().map(|(at, _)| *at);
        [expiry, self.flush_at, self.refresh_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The one entry point: what `input` at `now` (ms since the Unix epoch)
    /// leads to.
    pub fn handle(&mut self, now: u64, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Restore {
                client,
                info,
                expires_at,
            } => {
                self.register(client, info, expires_at);
                self.arm_refresh(now);
            }
            Input::Connect {
                client,
                info,
                expires_at,
                resume,
            } => self.connect(now, client, info, expires_at, resume, &mut out),
            Input::Text { client, text } => self.text(now, client, &text, &mut out),
            Input::Binary { client } => {
                if self.clients.contains_key(&client) {
                    let msg = "binary frames are not supported";
                    self.refuse(now, client, ErrorCode::BadMessage, msg, None, &mut out);
                }
            }
            Input::Gone { client, how } => {
                let (code, reason) = match how {
                    Gone::Closed(code) => {
                        (echo_close_code(code), DisconnectReason::ClientClosed(code))
                    }
                    Gone::Error => (CloseCode::Internal.code(), DisconnectReason::SocketError),
                };
                // Completes the closing handshake (or drops an errored socket).
                self.end(now, client, code, "closed", reason, &mut out);
            }
            Input::ScenePresence {
                event,
                client_id,
                user,
            } => {
                let who = ClientInfo {
                    client_id,
                    user,
                    topics: Vec::new(),
                    presence: false,
                    connected_at: now,
                    can_publish: false,
                };
                out.extend(self.presence(event, &who, 0));
            }
            Input::Kick { client_id } => match self.key_of(&client_id) {
                Some(key) => {
                    self.close(now, key, CloseCode::ByAdmin, &mut out);
                    out.push(Effect::Reply(Reply::Kicked));
                }
                None => out.push(Effect::Reply(Reply::NoSuchClient)),
            },
            Input::Revoke { user } => {
                let keys: Vec<ClientKey> = self
                    .clients
                    .iter()
                    .filter(|(_, c)| c.info.user.as_deref() == Some(user.as_str()))
                    .map(|(k, _)| *k)
                    .collect();
                for key in &keys {
                    self.close(now, *key, CloseCode::RightsWithdrawn, &mut out);
                }
                out.push(Effect::Reply(Reply::Revoked { closed: keys.len() }));
            }
            Input::Publish { commands } => match self.admits_retained(&commands, now) {
                Ok(()) => out.push(Effect::Store(self.plan(commands, now, Origin::Http))),
                Err(e) => out.push(Effect::Reply(Reply::Refused(e))),
            },
            Input::Stored(pending) => self.commit(now, pending, &mut out),
            Input::StoreFailed(pending) => {
                if let Origin::Client { client, .. } = pending.origin {
                    self.close(now, client, CloseCode::Internal, &mut out);
                }
            }
            Input::Backlogged(pending) => match pending.origin {
                Origin::Http => out.push(Effect::Reply(Reply::Backlogged)),
                // Not the client's fault: an error frame, not a refused frame.
                Origin::Client { client, r#ref } => {
                    if self.clients.contains_key(&client) {
                        let msg = "history archiving lags; publish again later";
                        let frame =
                            error_frame_json(ErrorCode::HistoryBacklog, msg, r#ref.as_deref());
                        out.push(send(vec![client], frame));
                    }
                }
            },
            Input::Timeout => self.timeout(now, &mut out),
            Input::Relayed { rows } => {
                for row in &rows {
                    if row.seq > self.seq {
                        self.seq = row.seq;
                        self.retained.apply(row);
                        self.deliver(now, row, &mut out);
                    }
                }
            }
            Input::Resync { epoch, seq } => {
                let keys: Vec<ClientKey> = self.clients.keys().copied().collect();
                for key in keys {
                    self.close(now, key, CloseCode::Internal, &mut out);
                }
                self.epoch = epoch;
                self.seq = seq;
                self.retained.reset();
            }
            Input::ClearRetained { topic, rev } => {
                let cleared = self.retained.clear(&topic, rev);
                out.push(Effect::Reply(Reply::Cleared { cleared }));
            }
        }
        out
    }

    /// Adds a client under `key` (replacing any socket the shell reused the
    /// key for); its topics are deduped (the shell bounds them).
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
            Client {
                info,
                expires_at,
                bad_frames: 0,
            },
        );
    }

    /// Removes every trace of a client; its info, if it was known.
    fn forget(&mut self, key: ClientKey) -> Option<ClientInfo> {
        let c = self.clients.remove(&key)?;
        self.subs.remove_client(key);
        self.pending.remove(&key);
        if self.pending.is_empty() {
            self.flush_at = None;
        }
        if let Some(at) = c.expires_at {
            self.expiry.remove(&(at, key));
        }
        if self.clients.is_empty() {
            self.refresh_at = None;
        }
        if self.by_id.get(&c.info.client_id) == Some(&key) {
            self.by_id.remove(&c.info.client_id);
        }
        Some(c.info)
    }

    /// After a wake whose restored clients the registry still lists: the
    /// next lease refresh at `at` (`routing::lease`) instead of one
    /// interval from now.
    pub fn resume_refresh(&mut self, at: u64) {
        if self.refresh_every_ms > 0 && !self.clients.is_empty() {
            self.refresh_at = Some(at);
        }
    }

    /// Starts the refresh timer when the first client arrives.
    fn arm_refresh(&mut self, now: u64) {
        if self.refresh_every_ms > 0 && self.refresh_at.is_none() {
            self.refresh_at = Some(now.saturating_add(self.refresh_every_ms));
        }
    }

    fn connect(
        &mut self,
        now: u64,
        key: ClientKey,
        info: ClientInfo,
        expires_at: Option<u64>,
        resume: Option<Resume>,
        out: &mut Vec<Effect>,
    ) {
        self.register(key, info, expires_at);
        self.arm_refresh(now);
        let Some(c) = self.clients.get(&key) else {
            return;
        };
        let info = &c.info;
        let welcome = welcome_frame_json(
            &info.client_id,
            &self.character,
            &self.epoch,
            self.seq,
            &info.topics,
        );
        out.push(send(vec![key], welcome));
        if let Some(resume) = resume {
            // Replayed frames are always single `command` frames, even with
            // batching on, and come before any live frame.
            // The reader chose the rows (after `since`, or all that are left
            // when the epoch changed); the filters are applied again here.
            for row in resume
                .rows
                .iter()
                .filter(|r| info.topics.iter().any(|f| f.matches(&r.command.topic)))
            {
                out.push(send(vec![key], self.command_frame_of(row)));
            }
            let complete = resume.complete && resume.since <= self.seq;
            out.push(send(
                vec![key],
                recovered_frame_json(resume.since, self.seq, complete, resume.next_since),
            ));
        } else {
            // Without `since`: the retained commands its filters match, as
            // single frames in seq order, before anything live.
            for row in self.retained.matching(&info.topics) {
                out.push(send(vec![key], self.retained_frame_of(row)));
            }
        }
        out.extend(self.presence(PresenceEvent::Join, info, key));
        out.push(Effect::Log(Event {
            ts: now,
            kind: EventKind::Connect {
                topics: info.topics.clone(),
            },
            client_id: Some(info.client_id.clone()),
            user: info.user.clone(),
        }));
        out.push(Effect::SubscribersChanged);
    }

    /// Presence frame to every presence socket except `except` (0: none),
    /// and to the scene objects that hold presence sockets, while the
    /// character has at most [`MAX_PRESENCE_SOCKETS`] sockets here and in
    /// its scene objects (counting the one that joins or leaves).
    fn presence(&self, event: PresenceEvent, who: &ClientInfo, except: ClientKey) -> Vec<Effect> {
        let count = self.clients.len() + self.scene_sockets;
        let sockets = match event {
            PresenceEvent::Join => count,
            PresenceEvent::Leave => count + 1,
        };
        if sockets > MAX_PRESENCE_SOCKETS {
            return Vec::new();
        }
        let to: Vec<ClientKey> = self
            .clients
            .iter()
            .filter(|(k, c)| **k != except && c.info.presence)
            .map(|(k, _)| *k)
            .collect();
        if to.is_empty() && !self.scene_presence {
            return Vec::new();
        }
        let text: Rc<str> =
            presence_frame_json(event, &who.client_id, who.user.as_deref(), count).into();
        let mut out = Vec::new();
        if !to.is_empty() {
            out.push(Effect::Send {
                to,
                text: Rc::clone(&text),
            });
        }
        if self.scene_presence {
            out.push(Effect::ScenePresence(text));
        }
        out
    }

    /// Closes a known client with one of our codes.
    fn close(&mut self, now: u64, key: ClientKey, code: CloseCode, out: &mut Vec<Effect>) {
        let reason = DisconnectReason::Closed(code);
        self.end(now, key, code.code(), code.reason(), reason, out);
    }

    /// The one way a socket ends: close effect, forget, presence `leave`,
    /// log, summary change. Unknown keys yield nothing, so a socket is never
    /// logged twice.
    fn end(
        &mut self,
        now: u64,
        key: ClientKey,
        code: u16,
        close_reason: &'static str,
        reason: DisconnectReason,
        out: &mut Vec<Effect>,
    ) {
        let Some(info) = self.forget(key) else {
            return;
        };
        out.push(Effect::Close {
            client: key,
            code,
            reason: close_reason,
        });
        out.extend(self.presence(PresenceEvent::Leave, &info, key));
        out.push(Effect::Log(Event {
            ts: now,
            kind: EventKind::Disconnect { reason },
            client_id: Some(info.client_id),
            user: info.user,
        }));
        out.push(Effect::SubscribersChanged);
    }

    /// The seq of `id` if it was first published within the window.
    /// The retained-topic bound, counting only the commands this publish
    /// will store: a repeat of a recent `id` stores nothing, so it is
    /// answered as the first time even when the bound is reached since.
    fn admits_retained(&self, commands: &[Command], now: u64) -> Result<(), ApiError> {
        self.retained.admits(commands.iter().filter(|c| {
            c.id.as_deref()
                .is_none_or(|id| self.recent_seq(id, now).is_none())
        }))
    }

    fn recent_seq(&self, id: &str, now: u64) -> Option<u64> {
        self.idempotency
            .get(id)
            .filter(|(_, ts)| now.saturating_sub(*ts) < IDEMPOTENCY_WINDOW_MS)
            .map(|(seq, _)| *seq)
    }

    /// Assigns seqs without changing anything: new commands get `seq+1,
    /// +2, …`; an `id` seen within the window, or earlier in this batch, gets
    /// the first seq and no row.
    fn plan(&self, commands: Vec<Command>, now: u64, origin: Origin) -> Pending {
        let mut pending = Pending {
            seqs: Vec::with_capacity(commands.len()),
            rows: Vec::with_capacity(commands.len()),
            origin,
        };
        let mut batch_ids: HashMap<String, u64> = HashMap::new();
        let mut next = self.seq;
        for command in commands {
            if let Some(id) = command.id.as_deref() {
                if let Some(seq) = self
                    .recent_seq(id, now)
                    .or_else(|| batch_ids.get(id).copied())
                {
                    pending.seqs.push(seq);
                    continue;
                }
            }
            next += 1;
            if let Some(id) = &command.id {
                batch_ids.insert(id.clone(), next);
            }
            pending.seqs.push(next);
            pending.rows.push(StoredCommand {
                seq: next,
                ts: now,
                command,
            });
        }
        pending
    }

    /// Applies a stored plan: advances seq, records ids, and delivers each
    /// new command (serialized once) to the matching sockets, or queues it
    /// for the next flush when batching. Rows at or below the current seq (a
    /// plan committed twice) are skipped.
    fn commit(&mut self, now: u64, pending: Pending, out: &mut Vec<Effect>) {
        self.prune_idempotency(now);
        let mut delivered = 0;
        for row in &pending.rows {
            if row.seq <= self.seq {
                continue;
            }
            self.seq = row.seq;
            if let Some(id) = &row.command.id {
                self.remember_id(id.clone(), row.seq, row.ts);
            }
            self.retained.apply(row);
            delivered += self.deliver(now, row, out);
        }
        let (client_id, user) = match &pending.origin {
            Origin::Client { client, .. } => self.clients.get(client).map_or((None, None), |c| {
                (Some(c.info.client_id.clone()), c.info.user.clone())
            }),
            Origin::Http => (None, None),
        };
        out.push(Effect::Log(Event {
            ts: now,
            kind: EventKind::Publish {
                seqs: pending.seqs.clone(),
                delivered,
            },
            client_id,
            user,
        }));
        match pending.origin {
            Origin::Http => out.push(Effect::Reply(Reply::Published {
                seqs: pending.seqs,
                delivered,
            })),
            Origin::Client { client, r#ref } => {
                if self.clients.contains_key(&client) {
                    let seq = pending.seqs.last().copied().unwrap_or(self.seq);
                    out.push(send(
                        vec![client],
                        published_frame_json(seq, r#ref.as_deref()),
                    ));
                }
            }
        }
    }

    /// Sends one committed row (serialized once) to the matching sockets, or
    /// queues it for the next flush when batching; the sockets it reached.
    fn deliver(&mut self, now: u64, row: &StoredCommand, out: &mut Vec<Effect>) -> usize {
        let to = self.subs.matching(&row.command.topic);
        if to.is_empty() {
            return 0;
        }
        let n = to.len();
        let text: Rc<str> = Rc::from(self.command_frame_of(row));
        if self.batch_window_ms == 0 {
            out.push(Effect::Send { to, text });
        } else {
            for k in to {
                self.pending.entry(k).or_default().push(Rc::clone(&text));
            }
            if self.flush_at.is_none() {
                self.flush_at = Some(now.saturating_add(self.batch_window_ms));
            }
        }
        n
    }

    /// Drops idempotency entries older than the window, oldest first.
    fn prune_idempotency(&mut self, now: u64) {
        while let Some((id, ts)) = self.idempotency_order.front() {
            if now.saturating_sub(*ts) < IDEMPOTENCY_WINDOW_MS {
                break;
            }
            if self.idempotency.get(id).map(|e| e.1) == Some(*ts) {
                self.idempotency.remove(id);
            }
            self.idempotency_order.pop_front();
        }
    }

    /// Runs every timer due at `now`: the batch flush first (so a socket
    /// whose token expires still gets what was queued before), then expiry.
    fn timeout(&mut self, now: u64, out: &mut Vec<Effect>) {
        if self.flush_at.is_some_and(|at| at <= now) {
            self.flush(out);
        }
        while let Some(&(at, key)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.remove(&(at, key));
            self.close(now, key, CloseCode::TokenExpired, out);
        }
        if self.refresh_at.is_some_and(|at| at <= now) {
            self.refresh_at = None;
            if !self.clients.is_empty() {
                out.push(Effect::SubscribersChanged);
                self.arm_refresh(now);
            }
        }
    }

    /// Batching: one `batch` frame per socket with pending frames (in seq
    /// order, even if it holds a single command), or several in seq order
    /// when they would pass [`MAX_BATCH_FRAME_BYTES`]; sockets with
    /// identical lists share one `Send`.
    fn flush(&mut self, out: &mut Vec<Effect>) {
        self.flush_at = None;
        let pending = std::mem::take(&mut self.pending);
        let mut groups: Vec<(Vec<Rc<str>>, Vec<ClientKey>)> = Vec::new();
        let mut index: HashMap<Vec<*const u8>, usize> = HashMap::new();
        for (key, frames) in pending {
            let sig: Vec<*const u8> = frames.iter().map(|f| f.as_ptr()).collect();
            match index.get(&sig) {
                Some(&i) => groups[i].1.push(key),
                None => {
                    index.insert(sig, groups.len());
                    groups.push((frames, vec![key]));
                }
            }
        }
        for (frames, to) in groups {
            for chunk in batch_chunks(&self.character, &frames) {
                let refs: Vec<&str> = chunk.iter().map(|f| &**f).collect();
                out.push(send(to.clone(), batch_frame_json(&self.character, &refs)));
            }
        }
    }

    /// A client text frame.
    fn text(&mut self, now: u64, key: ClientKey, text: &str, out: &mut Vec<Effect>) {
        let Some(client) = self.clients.get(&key) else {
            return;
        };
        let can_publish = client.info.can_publish;
        let frame = match parse_client_frame(text) {
            Ok(f) => f,
            Err(e) => {
                return self.refuse(now, key, e.code, &e.message, e.r#ref.as_deref(), out);
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
                    let code = ErrorCode::BadRequest;
                    return self.refuse(now, key, code, &msg, r#ref.as_deref(), out);
                }
                let changed = !new.is_empty();
                for f in new {
                    self.subs.subscribe(key, f);
                }
                self.topics_changed(key, changed, out);
            }
            ClientFrame::Unsubscribe { topics, .. } => {
                let mut changed = false;
                for f in &topics {
                    changed |= self.subs.unsubscribe(key, f);
                }
                self.topics_changed(key, changed, out);
            }
            ClientFrame::Publish { command, r#ref } => {
                if !can_publish {
                    let msg = "this connection may not publish";
                    let code = ErrorCode::Forbidden;
                    return self.refuse(now, key, code, msg, r#ref.as_deref(), out);
                }
                if let Err(e) = crate::schedule::check_commands(std::slice::from_ref(&command), now)
                {
                    return self.refuse(now, key, e.code, &e.message, r#ref.as_deref(), out);
                }
                if let Err(e) = self.admits_retained(std::slice::from_ref(&command), now) {
                    return self.refuse(now, key, e.code, &e.message, r#ref.as_deref(), out);
                }
                self.accept(key);
                let origin = Origin::Client { client: key, r#ref };
                out.push(Effect::Store(self.plan(vec![command], now, origin)));
            }
        }
    }

    fn accept(&mut self, key: ClientKey) {
        if let Some(c) = self.clients.get_mut(&key) {
            c.bad_frames = 0;
        }
    }

    /// Syncs the stored topic list and answers `subscribed` (persisting first
    /// when something changed).
    fn topics_changed(&mut self, key: ClientKey, changed: bool, out: &mut Vec<Effect>) {
        self.accept(key);
        let topics = self.subs.filters_of(key);
        if changed {
            if let Some(c) = self.clients.get_mut(&key) {
                c.info.topics = topics.clone();
            }
            out.push(Effect::SaveClient { client: key });
            out.push(Effect::SubscribersChanged);
        }
        out.push(send(vec![key], subscribed_frame_json(&topics)));
    }

    /// An `error` frame for a refused frame; the tenth consecutive one also
    /// closes the socket with 4400.
    fn refuse(
        &mut self,
        now: u64,
        key: ClientKey,
        code: ErrorCode,
        message: &str,
        r#ref: Option<&str>,
        out: &mut Vec<Effect>,
    ) {
        out.push(send(vec![key], error_frame_json(code, message, r#ref)));
        let bad = self.clients.get_mut(&key).map_or(0, |c| {
            c.bad_frames += 1;
            c.bad_frames
        });
        if bad >= MAX_BAD_FRAMES {
            self.close(now, key, CloseCode::BadFrames, out);
        }
    }
}

/// Splits `frames` (in order) into runs whose `batch` frame stays within
/// [`MAX_BATCH_FRAME_BYTES`]; a frame too large to share one goes alone.
fn batch_chunks<'a>(character: &CharacterId, frames: &'a [Rc<str>]) -> Vec<&'a [Rc<str>]> {
    // `{"type":"batch","character":"…","commands":[` and `]}`.
    let overhead = character.as_str().len() + 48;
    let mut chunks = Vec::new();
    let (mut start, mut size) = (0, overhead);
    for (i, f) in frames.iter().enumerate() {
        let more = f.len() + 1;
        if i > start && size + more > MAX_BATCH_FRAME_BYTES {
            chunks.push(&frames[start..i]);
            (start, size) = (i, overhead);
        }
        size += more;
    }
    if start < frames.len() {
        chunks.push(&frames[start..]);
    }
    chunks
}

fn send(to: Vec<ClientKey>, text: String) -> Effect {
    Effect::Send {
        to,
        text: Rc::from(text),
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
