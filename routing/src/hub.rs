//! One character's state machine, sans I/O: who is connected and subscribed
//! to what, the latest `seq`, the idempotency window and the batching
//! buffer. Every call takes the time it needs and returns [`Effect`]s for the
//! Worker shell to apply in order; history rows are persisted by the shell,
//! which is why publishing is split into [`Hub::plan_publish`] (decide seqs,
//! change nothing) and [`Hub::commit_publish`] (after the rows are stored).

use crate::protocol::{
    batch_frame_json, command_frame_json, error_frame_json, parse_client_frame,
    presence_frame_json, published_frame_json, recovered_frame_json, subscribed_frame_json,
    welcome_frame_json, ClientFrame, Command, ErrorCode, PresenceEvent,
};
use crate::subscriptions::SubscriptionMap;
use crate::topic::{CharacterId, TopicFilter, MAX_FILTERS};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

/// The hub's handle for a socket; never reused while the hub lives.
pub type ClientKey = u32;

/// An `id` published again within this window is not delivered again.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 300_000;
/// Consecutive refused frames after which the socket is closed.
pub const MAX_BAD_FRAMES: u32 = 10;
/// Close code for too many bad frames (contract §5).
pub const CLOSE_BAD_FRAMES: u16 = 4400;
/// Close code for an admin disconnect (contract §5).
pub const CLOSE_BY_ADMIN: u16 = 4010;

/// What the shell persists per socket (the hibernation attachment) and the
/// admin API lists.
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

/// Something the shell must do, in the order returned.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Send `text` to each listed socket (the text is shared, serialized once).
    Send { to: Vec<ClientKey>, text: Rc<str> },
    /// Close the socket; the hub has already forgotten the client, so a later
    /// [`Hub::disconnect`] for it is a harmless no-op.
    Close {
        client: ClientKey,
        code: u16,
        reason: String,
    },
    /// The client's [`ClientInfo`] changed: persist the socket attachment.
    SaveClient { client: ClientKey },
    /// Batching: call [`Hub::flush`] at this time.
    ScheduleFlush { at_ms: u64 },
}

/// The outcome of [`Hub::plan_publish`]: nothing has changed yet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishPlan {
    /// One per input command, in order; a duplicate `id` gets the original seq.
    pub seqs: Vec<u64>,
    /// Only the new commands, to persist before [`Hub::commit_publish`].
    pub rows: Vec<StoredCommand>,
}

/// What a client text frame leads to.
#[derive(Clone, Debug, PartialEq)]
pub enum FrameOutcome {
    Effects(Vec<Effect>),
    /// Persist `plan.rows`, then call [`Hub::commit_client_publish`].
    Publish {
        plan: PublishPlan,
        r#ref: Option<String>,
    },
}

#[derive(Debug)]
struct Client {
    info: ClientInfo,
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
    next_key: ClientKey,
    /// id -> (seq, ts) of its first publish.
    idempotency: HashMap<String, (u64, u64)>,
    /// (id, ts) in insertion order, so expiry pops from the front.
    idempotency_order: VecDeque<(String, u64)>,
    /// Batching: frames waiting for the next flush, per client, in seq order.
    pending: BTreeMap<ClientKey, Vec<Rc<str>>>,
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
            next_key: 1,
            idempotency: HashMap::new(),
            idempotency_order: VecDeque::new(),
            pending: BTreeMap::new(),
        }
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

    /// Filter -> number of sockets holding it.
    pub fn filter_counts(&self) -> BTreeMap<String, usize> {
        self.subs.filter_counts()
    }

    /// Registers a client; its topics are deduped (the shell bounds them).
    /// Client ids should be unique; a repeated id makes `key_of` point at
    /// the newest socket.
    fn register(&mut self, mut info: ClientInfo) -> ClientKey {
        while self.clients.contains_key(&self.next_key) || self.next_key == 0 {
            self.next_key = self.next_key.wrapping_add(1);
        }
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1);
        self.subs.add_client(key);
        for f in info.topics.drain(..) {
            self.subs.subscribe(key, f);
        }
        info.topics = self.subs.filters_of(key);
        self.by_id.insert(info.client_id.clone(), key);
        self.clients.insert(
            key,
            Client {
                info,
                bad_frames: 0,
            },
        );
        key
    }

    /// Re-registers a hibernated socket on wake; emits nothing.
    pub fn restore_client(&mut self, info: ClientInfo) -> ClientKey {
        self.register(info)
    }

    /// Re-learns a recent idempotency key on wake (from stored history).
    pub fn restore_idempotency(&mut self, id: String, seq: u64, ts: u64) {
        self.idempotency.insert(id.clone(), (seq, ts));
        self.idempotency_order.push_back((id, ts));
    }

    /// A new socket: `welcome` to it, then presence `join` to every other
    /// socket that asked for presence. The shell persists the attachment
    /// itself when accepting, so no `SaveClient` here.
    pub fn connect(&mut self, info: ClientInfo, _now_ms: u64) -> (ClientKey, Vec<Effect>) {
        let key = self.register(info);
        let mut effects = Vec::new();
        if let Some(c) = self.clients.get(&key) {
            let info = &c.info;
            let welcome = welcome_frame_json(
                &info.client_id,
                &self.character,
                &self.epoch,
                self.seq,
                &info.topics,
            );
            effects.push(send(vec![key], welcome));
            effects.extend(self.presence(
                PresenceEvent::Join,
                &info.client_id,
                info.user.as_deref(),
                key,
            ));
        }
        (key, effects)
    }

    /// Presence frame to every presence socket except `except`.
    fn presence(
        &self,
        event: PresenceEvent,
        client_id: &str,
        user: Option<&str>,
        except: ClientKey,
    ) -> Option<Effect> {
        let to: Vec<ClientKey> = self
            .clients
            .iter()
            .filter(|(k, c)| **k != except && c.info.presence)
            .map(|(k, _)| *k)
            .collect();
        if to.is_empty() {
            return None;
        }
        Some(send(
            to,
            presence_frame_json(event, client_id, user, self.clients.len()),
        ))
    }

    /// A socket went away: forget it (and its unflushed frames) and tell the
    /// presence sockets. Unknown keys yield nothing.
    pub fn disconnect(&mut self, key: ClientKey) -> Vec<Effect> {
        let Some(c) = self.clients.remove(&key) else {
            return Vec::new();
        };
        self.subs.remove_client(key);
        self.pending.remove(&key);
        if self.by_id.get(&c.info.client_id) == Some(&key) {
            self.by_id.remove(&c.info.client_id);
        }
        self.presence(
            PresenceEvent::Leave,
            &c.info.client_id,
            c.info.user.as_deref(),
            key,
        )
        .into_iter()
        .collect()
    }

    /// Admin disconnect by client id: close with 4010 and forget the client.
    /// `None` if no such client (the shell answers 404).
    pub fn kick(&mut self, client_id: &str) -> Option<Vec<Effect>> {
        let key = self.key_of(client_id)?;
        Some(self.close(key, CLOSE_BY_ADMIN, "disconnected by admin"))
    }

    /// Close effect followed by the disconnect's presence effects.
    pub fn close(&mut self, key: ClientKey, code: u16, reason: &str) -> Vec<Effect> {
        let mut effects = vec![Effect::Close {
            client: key,
            code,
            reason: reason.to_owned(),
        }];
        effects.extend(self.disconnect(key));
        effects
    }

    /// The `command` frame of a history row.
    pub fn command_frame_of(&self, row: &StoredCommand) -> String {
        command_frame_json(&self.character, &self.epoch, row.seq, row.ts, &row.command)
    }

    /// Replays history to a resuming socket: the matching rows' command
    /// frames (always single frames, even with batching on), then
    /// `recovered`. `rows` are those with seq > `since` in seq order; when
    /// `client_epoch` differs from ours the shell passes ALL stored rows and
    /// the replay is reported `complete: false`. `oldest_available_seq` is
    /// the oldest seq history still holds (None if it holds nothing).
    pub fn replay(
        &self,
        key: ClientKey,
        since: u64,
        client_epoch: Option<&str>,
        rows: &[StoredCommand],
        oldest_available_seq: Option<u64>,
    ) -> Vec<Effect> {
        let Some(c) = self.clients.get(&key) else {
            return Vec::new();
        };
        let same_epoch = client_epoch.is_none_or(|e| e == self.epoch);
        let mut effects: Vec<Effect> = rows
            .iter()
            .filter(|r| !same_epoch || r.seq > since)
            .filter(|r| c.info.topics.iter().any(|f| f.matches(&r.command.topic)))
            .map(|r| send(vec![key], self.command_frame_of(r)))
            .collect();
        let complete = same_epoch
            && since <= self.seq
            && (since >= self.seq
                || oldest_available_seq.is_some_and(|o| o <= since.saturating_add(1)));
        effects.push(send(
            vec![key],
            recovered_frame_json(since, self.seq, complete),
        ));
        effects
    }

    /// The seq of `id` if it was first published within the window.
    fn recent_seq(&self, id: &str, now_ms: u64) -> Option<u64> {
        self.idempotency
            .get(id)
            .filter(|(_, ts)| now_ms.saturating_sub(*ts) < IDEMPOTENCY_WINDOW_MS)
            .map(|(seq, _)| *seq)
    }

    /// Assigns seqs without changing anything: new commands get
    /// `seq()+1, +2, …`; an `id` seen within 5 minutes, or earlier in this
    /// batch, gets the first seq and no row. A plan must be committed (or
    /// dropped) before the next plan is made.
    pub fn plan_publish(&self, commands: Vec<Command>, now_ms: u64) -> PublishPlan {
        let mut plan = PublishPlan::default();
        let mut batch_ids: HashMap<String, u64> = HashMap::new();
        let mut next = self.seq;
        for command in commands {
            if let Some(id) = command.id.as_deref() {
                if let Some(seq) = self
                    .recent_seq(id, now_ms)
                    .or_else(|| batch_ids.get(id).copied())
                {
                    plan.seqs.push(seq);
                    continue;
                }
            }
            next += 1;
            if let Some(id) = &command.id {
                batch_ids.insert(id.clone(), next);
            }
            plan.seqs.push(next);
            plan.rows.push(StoredCommand {
                seq: next,
                ts: now_ms,
                command,
            });
        }
        plan
    }

    /// Applies a persisted plan: advances seq, records ids, and delivers
    /// each new command (serialized once) to the matching sockets, or queues
    /// it for the next flush when batching. Returns the number of sockets
    /// reached (or queued for) summed over commands. Rows at or below the
    /// current seq (a plan committed twice) are skipped.
    pub fn commit_publish(&mut self, plan: &PublishPlan, now_ms: u64) -> (usize, Vec<Effect>) {
        self.prune_idempotency(now_ms);
        let was_idle = self.pending.is_empty();
        let mut delivered = 0;
        let mut effects = Vec::new();
        for row in &plan.rows {
            if row.seq <= self.seq {
                continue;
            }
            self.seq = row.seq;
            if let Some(id) = &row.command.id {
                self.idempotency.insert(id.clone(), (row.seq, row.ts));
                self.idempotency_order.push_back((id.clone(), row.ts));
            }
            let to = self.subs.matching(&row.command.topic);
            if to.is_empty() {
                continue;
            }
            delivered += to.len();
            let text: Rc<str> = Rc::from(self.command_frame_of(row));
            if self.batch_window_ms == 0 {
                effects.push(Effect::Send { to, text });
            } else {
                for k in to {
                    self.pending.entry(k).or_default().push(Rc::clone(&text));
                }
            }
        }
        if self.batch_window_ms > 0 && was_idle && !self.pending.is_empty() {
            effects.push(Effect::ScheduleFlush {
                at_ms: now_ms.saturating_add(self.batch_window_ms),
            });
        }
        (delivered, effects)
    }

    /// Drops idempotency entries older than the window, oldest first.
    fn prune_idempotency(&mut self, now_ms: u64) {
        while let Some((id, ts)) = self.idempotency_order.front() {
            if now_ms.saturating_sub(*ts) < IDEMPOTENCY_WINDOW_MS {
                break;
            }
            if self.idempotency.get(id).map(|e| e.1) == Some(*ts) {
                self.idempotency.remove(id);
            }
            self.idempotency_order.pop_front();
        }
    }

    /// Batching: one `batch` frame per socket with pending frames (in seq
    /// order, even if it holds a single command); sockets with identical
    /// lists share one `Send`.
    pub fn flush(&mut self, _now_ms: u64) -> Vec<Effect> {
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
        groups
            .into_iter()
            .map(|(frames, to)| {
                let refs: Vec<&str> = frames.iter().map(|f| &**f).collect();
                send(to, batch_frame_json(&self.character, &refs))
            })
            .collect()
    }

    /// A client text frame (`ping` never reaches the hub).
    pub fn handle_frame(&mut self, key: ClientKey, text: &str, now_ms: u64) -> FrameOutcome {
        let Some(client) = self.clients.get(&key) else {
            return FrameOutcome::Effects(Vec::new());
        };
        let can_publish = client.info.can_publish;
        let frame = match parse_client_frame(text) {
            Ok(f) => f,
            Err(e) => {
                return FrameOutcome::Effects(self.refuse(
                    key,
                    e.code,
                    &e.message,
                    e.r#ref.as_deref(),
                ))
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
                    return FrameOutcome::Effects(self.refuse(
                        key,
                        ErrorCode::BadRequest,
                        &msg,
                        r#ref.as_deref(),
                    ));
                }
                let changed = !new.is_empty();
                for f in new {
                    self.subs.subscribe(key, f);
                }
                FrameOutcome::Effects(self.topics_changed(key, changed))
            }
            ClientFrame::Unsubscribe { topics, .. } => {
                let mut changed = false;
                for f in &topics {
                    changed |= self.subs.unsubscribe(key, f);
                }
                FrameOutcome::Effects(self.topics_changed(key, changed))
            }
            ClientFrame::Publish { command, r#ref } => {
                if !can_publish {
                    let msg = "this connection may not publish";
                    return FrameOutcome::Effects(self.refuse(
                        key,
                        ErrorCode::Forbidden,
                        msg,
                        r#ref.as_deref(),
                    ));
                }
                self.accept(key);
                FrameOutcome::Publish {
                    plan: self.plan_publish(vec![command], now_ms),
                    r#ref,
                }
            }
        }
    }

    /// After a persisted client publish: delivery effects, then `published`
    /// (seq of the plan's last command) to the sender if still connected.
    pub fn commit_client_publish(
        &mut self,
        key: ClientKey,
        plan: &PublishPlan,
        r#ref: Option<&str>,
        now_ms: u64,
    ) -> Vec<Effect> {
        let (_, mut effects) = self.commit_publish(plan, now_ms);
        if self.clients.contains_key(&key) {
            let seq = plan.seqs.last().copied().unwrap_or(self.seq);
            effects.push(send(vec![key], published_frame_json(seq, r#ref)));
        }
        effects
    }

    /// Binary frames are not part of the protocol.
    pub fn handle_binary(&mut self, key: ClientKey) -> Vec<Effect> {
        if !self.clients.contains_key(&key) {
            return Vec::new();
        }
        self.refuse(
            key,
            ErrorCode::BadMessage,
            "binary frames are not supported",
            None,
        )
    }

    fn accept(&mut self, key: ClientKey) {
        if let Some(c) = self.clients.get_mut(&key) {
            c.bad_frames = 0;
        }
    }

    /// Syncs the stored topic list and answers `subscribed` (persisting first
    /// when something changed).
    fn topics_changed(&mut self, key: ClientKey, changed: bool) -> Vec<Effect> {
        self.accept(key);
        let topics = self.subs.filters_of(key);
        let mut effects = Vec::new();
        if changed {
            if let Some(c) = self.clients.get_mut(&key) {
                c.info.topics = topics.clone();
            }
            effects.push(Effect::SaveClient { client: key });
        }
        effects.push(send(vec![key], subscribed_frame_json(&topics)));
        effects
    }

    /// An `error` frame for a refused frame; the tenth consecutive one also
    /// closes the socket with 4400.
    fn refuse(
        &mut self,
        key: ClientKey,
        code: ErrorCode,
        message: &str,
        r#ref: Option<&str>,
    ) -> Vec<Effect> {
        let mut effects = vec![send(vec![key], error_frame_json(code, message, r#ref))];
        let bad = self.clients.get_mut(&key).map_or(0, |c| {
            c.bad_frames += 1;
            c.bad_frames
        });
        if bad >= MAX_BAD_FRAMES {
            effects.extend(self.close(key, CLOSE_BAD_FRAMES, "too many bad frames"));
        }
        effects
    }
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
