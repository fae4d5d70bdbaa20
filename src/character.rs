//! The character Durable Object: one per character, reached by name. It holds
//! the character's subscribers as hibernatable WebSockets, feeds runtime
//! events to the sans-IO hub of `routing` and applies the effects it returns.
//! The constructor runs on every wake, so the in-memory state is rebuilt from
//! SQLite and from each socket's attachment the first time it is needed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use routing::hub::{ClientInfo, ClientKey, Effect, FrameOutcome, Hub};
use routing::protocol::parse_publish_body;
use routing::query::{parse_history_query, parse_subscribe_query};
use routing::topic::{CharacterId, TopicFilter};
use serde::{Deserialize, Serialize};
use worker::{
    console_error, durable_object, Date, Delay, DurableObject, Env, Request, Response, Result,
    State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::config::Config;
use crate::error::{json_response, AppError};
use crate::store::Store;

/// Header names the router uses to pass facts it established to the object.
pub const H_CHARACTER: &str = "x-gateway-character";
pub const H_USER: &str = "x-gateway-user";
pub const H_CAN_PUBLISH: &str = "x-gateway-can-publish";

/// Topic lists longer than this (as JSON) go to SQLite instead of the socket
/// attachment, which the runtime caps at 2 KiB.
const ATTACHMENT_TOPICS_BUDGET: usize = 1200;

/// The per-socket record the runtime keeps across hibernation.
#[derive(Serialize, Deserialize)]
struct Attachment {
    /// client id
    c: String,
    /// user (token `sub`), absent with auth off
    u: Option<String>,
    /// topic filters; `None` when spilled to SQLite
    t: Option<Vec<String>>,
    /// wants presence events
    p: bool,
    /// connected_at, ms since the Unix epoch
    a: u64,
    /// may publish over the socket
    w: bool,
}

struct Core {
    hub: Hub,
    store: Store,
    sockets: HashMap<ClientKey, WebSocket>,
    config: Config,
}

type Shared = Rc<RefCell<Option<Core>>>;

#[durable_object]
pub struct Character {
    state: State,
    env: Env,
    core: Shared,
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

fn random_hex(words: usize) -> String {
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
        match self.serve(req).await {
            Ok(resp) => Ok(resp),
            Err(e) => e.into_response(),
        }
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        if let Err(e) = self.on_message(&ws, message) {
            console_error!("websocket message: {}", e.message());
        }
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        self.on_gone(&ws);
        // Complete the closing handshake; 1005/1006 may not be sent on the wire.
        let code = u16::try_from(code)
            .ok()
            .filter(|c| matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999))
            .unwrap_or(1000);
        let _ = ws.close(Some(code), Some("closed"));
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.on_gone(&ws);
        Ok(())
    }
}

impl Character {
    async fn serve(&self, mut req: Request) -> std::result::Result<Response, AppError> {
        let url = req.url()?;
        if let Some(name) = req.headers().get(H_CHARACTER)? {
            self.ensure_core(Some(&name))?;
        } else {
            self.ensure_core(None)?;
        }
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        match url.path() {
            "/subscribe" => {
                let user = req.headers().get(H_USER)?;
                let can_publish = req.headers().get(H_CAN_PUBLISH)?.as_deref() != Some("false");
                self.subscribe(&pairs, user, can_publish)
            }
            "/publish" => {
                let body = req.bytes().await?;
                self.publish(&body)
            }
            "/history" => self.history(&pairs),
            other => Err(AppError::not_found(format!("no object route {other}"))),
        }
    }

    /// Builds the in-memory state on the first event after a (re)start.
    fn ensure_core(&self, name_hint: Option<&str>) -> std::result::Result<(), AppError> {
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
        let config = Config::from_env(&self.env);
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
        for ws in self.state.get_websockets() {
            match restore_info(&ws, &store) {
                Some(info) => {
                    let key = hub.restore_client(info);
                    sockets.insert(key, ws);
                }
                None => {
                    let _ = ws.close(Some(1011), Some("state lost; reconnect"));
                }
            }
        }
        *self.core.borrow_mut() = Some(Core {
            hub,
            store,
            sockets,
            config,
        });
        Ok(())
    }

    fn with_core<R>(
        &self,
        f: impl FnOnce(&mut Core) -> std::result::Result<R, AppError>,
    ) -> std::result::Result<R, AppError> {
        self.ensure_core(None)?;
        let mut guard = self.core.borrow_mut();
        let core = guard
            .as_mut()
            .ok_or_else(|| AppError::internal("character state missing"))?;
        f(core)
    }

    fn subscribe(
        &self,
        pairs: &[(String, String)],
        user: Option<String>,
        can_publish: bool,
    ) -> std::result::Result<Response, AppError> {
        let query = parse_subscribe_query(pairs)?;
        let pair = WebSocketPair::new()?;
        let client_id = random_hex(4);
        self.state
            .accept_websocket_with_tags(&pair.server, &[client_id.as_str()]);
        let now = now_ms();
        let info = ClientInfo {
            client_id,
            user,
            topics: query.topics,
            presence: query.presence,
            connected_at: now,
            can_publish,
        };
        let flush = self.with_core(|core| {
            save_attachment(&pair.server, &info, &core.store)?;
            let (key, effects) = core.hub.connect(info, now);
            core.sockets.insert(key, pair.server.clone());
            let mut flush = core.apply(effects);
            if let Some(since) = query.since {
                let epoch_matches = query.epoch.as_deref().is_none_or(|e| e == core.hub.epoch());
                let from = if epoch_matches { since } else { 0 };
                let rows = core.store.after(from, core.config.history_limit)?;
                let oldest = core.store.oldest_seq()?;
                let effects = core
                    .hub
                    .replay(key, since, query.epoch.as_deref(), &rows, oldest);
                flush = flush.or(core.apply(effects));
            }
            Ok(flush)
        })?;
        self.schedule_flush(flush);
        Ok(Response::from_websocket(pair.client)?)
    }

    fn publish(&self, body: &[u8]) -> std::result::Result<Response, AppError> {
        let commands = parse_publish_body(body)?;
        let now = now_ms();
        let (body, flush) = self.with_core(|core| {
            let plan = core.hub.plan_publish(commands, now);
            core.store.append(&plan.rows, core.config.history_limit)?;
            let (delivered, effects) = core.hub.commit_publish(&plan, now);
            let flush = core.apply(effects);
            let body = serde_json::json!({
                "character": core.hub.character().as_str(),
                "epoch": core.hub.epoch(),
                "seqs": plan.seqs,
                "delivered": delivered,
            });
            Ok((body.to_string(), flush))
        })?;
        self.schedule_flush(flush);
        Ok(json_response(200, &body)?)
    }

    fn history(&self, pairs: &[(String, String)]) -> std::result::Result<Response, AppError> {
        let query = parse_history_query(pairs)?;
        let body = self.with_core(|core| {
            let mut frames: Vec<String> = Vec::new();
            let mut cursor = query.since;
            'pages: loop {
                let rows = core.store.after(cursor, 500)?;
                let Some(last) = rows.last() else { break };
                cursor = last.seq;
                for row in &rows {
                    if query
                        .topics
                        .iter()
                        .any(|f: &TopicFilter| f.matches(&row.command.topic))
                    {
                        frames.push(core.hub.command_frame_of(row));
                        if frames.len() as u64 >= query.limit {
                            break 'pages;
                        }
                    }
                }
            }
            let head = serde_json::json!({
                "character": core.hub.character().as_str(),
                "epoch": core.hub.epoch(),
                "seq": core.hub.seq(),
            })
            .to_string();
            // Splice the already-serialized frames in instead of re-parsing them.
            let head = head.strip_suffix('}').unwrap_or(&head);
            Ok(format!("{head},\"commands\":[{}]}}", frames.join(",")))
        })?;
        Ok(json_response(200, &body)?)
    }

    fn on_message(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
    ) -> std::result::Result<(), AppError> {
        let now = now_ms();
        let flush = self.with_core(|core| {
            let Some(key) = core.key_of(ws) else {
                let _ = ws.close(Some(1011), Some("unknown socket; reconnect"));
                return Ok(None);
            };
            let effects = match message {
                WebSocketIncomingMessage::Binary(_) => core.hub.handle_binary(key),
                WebSocketIncomingMessage::String(text) => {
                    match core.hub.handle_frame(key, &text, now) {
                        FrameOutcome::Effects(effects) => effects,
                        FrameOutcome::Publish { plan, r#ref } => {
                            if let Err(e) = core.store.append(&plan.rows, core.config.history_limit)
                            {
                                console_error!("storing a client publish failed: {e}");
                                let _ = ws.close(Some(1011), Some("internal error"));
                                return Ok(None);
                            }
                            core.hub
                                .commit_client_publish(key, &plan, r#ref.as_deref(), now)
                        }
                    }
                }
            };
            Ok(core.apply(effects))
        })?;
        self.schedule_flush(flush);
        Ok(())
    }

    fn on_gone(&self, ws: &WebSocket) {
        let result = self.with_core(|core| {
            if let Some(key) = core.key_of(ws) {
                let client_id = core.hub.client(key).map(|c| c.client_id.clone());
                let effects = core.hub.disconnect(key);
                core.sockets.remove(&key);
                core.apply(effects);
                if let Some(id) = client_id {
                    core.store.drop_spilled_topics(&id)?;
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            console_error!("websocket close: {}", e.message());
        }
    }

    /// Batching: delivers the pending window at `at_ms`.
    fn schedule_flush(&self, at_ms: Option<u64>) {
        let Some(at) = at_ms else { return };
        let shared = self.core.clone();
        let wait = at.saturating_sub(now_ms());
        wasm_bindgen_futures::spawn_local(async move {
            Delay::from(Duration::from_millis(wait)).await;
            let mut guard = shared.borrow_mut();
            if let Some(core) = guard.as_mut() {
                let effects = core.hub.flush(now_ms());
                // A flush never schedules another: the window restarts with the next publish.
                let _ = core.apply(effects);
            }
        });
    }
}

impl Core {
    fn key_of(&self, ws: &WebSocket) -> Option<ClientKey> {
        let att: Attachment = ws.deserialize_attachment().ok().flatten()?;
        self.hub.key_of(&att.c)
    }

    /// Applies the hub's effects in order; returns when a batch flush is due.
    fn apply(&mut self, effects: Vec<Effect>) -> Option<u64> {
        let mut flush = None;
        for effect in effects {
            match effect {
                Effect::Send { to, text } => {
                    for key in to {
                        if let Some(ws) = self.sockets.get(&key) {
                            // A socket that closed under us is reaped by its close event.
                            let _ = ws.send_with_str(&*text);
                        }
                    }
                }
                Effect::Close {
                    client,
                    code,
                    reason,
                } => {
                    // The hub has already forgotten the client; forget its socket too.
                    if let Some(ws) = self.sockets.remove(&client) {
                        let _ = ws.close(Some(code), Some(reason));
                        if let Some(att) = ws.deserialize_attachment::<Attachment>().ok().flatten()
                        {
                            if att.t.is_none() {
                                let _ = self.store.drop_spilled_topics(&att.c);
                            }
                        }
                    }
                }
                Effect::SaveClient { client } => {
                    if let (Some(ws), Some(info)) =
                        (self.sockets.get(&client), self.hub.client(client))
                    {
                        if let Err(e) = save_attachment(ws, info, &self.store) {
                            console_error!("saving socket attachment: {}", e.message());
                        }
                    }
                }
                Effect::ScheduleFlush { at_ms } => {
                    flush = Some(flush.map_or(at_ms, |f: u64| f.min(at_ms)))
                }
            }
        }
        flush
    }
}

fn save_attachment(
    ws: &WebSocket,
    info: &ClientInfo,
    store: &Store,
) -> std::result::Result<(), AppError> {
    let topics: Vec<String> = info.topics.iter().map(|t| t.as_str().to_string()).collect();
    let json = serde_json::to_string(&topics).map_err(AppError::internal)?;
    let t = if json.len() > ATTACHMENT_TOPICS_BUDGET {
        store.spill_topics(&info.client_id, &json)?;
        None
    } else {
        Some(topics)
    };
    let att = Attachment {
        c: info.client_id.clone(),
        u: info.user.clone(),
        t,
        p: info.presence,
        a: info.connected_at,
        w: info.can_publish,
    };
    ws.serialize_attachment(&att)?;
    Ok(())
}

fn restore_info(ws: &WebSocket, store: &Store) -> Option<ClientInfo> {
    let att: Attachment = ws.deserialize_attachment().ok().flatten()?;
    let topics: Vec<String> = match att.t {
        Some(t) => t,
        None => serde_json::from_str(&store.spilled_topics(&att.c).ok().flatten()?).ok()?,
    };
    Some(ClientInfo {
        client_id: att.c,
        user: att.u,
        topics: topics
            .iter()
            .filter_map(|t| TopicFilter::parse(t).ok())
            .collect(),
        presence: att.p,
        connected_at: att.a,
        can_publish: att.w,
    })
}
