//! The character's in-memory state and the one place where the hub's
//! effects become runtime calls: frames sent to sockets (one JS string per
//! frame, shared by every recipient), closes, attachment saves, the storage
//! of a publish between its plan and its commit, the event-log buffer (rows
//! in SQLite, flushed to KV in large batches) and the deferred tasks the
//! effects ask for.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use routing::alarm::Armed;
use routing::archive::{backlog_full, backlog_limit, next_page_ready};
use routing::backoff::Backoff;
use routing::events::LogEvent;
use routing::hub::{ClientKey, Effect, Gone, Hub, Input, Pending, Reply};
use routing::logbuf::{write_staged_now, Held, LogBuffer};
use routing::relay::Follower;
use routing::relays::RelaySet;
use routing::tasks::Scheduler;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::{console_error, console_warn, Storage, WebSocket};

use super::attachment;
use super::tasks::Task;
use crate::config::Config;
use crate::error::AppError;
use crate::forward::js_message;
use crate::store::Store;

pub type Shared = Rc<RefCell<Option<Core>>>;

/// `Retry-After` of a subscribe refused with `character_full`.
pub const CHARACTER_FULL_RETRY_SECS: u64 = 5;

#[wasm_bindgen]
extern "C" {
    /// A WebSocket seen through the one method fan-out needs: `send` with a
    /// JS value, so one string can go to many sockets without re-copying.
    type SharedTextSocket;
    #[wasm_bindgen(method, catch, js_name = send)]
    fn send_shared(this: &SharedTextSocket, data: &JsValue) -> std::result::Result<(), JsValue>;
}

/// Sends a JS string made once per frame (`JsValue::from_str`) to one
/// socket, so a frame for many sockets leaves wasm memory once.
pub fn send_js(ws: &WebSocket, text: &JsValue) -> std::result::Result<(), JsValue> {
    ws.as_ref()
        .unchecked_ref::<SharedTextSocket>()
        .send_shared(text)
}

/// What this object is to its character.
pub enum Role {
    /// The character's own object: sequencing, storage, history, and the
    /// relays it feeds once it holds `FANOUT_LIMIT` sockets.
    Owner { relays: RelaySet },
    /// Relay `index`: holds sockets and forwards what the owner stored.
    Relay {
        index: u32,
        follower: Follower,
        /// Subscribes being set up (a resume read in progress): the relay
        /// counts as holding sockets, so it never skips past a gap.
        pending: usize,
    },
}

pub struct Core {
    pub hub: Hub,
    pub role: Role,
    /// The object's name: the character's, or its relay's.
    pub name: String,
    pub store: Store,
    pub config: Config,
    /// The socket behind each hub key.
    pub sockets: HashMap<ClientKey, WebSocket>,
    next_key: ClientKey,
    /// The event-log buffer's policy state (the rows are in SQLite).
    pub logbuf: LogBuffer,
    /// Serialized events (ts, body) waiting to be written to SQLite with
    /// the next write (`routing::logbuf`, "staged").
    staged: Vec<(u64, String)>,
    /// Whether the current turn stored something (so staged events ride
    /// along in its commit).
    turn_writes: bool,
    pub archived_through: u64,
    pub page_size: u64,
    /// Failed archive attempts and the retry the alarm waits for.
    pub archive: Backoff,
    /// Unarchived rows at which publishes are refused.
    pub backlog_limit: u64,
    /// The object's storage, for arming the alarm from deferred tasks too.
    pub storage: Rc<Storage>,
    pub tasks: Scheduler<Task>,
    /// Tasks to start once the current handler returns.
    pub to_start: Vec<Task>,
    pub report_version: u64,
    /// The alarm the runtime holds, as far as this isolate knows.
    pub alarm: Armed,
    /// Relay role: client publishes to forward to the owner.
    pub to_forward: Vec<Pending>,
    /// Owner: the last feed body, keyed by (after, lost, seq), shared by
    /// relays at the same place in the stream.
    pub feed_cache: Option<((u64, bool, u64), Rc<str>)>,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hub: Hub,
        role: Role,
        name: String,
        store: Store,
        config: Config,
        archived_through: u64,
        page_size: u64,
        storage: Storage,
    ) -> Self {
        let backlog_limit = backlog_limit(
            config.history_backlog_limit,
            config.history_limit,
            page_size,
        );
        Self {
            hub,
            role,
            name,
            store,
            sockets: HashMap::new(),
            next_key: 1,
            logbuf: LogBuffer::new(config.log_flush_ms, Held::default()),
            staged: Vec::new(),
            turn_writes: false,
            archived_through,
            page_size,
            archive: Backoff::default(),
            backlog_limit,
            storage: Rc::new(storage),
            tasks: Scheduler::default(),
            to_start: Vec::new(),
            report_version: 0,
            alarm: Armed::Unknown,
            to_forward: Vec::new(),
            feed_cache: None,
            config,
        }
    }

    /// A fresh key for a socket the shell is about to hand to the hub.
    pub fn add_socket(&mut self, ws: WebSocket) -> ClientKey {
        while self.sockets.contains_key(&self.next_key) || self.next_key == 0 {
            self.next_key = self.next_key.wrapping_add(1);
        }
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1);
        self.sockets.insert(key, ws);
        key
    }

    pub fn key_of(&self, ws: &WebSocket) -> Option<ClientKey> {
        self.hub.key_of(&attachment::client_id(ws)?)
    }

    /// Asks for a deferred task; it starts once the handler returns.
    pub fn request(&mut self, task: Task) {
        if self.tasks.request(task) {
            self.to_start.push(task);
        }
    }

    /// Feeds one input to the hub and applies everything it leads to; the
    /// replies are for the caller's answer.
    pub fn feed(&mut self, now: u64, input: Input) -> Vec<Reply> {
        let mut replies = Vec::new();
        let effects = self.hub.handle(now, input);
        self.apply(now, effects, &mut replies);
        self.settle_log();
        replies
    }

    /// At the end of a turn's logging: the staged events go to SQLite now
    /// when the turn stored something (or the stage is full); otherwise
    /// the stage task writes them `LOG_STAGE_MS` later.
    pub fn settle_log(&mut self) {
        if write_staged_now(self.staged.len(), self.turn_writes) {
            self.write_staged();
        } else if !self.staged.is_empty() {
            self.request(Task::StageLogs);
        }
        self.turn_writes = false;
    }

    fn apply(&mut self, now: u64, effects: Vec<Effect>, replies: &mut Vec<Reply>) {
        for effect in effects {
            match effect {
                Effect::Send { to, text } => {
                    // A socket the runtime refused to send to is ended at
                    // once (logged once, as a socket error), not ignored.
                    for client in self.send(&to, &text) {
                        let more = self.hub.handle(
                            now,
                            Input::Gone {
                                client,
                                how: Gone::Error,
                            },
                        );
                        self.apply(now, more, replies);
                    }
                }
                Effect::Close {
                    client,
                    code,
                    reason,
                } => self.close(client, code, reason),
                Effect::SaveClient { client } => {
                    if let (Some(ws), Some(info)) =
                        (self.sockets.get(&client), self.hub.client(client))
                    {
                        attachment::save(ws, info, self.hub.expires_at(client), &self.store);
                    }
                }
                // A relay stores nothing: a client's publish goes to the owner.
                Effect::Store(pending) if self.is_relay() => self.to_forward.push(pending),
                Effect::Store(pending) if !pending.rows.is_empty() && self.backlogged() => {
                    // Nothing unarchived is ever deleted, so when the archive
                    // lags this far the publish is refused, nothing stored.
                    let more = self.hub.handle(now, Input::Backlogged(pending));
                    self.apply(now, more, replies);
                    self.archive_if_due(now);
                }
                Effect::Store(pending) => {
                    // The same turn stores and delivers, so the runtime's
                    // output gate holds the frames until the rows are durable.
                    let stored = self
                        .store
                        .append(&pending.rows, self.config.test_fail_store_at_row);
                    let next = match stored {
                        Ok(()) => {
                            self.turn_writes = true;
                            // Relays get the rows in the same turn's tasks.
                            self.feed_relays();
                            Input::Stored(pending)
                        }
                        Err(e) => {
                            console_error!("storing a publish failed: {e}");
                            Input::StoreFailed(pending)
                        }
                    };
                    let more = self.hub.handle(now, next);
                    self.apply(now, more, replies);
                    self.archive_if_due(now);
                }
                Effect::Reply(reply) => replies.push(reply),
                Effect::Log(event) => {
                    let event = event.to_log(self.hub.character().as_str());
                    self.log(&event);
                }
                Effect::SubscribersChanged => {
                    self.request(Task::Report);
                    self.note_listing(now);
                }
                Effect::ScenePresence(text) => {
                    let slots = match &mut self.role {
                        Role::Owner { relays } => relays.scenes.push_presence(&text),
                        Role::Relay { .. } => Vec::new(),
                    };
                    for slot in slots {
                        self.request(Task::FeedScene(slot));
                    }
                }
            }
        }
    }

    /// This turn writes to SQLite (a new object's schema): staged events
    /// join that commit instead of one of their own.
    pub fn note_turn_writes(&mut self) {
        self.turn_writes = true;
    }

    /// A report that lists sockets is on its way: its time is stored now,
    /// in this turn's commit, when `routing::lease` asks for it, rather than
    /// in a commit of its own once the registry answered. Stored a little
    /// early (before the report arrives), it only brings a wake's resumed
    /// refresh earlier; a report that then fails is repaired by the next
    /// refresh, as before.
    fn note_listing(&mut self, now: u64) {
        if self.hub.subscriber_count() == 0 {
            return;
        }
        let lease_ms = self.config.registry_lease_ms;
        match self.store.record_report(true, now, lease_ms) {
            Ok(true) => self.turn_writes = true,
            Ok(false) => {}
            Err(e) => console_error!("recording the listing: {e}"),
        }
    }

    /// Stages one event; [`Core::settle_log`], at the end of the turn,
    /// decides when it is written to SQLite.
    pub fn log(&mut self, event: &LogEvent) {
        match serde_json::to_string(event) {
            Ok(body) => self.staged.push((event.ts, body)),
            Err(e) => console_error!("serializing a log event: {e}"),
        }
    }

    /// Writes the staged events to SQLite, oldest first.
    pub fn write_staged(&mut self) {
        for (ts, body) in std::mem::take(&mut self.staged) {
            self.append_log_row(ts, &body);
        }
    }

    /// Buffers one serialized event in SQLite; starts a flush when the
    /// buffer reached its flush size, and drops the oldest rows (with a
    /// counted `log_dropped` event) when it reached a bound (KV writes
    /// failing). A failure is only reported: the log never fails what it
    /// records.
    fn append_log_row(&mut self, ts: u64, body: &str) {
        let after = match self.store.logs.append(ts, body) {
            Ok(()) => self.logbuf.added(ts, body.len() as u64),
            Err(e) => {
                console_error!("buffering a log event: {e}");
                return;
            }
        };
        if after.drop_oldest > 0 {
            if let Err(e) = self.drop_oldest_logs(ts, after.drop_oldest) {
                console_error!("dropping buffered log events: {e}");
            }
        }
        if after.flush {
            self.flush_logs();
        }
    }

    /// Asks for a log flush. The buffer counts as flushing from now on, not
    /// only once the task begins: otherwise the alarm, armed when this event
    /// settles, would still see the deadline as due and fire again at once
    /// for a second, nearly empty, KV write.
    pub fn flush_logs(&mut self) {
        self.logbuf.begin();
        self.request(Task::FlushLogs);
    }

    fn drop_oldest_logs(&mut self, now: u64, n: u64) -> worker::Result<()> {
        let dropped = self.store.logs.drop_oldest(n)?;
        console_warn!(
            "event log full (KV writes failing): dropped the oldest {} events",
            dropped.rows
        );
        let mut note = LogEvent::new(now, "log_dropped", Some(self.hub.character().as_str()));
        note.detail = Some(serde_json::json!({
            "dropped": dropped.rows,
            "oldest_ts": dropped.oldest_ts,
            "newest_ts": dropped.newest_ts,
        }));
        let body =
            serde_json::to_string(&note).map_err(|e| worker::Error::RustError(e.to_string()))?;
        self.store.logs.append(now, &body)?;
        self.logbuf.recount(self.store.logs.held()?);
        Ok(())
    }

    /// One JS string per frame, shared by every recipient: a
    /// `send_with_str` per socket would copy the text out of wasm memory
    /// once per socket. Returns the sockets whose send failed.
    fn send(&self, to: &[ClientKey], text: &str) -> Vec<ClientKey> {
        let js = JsValue::from_str(text);
        let mut failed = Vec::new();
        for key in to {
            if let Some(ws) = self.sockets.get(key) {
                if let Err(e) = send_js(ws, &js) {
                    console_warn!("send failed, ending the socket: {}", js_message(&e));
                    failed.push(*key);
                }
            }
        }
        failed
    }

    /// The hub has forgotten the client: close its socket and forget it too.
    fn close(&mut self, client: ClientKey, code: u16, reason: &str) {
        let Some(ws) = self.sockets.remove(&client) else {
            return;
        };
        // Fails harmlessly on a socket that is already closed.
        let _ = ws.close(Some(code), Some(reason));
        // Only a socket whose topics were spilled has a row to delete.
        if attachment::spilled(&ws) {
            if let Some(id) = attachment::client_id(&ws) {
                if let Err(e) = self.store.drop_spilled_topics(&id) {
                    console_error!("dropping spilled topics: {e}");
                }
            }
        }
    }

    /// Asks for the archive task when a full page may leave SQLite, unless
    /// a failed attempt's retry is still waiting (the alarm starts that one).
    pub fn archive_if_due(&mut self, now: u64) {
        if self.is_relay() {
            return;
        }
        let limit = self.config.history_limit;
        let ready = next_page_ready(self.archived_through, self.hub.seq(), limit, self.page_size);
        if ready.is_some() && self.archive.may_run(now) {
            self.request(Task::Archive);
        }
    }

    /// Refuses a new socket, before any upgrade, when this object holds
    /// its maximum: a relay `FANOUT_LIMIT`, the owner `MAX_SUBSCRIBERS`
    /// counting its relays' and scene objects' sockets (placement,
    /// `relays.rs`, sends the rest to relays before this).
    pub fn admit(&self) -> Result<(), AppError> {
        let full = match &self.role {
            Role::Relay { pending, .. } => {
                self.hub.subscriber_count() + pending >= self.config.fanout_limit
            }
            Role::Owner { relays } => {
                relays.is_full(self.hub.subscriber_count(), self.config.max_subscribers)
            }
        };
        if full {
            let max = self.config.max_subscribers;
            return Err(AppError::character_full(max, CHARACTER_FULL_RETRY_SECS));
        }
        Ok(())
    }

    pub fn is_relay(&self) -> bool {
        matches!(self.role, Role::Relay { .. })
    }

    /// Tells the hub what it knows of its scene objects now: their sockets
    /// (presence `count`) and whether any wants presence frames.
    pub fn sync_scenes(&mut self) {
        if let Role::Owner { relays } = &self.role {
            let (sockets, presence) = (relays.scenes.sockets(), relays.scenes.presence_wanted());
            self.hub.set_scenes(sockets, presence);
        }
    }

    /// Owner: asks for a feed of every relay (one request in flight each,
    /// later rows coalesced into the next).
    pub fn feed_relays(&mut self) {
        let (indices, slots) = match &self.role {
            Role::Owner { relays } => (relays.indices(), relays.scenes.slots()),
            Role::Relay { .. } => return,
        };
        for i in indices {
            self.request(Task::Feed(i));
        }
        for s in slots {
            self.request(Task::FeedScene(s));
        }
    }

    /// Whether the unarchived rows reached the backlog mark.
    pub fn backlogged(&self) -> bool {
        !self.is_relay() && backlog_full(self.archived_through, self.hub.seq(), self.backlog_limit)
    }

    /// When the object next needs its alarm: the hub's next deadline, the
    /// archive's retry or the event log's flush (of the events buffered,
    /// or of those still staged), whichever is first.
    pub fn next_alarm(&self) -> Option<u64> {
        let oldest_staged = self.staged.iter().map(|(ts, _)| *ts).min();
        [
            self.hub.poll_timeout(),
            self.archive.retry_at,
            self.logbuf.flush_at(),
            self.logbuf.staged_flush_at(oldest_staged),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
