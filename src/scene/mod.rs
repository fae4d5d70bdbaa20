//! The scene object (class `Scene`, named `~s<hash>` by
//! `routing::scene::scene_name`): it holds the sockets of one scene, a
//! fixed list of characters, and is fed by each character's own object
//! like a relay. A thin shell over `routing::scene_hub::SceneHub`: every
//! runtime event becomes one call, whose effects are applied here. Each
//! character's place (epoch, last applied seq) is kept in SQLite (meta
//! `f:<character>`), the scene's list in meta `scene_characters`, each
//! socket's client in its attachment, so the object wakes where it was.
//! Its sockets are reported to the registry and their connects and
//! disconnects sent to the characters' event logs (`tasks`).

mod serve;
mod tasks;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use routing::events::Event;
use routing::hub::{ClientKey, Gone};
use routing::lease::{on_wake, OnWake};
use routing::relay::Follower;
use routing::scene::characters_key;
use routing::scene_hub::{SceneEffect, SceneHub};
use routing::tasks::Scheduler;
use routing::topic::CharacterId;
use worker::{
    console_error, durable_object, DurableObject, Env, Request, Response, Result, State, Storage,
    WebSocket, WebSocketIncomingMessage,
};

use crate::character::attachment;
use crate::character::{now_ms, random_hex, send_js};
use crate::config::Config;
use crate::error::AppError;
use crate::store::Store;
use tasks::SceneTask;

type AppResult<T> = std::result::Result<T, AppError>;
/// The scene's state, shared with its deferred tasks.
pub type SharedScene = Rc<RefCell<Option<SceneCore>>>;

/// Meta key of the scene's characters (sorted, comma-joined).
const CHARACTERS_KEY: &str = "scene_characters";

#[durable_object]
pub struct Scene {
    state: State,
    env: Env,
    core: SharedScene,
}

pub struct SceneCore {
    hub: SceneHub,
    name: String,
    store: Store,
    config: Config,
    sockets: HashMap<ClientKey, WebSocket>,
    next_key: ClientKey,
    /// Subscribes being set up: the scene counts as holding sockets.
    pending: usize,
    /// The alarm the runtime holds, as far as this isolate knows.
    alarm: routing::alarm::Armed,
    /// Client publishes to send to their characters' objects.
    to_publish: Vec<SceneEffect>,
    /// For arming the alarm from deferred tasks too.
    storage: Rc<Storage>,
    tasks: Scheduler<SceneTask>,
    /// A registry report is asked for.
    report_wanted: bool,
    report_version: u64,
    /// Log events not yet sent to their characters' objects, oldest first.
    events: Vec<(CharacterId, routing::events::LogEvent)>,
}

impl SceneCore {
    fn add_socket(&mut self, ws: WebSocket) -> ClientKey {
        while self.sockets.contains_key(&self.next_key) || self.next_key == 0 {
            self.next_key = self.next_key.wrapping_add(1);
        }
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1);
        self.sockets.insert(key, ws);
        key
    }

    fn key_of(&self, ws: &WebSocket) -> Option<ClientKey> {
        self.hub.key_of(&attachment::client_id(ws)?)
    }

    fn holding(&self) -> bool {
        self.hub.subscriber_count() > 0 || self.pending > 0
    }

    /// Saves a character's place after it moved.
    fn save_place(&self, c: &CharacterId) -> AppResult<()> {
        if let Some(f) = self.hub.follower(c) {
            let value = format!("{}\t{}", f.epoch(), f.last());
            self.store.set_meta(&format!("f:{}", c.as_str()), &value)?;
        }
        Ok(())
    }

    /// Applies the hub's effects in order; `now` stamps log events.
    fn apply(&mut self, now: u64, effects: Vec<SceneEffect>) {
        let mut queue = effects;
        while !queue.is_empty() {
            let mut more = Vec::new();
            for effect in queue {
                match effect {
                    SceneEffect::Send { to, text } => {
                        // One JS string for every recipient of the frame.
                        let js = wasm_bindgen::JsValue::from_str(&text);
                        for k in to {
                            let failed = match self.sockets.get(&k) {
                                Some(ws) => send_js(ws, &js).is_err(),
                                None => false,
                            };
                            if failed {
                                more.extend(self.hub.gone(k, Gone::Error));
                            }
                        }
                    }
                    SceneEffect::Close {
                        client,
                        code,
                        reason,
                    } => {
                        if let Some(ws) = self.sockets.remove(&client) {
                            let _ = ws.close(Some(code), Some(reason));
                        }
                    }
                    SceneEffect::SaveClient { client } => {
                        if let (Some(ws), Some(info)) =
                            (self.sockets.get(&client), self.hub.client(client))
                        {
                            attachment::save(ws, info, self.hub.expires_at(client), &self.store);
                        }
                    }
                    publish @ SceneEffect::Publish { .. } => self.to_publish.push(publish),
                    SceneEffect::Log {
                        kind,
                        client_id,
                        user,
                    } => {
                        let event = Event {
                            ts: now,
                            kind,
                            client_id: Some(client_id),
                            user,
                        };
                        for c in self.hub.characters() {
                            self.queue_event(&c, event.to_log(c.as_str()));
                        }
                    }
                    SceneEffect::SubscribersChanged => self.report_wanted = true,
                }
            }
            queue = more;
        }
    }
}

impl DurableObject for Scene {
    fn new(state: State, env: Env) -> Self {
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
        let now = now_ms();
        let result = self.serve(req, now).await;
        self.settle(now).await;
        match result {
            Ok(resp) => Ok(resp),
            Err(e) => e.into_response(),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let now = now_ms();
        let result = self.with_core(|core| {
            core.alarm = routing::alarm::Armed::Unset;
            let effects = core.hub.timeout(now);
            core.apply(now, effects);
            Ok(())
        });
        if let Err(e) = result {
            console_error!("scene alarm: {}", e.message());
        }
        self.settle(now).await;
        Response::empty()
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let now = now_ms();
        let result = self.with_core(|core| {
            let Some(client) = core.key_of(&ws) else {
                let _ = ws.close(Some(1011), Some("unknown socket; reconnect"));
                return Ok(());
            };
            let text = match message {
                WebSocketIncomingMessage::String(text) => text,
                // Refused like any unreadable frame.
                WebSocketIncomingMessage::Binary(_) => String::from("binary"),
            };
            let effects = core.hub.text(client, &text);
            core.apply(now, effects);
            Ok(())
        });
        if let Err(e) = result {
            console_error!("scene websocket message: {}", e.message());
        }
        self.settle(now).await;
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        let code = u16::try_from(code).unwrap_or(1005);
        self.gone(ws, Gone::Closed(code)).await;
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> Result<()> {
        self.gone(ws, Gone::Error).await;
        Ok(())
    }
}

impl Scene {
    /// Runs `f` on the state, building it first after a (re)start.
    fn with_core<R>(&self, f: impl FnOnce(&mut SceneCore) -> AppResult<R>) -> AppResult<R> {
        self.ensure_core(None, None)?;
        let mut guard = self.core.borrow_mut();
        let core = guard
            .as_mut()
            .ok_or_else(|| AppError::internal("scene state missing"))?;
        f(core)
    }

    /// Builds the state from SQLite and the sockets' attachments. A scene
    /// learns its name and characters from its first subscribe; any later
    /// subscribe must name the same list.
    fn ensure_core(&self, hint: Option<&str>, asked: Option<&[CharacterId]>) -> AppResult<()> {
        if let Some(core) = self.core.borrow().as_ref() {
            if let Some(asked) = asked {
                if characters_key(&core.hub.characters()) != characters_key(asked) {
                    return Err(AppError::internal("scene object holds another scene"));
                }
            }
            return Ok(());
        }
        let store = Store::open(&self.state.storage())?;
        let stored_name = store.meta("character")?;
        let name = match (self.state.id().name(), stored_name.clone(), hint) {
            (Some(n), _, _) | (None, Some(n), _) => n,
            (None, None, Some(n)) => n.to_string(),
            (None, None, None) => return Err(AppError::internal("scene woke without a name")),
        };
        if stored_name.as_deref() != Some(name.as_str()) {
            store.set_meta("character", &name)?;
        }
        let characters: Vec<CharacterId> = match (store.meta(CHARACTERS_KEY)?, asked) {
            (Some(list), asked) => {
                let stored: Vec<CharacterId> = list
                    .split(',')
                    .filter_map(|c| CharacterId::parse(c).ok())
                    .collect();
                if asked.is_some_and(|a| characters_key(a) != characters_key(&stored)) {
                    return Err(AppError::internal("scene object holds another scene"));
                }
                stored
            }
            (None, Some(asked)) => {
                store.set_meta(CHARACTERS_KEY, &characters_key(asked))?;
                asked.to_vec()
            }
            (None, None) => return Err(AppError::internal("scene woke without its characters")),
        };
        let mut streams = Vec::new();
        for c in characters {
            let place = store.meta(&format!("f:{}", c.as_str()))?;
            let (epoch, last) = place
                .as_deref()
                .and_then(|p| p.split_once('\t'))
                .map(|(e, l)| (e.to_string(), l.parse().unwrap_or(0)))
                .unwrap_or_default();
            streams.push((c, Follower::new(epoch, last)));
        }
        let config = Config::cached(&self.env);
        let mut core = SceneCore {
            hub: SceneHub::new(streams).with_refresh(config.registry_lease_ms / 2),
            name,
            store,
            config,
            sockets: HashMap::new(),
            next_key: 1,
            pending: 0,
            alarm: routing::alarm::Armed::Unknown,
            to_publish: Vec::new(),
            storage: Rc::new(self.state.storage()),
            tasks: Scheduler::default(),
            report_wanted: false,
            report_version: 0,
            events: Vec::new(),
        };
        let mut restored = 0usize;
        for ws in self.state.get_websockets() {
            match attachment::restore(&ws, &core.store) {
                Some((info, expires_at)) => {
                    let key = core.add_socket(ws);
                    core.hub.restore(key, info, expires_at);
                    restored += 1;
                }
                None => {
                    let _ = ws.close(Some(1011), Some("state lost; reconnect"));
                }
            }
        }
        // As for a character (`routing::lease`): a wake from hibernation
        // resumes the lease refresh; after the runtime died, the entries may
        // name sockets that are gone.
        let listed_at = core.store.listed_at().ok().flatten();
        let lease_ms = core.config.registry_lease_ms;
        match on_wake(restored > 0, listed_at, now_ms(), lease_ms) {
            OnWake::Report => core.report_wanted = true,
            OnWake::RefreshAt(at) => core.hub.resume_refresh(at),
            OnWake::Nothing => {}
        }
        if restored > 0 {
            worker::console_log!(
                "scene {}: woke with {restored} sockets, restored from their attachments",
                core.name
            );
        }
        *self.core.borrow_mut() = Some(core);
        Ok(())
    }

    async fn gone(&self, ws: WebSocket, how: Gone) {
        let now = now_ms();
        let result = self.with_core(|core| {
            if let Some(client) = core.key_of(&ws) {
                let effects = core.hub.gone(client, how);
                core.apply(now, effects);
            }
            Ok(())
        });
        if let Err(e) = result {
            console_error!("scene websocket close: {}", e.message());
        }
        self.settle(now).await;
    }

    /// After every event: send client publishes on, start the reports and
    /// log sends asked for, keep the alarm at the next deadline.
    async fn settle(&self, now: u64) {
        let publishes = match self.core.borrow_mut().as_mut() {
            Some(core) => std::mem::take(&mut core.to_publish),
            None => return,
        };
        for p in publishes {
            serve::forward_publish(Rc::clone(&self.core), self.env.clone(), p);
        }
        tasks::start_queued(&self.core, &self.env);
        tasks::sync_alarm(&self.core, now).await;
    }
}

/// A client id for a new scene socket.
fn new_client_id() -> String {
    random_hex(4)
}
