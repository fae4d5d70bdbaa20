//! The character Durable Object: one per character, reached by name. It holds
//! the character's subscribers as hibernatable WebSockets, feeds runtime
//! events to the sans-IO hub of `routing` and applies the effects it returns.
//! The constructor runs on every wake, so the in-memory state is rebuilt from
//! SQLite and from each socket's attachment the first time it is needed.
//!
//! Work that must not slow a publish (KV logs, registry reports, archiving,
//! batch flushes) is queued as a `Task` and run after the handler returns.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use routing::archive::{self, covers, encode_page, next_page_ready, page_key, page_of};
use routing::events::LogEvent;
use routing::hub::{ClientInfo, ClientKey, Effect, FrameOutcome, Hub, StoredCommand};
use routing::protocol::{parse_publish_body, MAX_BODY_BYTES};
use routing::query::{
    parse_history_query, parse_subscribe_query, query_pairs, split_url, SubscribeQuery,
};
use routing::topic::CharacterId;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::{
    console_error, durable_object, Date, Delay, DurableObject, Env, Method, Request, Response,
    Result, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::attachment;
use crate::config::Config;
use crate::error::{json_response, AppError};
use crate::kv;
use crate::registry;
use crate::store::Store;

/// Header names the router uses to pass facts it established to the object.
pub const H_CHARACTER: &str = "x-gateway-character";
pub const H_USER: &str = "x-gateway-user";
pub const H_CAN_PUBLISH: &str = "x-gateway-can-publish";
pub const H_EXPIRES: &str = "x-gateway-expires-ms";

/// Registry reports are coalesced over this window.
const REPORT_DELAY_MS: u64 = 200;
/// Log batches are written at most this often per object.
const LOG_FLUSH_MS: u64 = 1000;
/// SQLite rows read per step when paging through history.
const PAGE_ROWS: u64 = 500;

type AppResult<T> = std::result::Result<T, AppError>;

/// Deferred work, run once the current handler has answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Task {
    FlushBatch,
    FlushLogs,
    ReportRegistry,
    Archive,
}

struct Core {
    hub: Hub,
    store: Store,
    sockets: HashMap<ClientKey, WebSocket>,
    /// Token expiry per client, ms since the Unix epoch.
    expiry: HashMap<ClientKey, u64>,
    config: Config,
    logs: Vec<LogEvent>,
    archived_through: u64,
    page_size: u64,
    /// Tasks to start after the handler; `scheduled` dedupes them.
    queued: Vec<(u64, Task)>,
    scheduled: Vec<Task>,
    report_version: u64,
    alarm_at: Option<u64>,
}

type Shared = Rc<RefCell<Option<Core>>>;

/// The answer to a publish (contract: `character`, `epoch`, `seqs`, `delivered`).
#[derive(serde::Serialize)]
struct PublishAnswer<'a> {
    character: &'a str,
    epoch: &'a str,
    seqs: &'a [u64],
    delivered: usize,
}

#[wasm_bindgen]
extern "C" {
    /// A WebSocket seen through the one method fan-out needs: `send` with a
    /// JS value, so one string can go to many sockets without re-copying.
    type SharedTextSocket;
    #[wasm_bindgen(method, catch, js_name = send)]
    fn send_shared(this: &SharedTextSocket, data: &JsValue) -> std::result::Result<(), JsValue>;
}

#[durable_object]
pub struct Character {
    state: State,
    env: Env,
    core: Shared,
}

pub fn now_ms() -> u64 {
    Date::now().as_millis()
}

pub fn random_hex(words: usize) -> String {
    (0..words)
        .map(|_| format!("{:08x}", (js_sys::Math::random() * 4_294_967_296.0) as u32))
        .collect()
}

impl DurableObject for Character {
    fn new(state: State, env: Env) -> Self {
        // Keep-alives are answered by the runtime without waking the object.
        if let Ok(pair) = worker::WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        Self {
            state,
            env,
            core: Rc::new(RefCell::new(None)),
        }
    }

    async fn fetch(&self, req: Request) -> Result<Response> {
        let result = self.serve(req).await;
        self.start_tasks();
        self.sync_alarm().await;
        match result {
            Ok(resp) => Ok(resp),
            Err(e) => e.into_response(),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let now = now_ms();
        let result = self.with_core(|core| {
            let expired: Vec<ClientKey> = core
                .expiry
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(k, _)| *k)
                .collect();
            for key in expired {
                core.log_client("disconnect", key, Some("token expired"));
                let effects = core.hub.close(key, 4001, "token expired");
                core.apply(effects);
            }
            core.alarm_at = None;
            Ok(())
        });
        if let Err(e) = result {
            console_error!("alarm: {}", e.message());
        }
        self.start_tasks();
        self.sync_alarm().await;
        Response::empty()
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        if let Err(e) = self.on_message(&ws, message) {
            console_error!("websocket message: {}", e.message());
        }
        self.start_tasks();
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        // A socket the hub still knew was closed by the client: complete the
        // closing handshake (1005/1006 may not be sent on the wire). One we
        // closed ourselves already sent its close frame.
        if self.on_gone(&ws) {
            let code = u16::try_from(code)
                .ok()
                .filter(|c| matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999))
                .unwrap_or(1000);
            let _ = ws.close(Some(code), Some("closed"));
        }
        self.start_tasks();
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        let _ = self.on_gone(&ws);
        self.start_tasks();
        Ok(())
    }
}

impl Character {
    async fn serve(&self, mut req: Request) -> AppResult<Response> {
        let hint = req.headers().get(H_CHARACTER)?;
        self.ensure_core(hint.as_deref())?;
        let raw_url = req.inner().url();
        let (path, query) = split_url(&raw_url);
        let pairs = query_pairs(query);
        match (req.method(), path) {
            (Method::Get, "/subscribe") => {
                let headers = req.headers();
                let user = headers.get(H_USER)?;
                let can_publish = headers.get(H_CAN_PUBLISH)?.as_deref() != Some("false");
                let expires = headers.get(H_EXPIRES)?.and_then(|v| v.parse::<u64>().ok());
                let query = parse_subscribe_query(&pairs)?;
                self.subscribe(query, user, can_publish, expires).await
            }
            (Method::Post, "/publish") => {
                // The router streams the body through without measuring it.
                let body = req.bytes().await?;
                if body.len() > MAX_BODY_BYTES {
                    return Err(AppError::body_too_large());
                }
                self.publish(&body)
            }
            (Method::Get, "/history") => self.history(&pairs).await,
            (Method::Get, "/subscriptions") => self.subscriptions(),
            (Method::Delete, p) if p.starts_with("/subscriptions/") => {
                self.kick(&p["/subscriptions/".len()..])
            }
            (_, other) => Err(AppError::not_found(format!("no object route {other}"))),
        }
    }

    /// Builds the in-memory state on the first event after a (re)start.
    fn ensure_core(&self, name_hint: Option<&str>) -> AppResult<()> {
        if self.core.borrow().is_some() {
            return Ok(());
        }
        let store = Store::open(self.state.storage().sql())?;
        let stored_name = store.meta("character")?;
        let name = match (self.state.id().name(), stored_name.clone(), name_hint) {
            (Some(n), _, _) | (None, Some(n), _) => n,
            (None, None, Some(n)) => n.to_string(),
            (None, None, None) => {
                return Err(AppError::internal("character object woke without a name"))
            }
        };
        if stored_name.as_deref() != Some(name.as_str()) {
            store.set_meta("character", &name)?;
        }
        let character = CharacterId::parse(&name)
            .map_err(|e| AppError::internal(format!("object name: {e}")))?;
        let epoch = match store.meta("epoch")? {
            Some(e) => e,
            None => {
                let e = format!("{:x}{}", now_ms(), random_hex(2));
                store.set_meta("epoch", &e)?;
                e
            }
        };
        let config = Config::cached(&self.env);
        let page_size = match store.meta_u64("page_size")? {
            Some(size) if size > 0 => size,
            _ => {
                let size = archive::page_size(config.history_limit);
                store.set_meta("page_size", &size.to_string())?;
                size
            }
        };
        let archived_through = store.meta_u64("archived_through")?.unwrap_or(0);
        let mut hub = Hub::new(
            character,
            epoch,
            store.latest_seq()?,
            config.batch_window_ms,
        );
        for row in store.recent_ids(now_ms())? {
            hub.restore_idempotency(row.id, row.seq as u64, row.ts as u64);
        }
        let mut sockets = HashMap::new();
        let mut expiry = HashMap::new();
        for ws in self.state.get_websockets() {
            match attachment::restore(&ws, &store) {
                Some((info, expires)) => {
                    let key = hub.restore_client(info);
                    sockets.insert(key, ws);
                    if let Some(at) = expires {
                        expiry.insert(key, at);
                    }
                }
                None => {
                    let _ = ws.close(Some(1011), Some("state lost; reconnect"));
                }
            }
        }
        if !sockets.is_empty() {
            worker::console_log!(
                "character {name}: woke with {} sockets, restored from their attachments",
                sockets.len()
            );
        }
        *self.core.borrow_mut() = Some(Core {
            hub,
            store,
            sockets,
            expiry,
            config,
            logs: Vec::new(),
            archived_through,
            page_size,
            queued: Vec::new(),
            scheduled: Vec::new(),
            report_version: 0,
            alarm_at: None,
        });
        Ok(())
    }

    fn with_core<R>(&self, f: impl FnOnce(&mut Core) -> AppResult<R>) -> AppResult<R> {
        self.ensure_core(None)?;
        let mut guard = self.core.borrow_mut();
        let core = guard
            .as_mut()
            .ok_or_else(|| AppError::internal("character state missing"))?;
        f(core)
    }

    async fn subscribe(
        &self,
        query: SubscribeQuery,
        user: Option<String>,
        can_publish: bool,
        expires: Option<u64>,
    ) -> AppResult<Response> {
        // Archived commands are read before the socket joins (KV is async);
        // the join and the rest of the replay then happen in one turn, so no
        // publish can slip between replay and live delivery.
        let mut archived: Vec<StoredCommand> = Vec::new();
        let mut read_through = 0;
        for _attempt in 0..3 {
            let plan = self.with_core(|core| Ok(archive_read_plan(core, &query)))?;
            let Some((character, epoch, from, to, size)) = plan else {
                break;
            };
            if to == read_through {
                break;
            }
            archived = kv::read_pages(&self.env, &character, &epoch, from, to, size).await?;
            read_through = to;
        }
        let pair = WebSocketPair::new()?;
        let now = now_ms();
        let info = ClientInfo {
            client_id: random_hex(4),
            user,
            topics: query.topics.clone(),
            presence: query.presence,
            connected_at: now,
            can_publish,
        };
        self.state
            .accept_websocket_with_tags(&pair.server, &[info.client_id.as_str()]);
        self.with_core(|core| {
            attachment::save(&pair.server, &info, expires, &core.store)?;
            let (key, effects) = core.hub.connect(info, now);
            core.sockets.insert(key, pair.server.clone());
            if let Some(at) = expires {
                core.expiry.insert(key, at);
            }
            core.apply(effects);
            if let Some(since) = query.since {
                let effects = replay(
                    core,
                    key,
                    since,
                    query.epoch.as_deref(),
                    archived,
                    read_through,
                )?;
                core.apply(effects);
            }
            core.log_client("connect", key, None);
            core.schedule(Task::ReportRegistry, REPORT_DELAY_MS);
            Ok(())
        })?;
        Ok(Response::from_websocket(pair.client)?)
    }

    fn publish(&self, body: &[u8]) -> AppResult<Response> {
        let commands = parse_publish_body(body)?;
        let now = now_ms();
        self.with_core(|core| {
            let plan = core.hub.plan_publish(commands, now);
            core.store.append(&plan.rows, core.config.hard_cap())?;
            let (delivered, effects) = core.hub.commit_publish(&plan, now);
            core.apply(effects);
            core.after_publish(&plan.seqs, Some(delivered), now);
            let body = serde_json::to_string(&PublishAnswer {
                character: core.hub.character().as_str(),
                epoch: core.hub.epoch(),
                seqs: &plan.seqs,
                delivered,
            })
            .map_err(|e| AppError::internal(format!("publish answer: {e}")))?;
            Ok(json_response(200, &body)?)
        })
    }

    async fn history(&self, pairs: &[(String, String)]) -> AppResult<Response> {
        let query = parse_history_query(pairs)?;
        let limit = query.limit as usize;
        let matches =
            |row: &StoredCommand| query.topics.iter().any(|f| f.matches(&row.command.topic));
        // The archive may move rows out of SQLite while KV is read; then the
        // read starts over, so no command falls between the two.
        for _attempt in 0..3 {
            let (character, epoch, archived_through, size) = self.with_core(|core| {
                Ok((
                    core.hub.character().clone(),
                    core.hub.epoch().to_string(),
                    core.archived_through,
                    core.page_size,
                ))
            })?;
            let mut rows: Vec<StoredCommand> = Vec::new();
            // Oldest first: archived pages, one page at a time, then SQLite.
            let mut cursor = query.since;
            while cursor < archived_through && rows.len() < limit {
                let to = archive::page_bounds(page_of(cursor + 1, size), size)
                    .1
                    .min(archived_through);
                let page =
                    kv::read_pages(&self.env, &character, &epoch, cursor + 1, to, size).await?;
                rows.extend(page.into_iter().filter(|r| matches(r)));
                cursor = to;
            }
            let answer = self.with_core(|core| {
                if rows.len() < limit && core.archived_through > cursor {
                    return Ok(None);
                }
                while rows.len() < limit {
                    let page = core.store.after(cursor, PAGE_ROWS)?;
                    let Some(last) = page.last() else { break };
                    cursor = last.seq;
                    rows.extend(page.into_iter().filter(|r| matches(r)));
                }
                rows.truncate(limit);
                let frames: Vec<String> =
                    rows.iter().map(|r| core.hub.command_frame_of(r)).collect();
                let head = serde_json::json!({
                    "character": core.hub.character().as_str(),
                    "epoch": core.hub.epoch(),
                    "seq": core.hub.seq(),
                })
                .to_string();
                // Splice the already-serialized frames in instead of re-parsing them.
                let head = head.strip_suffix('}').unwrap_or(&head);
                Ok(Some(format!(
                    "{head},\"commands\":[{}]}}",
                    frames.join(",")
                )))
            })?;
            if let Some(body) = answer {
                return Ok(json_response(200, &body)?);
            }
        }
        Err(AppError::internal(
            "history kept moving to the archive during the read",
        ))
    }

    fn subscriptions(&self) -> AppResult<Response> {
        self.with_core(|core| {
            let mut subscribers: Vec<serde_json::Value> = core
                .hub
                .clients()
                .map(|(_, c)| {
                    serde_json::json!({
                        "client_id": c.client_id,
                        "user": c.user,
                        "topics": c.topics.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                        "presence": c.presence,
                        "connected_at": c.connected_at,
                    })
                })
                .collect();
            subscribers.sort_by_key(|s| s["connected_at"].as_u64().unwrap_or(0));
            let body = serde_json::json!({
                "character": core.hub.character().as_str(),
                "epoch": core.hub.epoch(),
                "seq": core.hub.seq(),
                "subscribers": subscribers,
            });
            Ok(json_response(200, &body.to_string())?)
        })
    }

    fn kick(&self, client_id: &str) -> AppResult<Response> {
        self.with_core(|core| {
            let Some(key) = core.hub.key_of(client_id) else {
                return Err(AppError::not_found(format!(
                    "no client {client_id:?} on this character"
                )));
            };
            core.log_client("disconnect", key, Some("disconnected by admin"));
            match core.hub.kick(client_id) {
                Some(effects) => {
                    core.apply(effects);
                    core.schedule(Task::ReportRegistry, REPORT_DELAY_MS);
                    Ok(json_response(200, r#"{"disconnected":true}"#)?)
                }
                _ => Err(AppError::not_found(format!(
                    "no client {client_id:?} on this character"
                ))),
            }
        })
    }

    fn on_message(&self, ws: &WebSocket, message: WebSocketIncomingMessage) -> AppResult<()> {
        let now = now_ms();
        self.with_core(|core| {
            let Some(key) = core.key_of(ws) else {
                let _ = ws.close(Some(1011), Some("unknown socket; reconnect"));
                return Ok(());
            };
            let effects = match message {
                WebSocketIncomingMessage::Binary(_) => core.hub.handle_binary(key),
                WebSocketIncomingMessage::String(text) => {
                    match core.hub.handle_frame(key, &text, now) {
                        FrameOutcome::Effects(effects) => effects,
                        FrameOutcome::Publish { plan, r#ref } => {
                            if let Err(e) = core.store.append(&plan.rows, core.config.hard_cap()) {
                                console_error!("storing a client publish failed: {e}");
                                let _ = ws.close(Some(1011), Some("internal error"));
                                return Ok(());
                            }
                            let effects =
                                core.hub
                                    .commit_client_publish(key, &plan, r#ref.as_deref(), now);
                            core.after_publish(&plan.seqs, None, now);
                            effects
                        }
                    }
                }
            };
            core.apply(effects);
            Ok(())
        })
    }

    /// Forgets a socket that went away; false if it was already forgotten.
    fn on_gone(&self, ws: &WebSocket) -> bool {
        let result = self.with_core(|core| {
            let Some(key) = core.key_of(ws) else {
                return Ok(false);
            };
            {
                core.log_client("disconnect", key, None);
                let client_id = core.hub.client(key).map(|c| c.client_id.clone());
                let effects = core.hub.disconnect(key);
                core.forget_socket(key, client_id.as_deref());
                core.apply(effects);
                core.schedule(Task::ReportRegistry, REPORT_DELAY_MS);
            }
            Ok(true)
        });
        result.unwrap_or_else(|e| {
            console_error!("websocket close: {}", e.message());
            true
        })
    }

    /// Starts the tasks queued by the last handler.
    fn start_tasks(&self) {
        let queued = match self.core.borrow_mut().as_mut() {
            Some(core) => std::mem::take(&mut core.queued),
            None => return,
        };
        for (delay, task) in queued {
            spawn_task(self.core.clone(), self.env.clone(), delay, task);
        }
    }

    /// Keeps the object's alarm at the earliest token expiry.
    async fn sync_alarm(&self) {
        let wanted = {
            let guard = self.core.borrow();
            let Some(core) = guard.as_ref() else { return };
            let next = core.expiry.values().min().copied();
            if next == core.alarm_at {
                return;
            }
            next
        };
        let storage = self.state.storage();
        let result = match wanted {
            Some(at) => {
                storage
                    .set_alarm(Duration::from_millis(at.saturating_sub(now_ms())))
                    .await
            }
            None => storage.delete_alarm().await,
        };
        match result {
            Ok(()) => {
                if let Some(core) = self.core.borrow_mut().as_mut() {
                    core.alarm_at = wanted;
                }
            }
            Err(e) => console_error!("setting the expiry alarm: {e}"),
        }
    }
}

/// What must be read from the KV archive before a resume from `since`:
/// (character, epoch, from, to, page size), or nothing.
fn archive_read_plan(
    core: &Core,
    query: &SubscribeQuery,
) -> Option<(CharacterId, String, u64, u64, u64)> {
    let since = query.since?;
    let same_epoch = query.epoch.as_deref().is_none_or(|e| e == core.hub.epoch());
    (same_epoch && since < core.archived_through).then(|| {
        (
            core.hub.character().clone(),
            core.hub.epoch().to_string(),
            since + 1,
            core.archived_through,
            core.page_size,
        )
    })
}

/// The replay of a resume: archived rows (already read, through
/// `read_through`), then SQLite, then `recovered`.
fn replay(
    core: &mut Core,
    key: ClientKey,
    since: u64,
    client_epoch: Option<&str>,
    archived: Vec<StoredCommand>,
    read_through: u64,
) -> AppResult<Vec<Effect>> {
    let same_epoch = client_epoch.is_none_or(|e| e == core.hub.epoch());
    let from = if same_epoch {
        since.max(read_through)
    } else {
        0
    };
    let mut rows = if same_epoch { archived } else { Vec::new() };
    let archive_ok = !same_epoch || read_through == 0 || covers(&rows, since + 1, read_through);
    // Everything in SQLite after what the archive gave.
    let mut cursor = from;
    loop {
        let page = core.store.after(cursor, PAGE_ROWS)?;
        let Some(last) = page.last() else { break };
        cursor = last.seq;
        rows.extend(page);
    }
    let oldest = if !archive_ok {
        None
    } else if read_through > 0 && same_epoch {
        // The archive covered since+1..=read_through; SQLite must go on from there.
        let sqlite_oldest = core.store.oldest_seq()?;
        match sqlite_oldest {
            Some(o) if o > read_through + 1 => None,
            _ => Some(since + 1),
        }
    } else {
        core.store.oldest_seq()?
    };
    Ok(core.hub.replay(key, since, client_epoch, &rows, oldest))
}

impl Core {
    fn key_of(&self, ws: &WebSocket) -> Option<ClientKey> {
        self.hub.key_of(&attachment::read(ws)?.c)
    }

    fn schedule(&mut self, task: Task, delay_ms: u64) {
        if !self.scheduled.contains(&task) {
            self.scheduled.push(task);
            self.queued.push((delay_ms, task));
        }
    }

    fn log(&mut self, event: LogEvent) {
        self.logs.push(event);
        self.schedule(Task::FlushLogs, LOG_FLUSH_MS);
    }

    fn log_client(&mut self, event: &str, key: ClientKey, detail: Option<&str>) {
        let character = self.hub.character().as_str().to_string();
        let mut e = LogEvent::new(now_ms(), event, Some(&character));
        if let Some(c) = self.hub.client(key) {
            e.client_id = Some(c.client_id.clone());
            e.user = c.user.clone();
            if event == "connect" {
                let topics: Vec<&str> = c.topics.iter().map(|t| t.as_str()).collect();
                e.detail = Some(serde_json::json!({ "topics": topics }));
            }
        }
        if let Some(d) = detail {
            e.detail = Some(serde_json::json!({ "reason": d }));
        }
        self.log(e);
    }

    fn after_publish(&mut self, seqs: &[u64], delivered: Option<usize>, now: u64) {
        let character = self.hub.character().as_str().to_string();
        let mut e = LogEvent::new(now, "publish", Some(&character));
        e.detail = Some(serde_json::json!({ "seqs": seqs, "delivered": delivered }));
        self.log(e);
        let limit = self.config.history_limit;
        if next_page_ready(self.archived_through, self.hub.seq(), limit, self.page_size).is_some() {
            self.schedule(Task::Archive, 0);
        }
    }

    fn forget_socket(&mut self, key: ClientKey, client_id: Option<&str>) {
        self.sockets.remove(&key);
        self.expiry.remove(&key);
        if let Some(id) = client_id {
            if let Err(e) = self.store.drop_spilled_topics(id) {
                console_error!("dropping spilled topics: {e}");
            }
        }
    }

    /// Applies the hub's effects in order.
    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { to, text } => {
                    // One JS string per frame, shared by every recipient: a
                    // `send_with_str` per socket would copy the text out of
                    // wasm memory once per socket.
                    let js = JsValue::from_str(&text);
                    for key in to {
                        if let Some(ws) = self.sockets.get(&key) {
                            // A socket that closed under us is reaped by its close event.
                            let _ = ws
                                .as_ref()
                                .unchecked_ref::<SharedTextSocket>()
                                .send_shared(&js);
                        }
                    }
                }
                Effect::Close {
                    client,
                    code,
                    reason,
                } => {
                    // The hub has already forgotten the client; forget its socket too.
                    if let Some(ws) = self.sockets.get(&client).cloned() {
                        let _ = ws.close(Some(code), Some(reason));
                        let id = attachment::read(&ws).map(|a| a.c);
                        self.forget_socket(client, id.as_deref());
                    }
                    self.schedule(Task::ReportRegistry, REPORT_DELAY_MS);
                }
                Effect::SaveClient { client } => {
                    if let (Some(ws), Some(info)) =
                        (self.sockets.get(&client), self.hub.client(client))
                    {
                        let expires = self.expiry.get(&client).copied();
                        if let Err(e) = attachment::save(ws, info, expires, &self.store) {
                            console_error!("saving socket attachment: {}", e.message());
                        }
                    }
                }
                Effect::ScheduleFlush { at_ms } => {
                    self.schedule(Task::FlushBatch, at_ms.saturating_sub(now_ms()));
                }
            }
        }
    }
}

fn spawn_task(shared: Shared, env: Env, delay_ms: u64, task: Task) {
    wasm_bindgen_futures::spawn_local(async move {
        if delay_ms > 0 {
            Delay::from(Duration::from_millis(delay_ms)).await;
        }
        run_task(&shared, &env, task).await;
    });
}

async fn run_task(shared: &Shared, env: &Env, task: Task) {
    let result = match task {
        Task::FlushBatch => flush_batch(shared),
        Task::FlushLogs => flush_logs(shared, env).await,
        Task::ReportRegistry => report(shared, env).await,
        Task::Archive => archive_pages(shared, env).await,
    };
    let queued = match shared.borrow_mut().as_mut() {
        Some(core) => {
            core.scheduled.retain(|t| *t != task);
            // Work queued while this task ran starts now.
            std::mem::take(&mut core.queued)
        }
        None => Vec::new(),
    };
    for (delay, next) in queued {
        spawn_task(shared.clone(), env.clone(), delay, next);
    }
    if let Err(e) = result {
        console_error!("{task:?}: {e}");
    }
}

fn flush_batch(shared: &Shared) -> Result<()> {
    if let Some(core) = shared.borrow_mut().as_mut() {
        let effects = core.hub.flush(now_ms());
        core.apply(effects);
    }
    Ok(())
}

async fn flush_logs(shared: &Shared, env: &Env) -> Result<()> {
    let (events, character, ttl) = {
        let mut guard = shared.borrow_mut();
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        core.scheduled.retain(|t| *t != Task::FlushLogs);
        (
            std::mem::take(&mut core.logs),
            core.hub.character().as_str().to_string(),
            core.config.log_ttl_seconds,
        )
    };
    kv::write_logs(env, Some(&character), &events, ttl).await
}

async fn report(shared: &Shared, env: &Env) -> Result<()> {
    let body = {
        let mut guard = shared.borrow_mut();
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        // Changes from here on schedule a new report.
        core.scheduled.retain(|t| *t != Task::ReportRegistry);
        core.report_version = now_ms().max(core.report_version + 1);
        serde_json::json!({
            "character": core.hub.character().as_str(),
            "subscribers": core.hub.subscriber_count(),
            "topics": core.hub.filter_counts(),
            "version": core.report_version,
        })
        .to_string()
    };
    let stub = env
        .durable_object(registry::BINDING)?
        .get_by_name(registry::INSTANCE)?;
    let mut init = worker::RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(wasm_bindgen::JsValue::from_str(&body)));
    let req = Request::new_with_init("https://registry/report", &init)?;
    let resp = stub.fetch_with_request(req).await?;
    if resp.status_code() != 200 {
        return Err(worker::Error::RustError(format!(
            "registry answered {}",
            resp.status_code()
        )));
    }
    Ok(())
}

/// Moves full pages beyond the newest `HISTORY_LIMIT` commands to KV, one
/// page at a time: write the page, then delete its rows.
async fn archive_pages(shared: &Shared, env: &Env) -> Result<()> {
    loop {
        let next = {
            let guard = shared.borrow();
            let Some(core) = guard.as_ref() else {
                return Ok(());
            };
            let limit = core.config.history_limit;
            match next_page_ready(core.archived_through, core.hub.seq(), limit, core.page_size) {
                None => None,
                Some((from, to)) => {
                    let rows = core.store.range(from, to)?;
                    let key = page_key(
                        core.hub.character(),
                        core.hub.epoch(),
                        page_of(from, core.page_size),
                    );
                    Some((key, encode_page(&rows), to))
                }
            }
        };
        let Some((key, body, to)) = next else {
            return Ok(());
        };
        kv::put_page(env, &key, body).await?;
        let mut guard = shared.borrow_mut();
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        core.store.delete_through(to)?;
        core.archived_through = to;
    }
}
