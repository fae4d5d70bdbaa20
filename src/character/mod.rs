//! The character Durable Object: one per character, reached by name. It holds
//! the character's subscribers as hibernatable WebSockets and is a thin shell
//! over the sans-IO hub of `routing`: every runtime event becomes one
//! `hub::Input` (with the clock read once, here), and the effects that come
//! back are applied by `core.rs`. The files of this folder split it by
//! runtime concern:
//!
//! * `wake.rs`: building the state after a (re)start, from SQLite and from
//!   each socket's attachment;
//! * `core.rs`: applying the hub's effects (fan-out, closes, storage of
//!   publishes, log buffering) and arming the one alarm;
//! * `requests.rs`: the object's internal HTTP routes (subscribe, publish,
//!   history, listing, kick), history and resume reads included;
//! * `tasks.rs`: deferred work (event-log flushes, registry reports,
//!   archiving) run after the handler has answered;
//! * `attachment.rs`: the per-socket record kept across hibernation;
//! * `relays.rs`: a hot character's own object placing subscribers on
//!   relays, feeding them, and reaching their sockets for admin calls;
//! * `relay.rs`: the relay role (`<character>~r<n>`): sockets and delivery
//!   only, fed by the character's own object.

pub(crate) mod attachment;
mod core;
mod relay;
mod relays;
mod requests;
mod scenes;
mod tasks;
mod wake;

use std::cell::RefCell;
use std::rc::Rc;

use routing::alarm::Armed;
use routing::hub::{Gone, Input};
use worker::{
    console_error, durable_object, Date, DurableObject, Env, Request, Response, Result, State,
    WebSocket, WebSocketIncomingMessage,
};

pub use self::core::{send_js, CHARACTER_FULL_RETRY_SECS};
use self::core::{Core, Shared};
pub use self::relays::rows_of;
use crate::error::AppError;

type AppResult<T> = std::result::Result<T, AppError>;

#[durable_object]
pub struct Character {
    state: State,
    env: Env,
    core: Shared,
}

/// The clock, read once per runtime event and passed down.
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
        let result = self.with_core(now, |core| {
            // The runtime cleared the alarm that brought us here.
            core.alarm = Armed::Unset;
            core.feed(now, Input::Timeout);
            if core.archive.take_due(now) {
                core.archive_if_due(now);
            }
            if core.logbuf.due(now) {
                core.flush_logs();
            }
            Ok(())
        });
        if let Err(e) = result {
            console_error!("alarm: {}", e.message());
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
        let result = self.with_core(now, |core| {
            let Some(client) = core.key_of(&ws) else {
                let _ = ws.close(Some(1011), Some("unknown socket; reconnect"));
                return Ok(());
            };
            let input = match message {
                WebSocketIncomingMessage::String(text) => Input::Text { client, text },
                WebSocketIncomingMessage::Binary(_) => Input::Binary { client },
            };
            core.feed(now, input);
            Ok(())
        });
        if let Err(e) = result {
            console_error!("websocket message: {}", e.message());
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

impl Character {
    /// Runs `f` on the state, building it first after a (re)start.
    fn with_core<R>(&self, now: u64, f: impl FnOnce(&mut Core) -> AppResult<R>) -> AppResult<R> {
        self.ensure_core(now, None)?;
        let mut guard = self.core.borrow_mut();
        let core = guard
            .as_mut()
            .ok_or_else(|| AppError::internal("character state missing"))?;
        f(core)
    }

    /// A socket the runtime reports gone. The hub answers a socket it still
    /// knew with a close, which completes the closing handshake; one we
    /// closed ourselves is already forgotten and gives nothing.
    async fn gone(&self, ws: WebSocket, how: Gone) {
        let now = now_ms();
        let result = self.with_core(now, |core| {
            if let Some(client) = core.key_of(&ws) {
                core.feed(now, Input::Gone { client, how });
            }
            Ok(())
        });
        if let Err(e) = result {
            console_error!("websocket close: {}", e.message());
        }
        self.settle(now).await;
    }

    /// After every event: start the deferred tasks it queued, and keep the
    /// object's one alarm at the next deadline.
    async fn settle(&self, now: u64) {
        tasks::start_queued(&self.core, &self.env);
        sync_alarm(&self.core, now).await;
    }
}

/// Keeps the object's one alarm at [`Core::next_alarm`] (`crate::alarm`);
/// also called by the archive task, whose failures move the retry.
pub async fn sync_alarm(shared: &Shared, now: u64) {
    let (armed, wanted, storage) = {
        let guard = shared.borrow();
        let Some(core) = guard.as_ref() else { return };
        let wanted = core.next_alarm();
        if routing::alarm::write_needed(core.alarm, wanted).is_none() {
            return;
        }
        (core.alarm, wanted, Rc::clone(&core.storage))
    };
    let armed = crate::alarm::sync(&storage, armed, wanted, now).await;
    if let Some(core) = shared.borrow_mut().as_mut() {
        core.alarm = armed;
    }
}
