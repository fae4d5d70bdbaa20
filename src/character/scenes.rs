//! The character's own object and the scene objects it feeds
//! (`routing::scene_feeds` decides): a scene joins by asking, and is fed
//! the stored rows like a relay (one request in flight per scene, from the
//! seq it acknowledged), each feed naming the character. A scene that
//! answers it holds no sockets leaves the set.

use routing::archive::rows_value;
use routing::catalogue::MAX_FEED_ROWS;
use routing::scene::is_scene_name;
use routing::scene_feeds::MAX_SCENE_FEEDS;
use routing::wire::{
    path, FeedAnswer, FeedBody, JoinAnswer, SceneJoin, SceneLog, MAX_SCENE_LOG_EVENTS,
};
use worker::{Env, Request, Response};

use routing::hub::Input;
use routing::protocol::PresenceEvent;

use super::core::{Role, Shared, CHARACTER_FULL_RETRY_SECS};
use super::relays::{feed_answer, FEED_ROUNDS};
use super::tasks::Task;
use super::{AppResult, Character};
use crate::error::{json_response, AppError};
use crate::forward::post_to_scene;

impl Character {
    /// Owner: a scene object asks to be fed; answers this character's
    /// place, from which the feeds continue.
    pub(super) async fn scene_join(&self, now: u64, req: &mut Request) -> AppResult<Response> {
        let body: SceneJoin = req
            .json()
            .await
            .map_err(|e| AppError::bad_request(format!("scene join body: {e}")))?;
        if !is_scene_name(&body.scene) {
            return Err(AppError::bad_request("not a scene object's name"));
        }
        self.with_core(now, |core| {
            let answer = JoinAnswer {
                epoch: core.hub.epoch().to_string(),
                seq: core.hub.seq(),
                retained: Some(rows_value(core.hub.retained().rows())),
                retained_rev: core.hub.retained().rev().unwrap_or(0),
            };
            let owner_sockets = core.hub.subscriber_count();
            let max = core.config.max_subscribers;
            let Role::Owner { relays } = &mut core.role else {
                return Err(AppError::internal("a relay feeds no scene"));
            };
            // Scene sockets count towards `MAX_SUBSCRIBERS` like any other.
            if relays.is_full(owner_sockets, max) {
                return Err(AppError::character_full(max, CHARACTER_FULL_RETRY_SECS));
            }
            let Some((slot, new)) = relays.scenes.join(&body.scene, answer.seq) else {
                return Err(AppError::character_full(
                    MAX_SCENE_FEEDS,
                    CHARACTER_FULL_RETRY_SECS,
                ));
            };
            if new {
                core.store.add_scene(&body.scene)?;
            }
            core.sync_scenes();
            core.request(Task::FeedScene(slot));
            let body = serde_json::to_string(&answer).map_err(AppError::internal)?;
            Ok(json_response(200, &body)?)
        })
    }

    /// Owner: connects and disconnects of a scene's sockets, logged here as
    /// this character's events (as if its own sockets'). Only those two
    /// kinds, of this character, at most `MAX_SCENE_LOG_EVENTS` a request.
    pub(super) async fn scene_log(&self, now: u64, req: &mut Request) -> AppResult<Response> {
        let body: SceneLog = req
            .json()
            .await
            .map_err(|e| AppError::bad_request(format!("scene log body: {e}")))?;
        if !is_scene_name(&body.scene) || body.events.len() > MAX_SCENE_LOG_EVENTS {
            return Err(AppError::bad_request("not a scene object's log"));
        }
        self.with_core(now, |core| {
            let me = core.hub.character().as_str();
            let fits = |e: &routing::events::LogEvent| {
                matches!(e.event.as_str(), "connect" | "disconnect")
                    && e.character.as_deref() == Some(me)
            };
            if !body.events.iter().all(fits) {
                return Err(AppError::bad_request("not this character's scene events"));
            }
            for e in &body.events {
                core.log(e);
            }
            core.settle_log();
            // Their joins and leaves, for presence.
            if let Role::Owner { relays } = &mut core.role {
                relays.scenes.told(&body.scene, body.sockets, body.presence);
            }
            core.sync_scenes();
            for e in body.events {
                let event = match e.event.as_str() {
                    "connect" => PresenceEvent::Join,
                    _ => PresenceEvent::Leave,
                };
                let Some(client_id) = e.client_id else {
                    continue;
                };
                core.feed(
                    now,
                    Input::ScenePresence {
                        event,
                        client_id,
                        user: e.user,
                    },
                );
            }
            Ok(json_response(200, "{}")?)
        })
    }
}

/// Owner: brings the scene in `slot` up to this object's seq, one request
/// at a time; stops when it is caught up, leaves the set, or a request
/// fails (the next publish or wake probes it).
pub async fn feed_scene(shared: &Shared, env: &Env, slot: u32) -> worker::Result<()> {
    for _ in 0..FEED_ROUNDS {
        let next = {
            let mut guard = shared.borrow_mut();
            let Some(core) = guard.as_mut() else {
                return Ok(());
            };
            let Role::Owner { relays } = &mut core.role else {
                return Ok(());
            };
            let seq = core.hub.seq();
            let (Some(after), Some(scene)) =
                (relays.scenes.feed_from(slot, seq), relays.scenes.get(slot))
            else {
                return Ok(());
            };
            // Rows up to the archive mark are in KV only: the scene's
            // stream of this character restarts past them.
            let lost = after < core.archived_through;
            let after = after.max(core.archived_through);
            let rows = core.store.after(after, MAX_FEED_ROWS)?;
            let name = scene.name.clone();
            let joins = scene.joins;
            let presence = relays.scenes.take_presence(slot);
            let body = FeedBody {
                epoch: core.hub.epoch().to_string(),
                after,
                lost,
                rows: rows_value(&rows),
                character: Some(core.hub.character().as_str().to_string()),
                presence: presence.iter().map(|f| f.to_string()).collect(),
            };
            let body = serde_json::to_string(&body)
                .map_err(|e| worker::Error::RustError(e.to_string()))?;
            (name, joins, body)
        };
        let (name, joins, body) = next;
        let answer = post_to_scene(
            env,
            &name,
            path::FEED,
            &wasm_bindgen::JsValue::from_str(&body),
        )
        .await;
        let answer = feed_answer(answer, "scene", &name).await;
        let mut guard = shared.borrow_mut();
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        let Role::Owner { relays } = &mut core.role else {
            return Ok(());
        };
        match answer {
            Ok(FeedAnswer {
                last,
                sockets,
                presence,
            }) => {
                let left = relays.scenes.answered(slot, last, sockets, joins);
                if left.is_none() {
                    relays.scenes.told(&name, sockets, presence);
                }
                core.sync_scenes();
                if let Some(gone) = left {
                    core.store.drop_scene(&gone)?;
                    return Ok(());
                }
            }
            Err(e) => {
                relays.scenes.failed(slot);
                return Err(e);
            }
        }
    }
    Ok(())
}
