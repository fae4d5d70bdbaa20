//! The scene object's deferred work, coalesced per kind like a character
//! object's (`routing::tasks::Scheduler`): registry reports (the scene's
//! sockets under each of its characters, `routing::scene::registry_entry`,
//! coalesced over 200 ms and refreshed every half lease while it holds
//! sockets), connects and disconnects sent to each character's object for
//! its event log and its presence (one request in flight per scene, in
//! order, with the scene's socket count and whether one asked for
//! presence; a failed send is kept and tried again a second later), and
//! the object's alarm.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use routing::events::LogEvent;
use routing::scene::registry_entry;
use routing::topic::CharacterId;
use routing::wire::{path, RegistryReport, SceneLog, MAX_SCENE_LOG_EVENTS};
use wasm_bindgen::JsValue;
use worker::{console_error, Delay, Env};

use super::{SceneCore, SharedScene};
use crate::character::now_ms;
use crate::forward::post_to_name;
use crate::registry;

/// Most log events a scene object keeps unsent (reached only while the
/// characters' objects cannot be reached); past it the oldest are dropped.
pub const MAX_UNSENT_EVENTS: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SceneTask {
    Report,
    Logs,
}

impl SceneCore {
    /// Queues a log event for `character`'s object.
    pub(super) fn queue_event(&mut self, character: &CharacterId, event: LogEvent) {
        if self.events.len() >= MAX_UNSENT_EVENTS {
            console_error!("scene {}: dropping an unsent log event", self.name);
            self.events.remove(0);
        }
        self.events.push((character.clone(), event));
    }
}

/// Starts what the last event asked for: a report, the log sends.
pub fn start_queued(shared: &SharedScene, env: &Env) {
    let mut to_start = Vec::new();
    if let Some(core) = shared.borrow_mut().as_mut() {
        if std::mem::take(&mut core.report_wanted) && core.tasks.request(SceneTask::Report) {
            to_start.push((SceneTask::Report, Duration::from_millis(200)));
        }
        if !core.events.is_empty() && core.tasks.request(SceneTask::Logs) {
            to_start.push((SceneTask::Logs, Duration::ZERO));
        }
    }
    for (task, delay) in to_start {
        spawn(shared.clone(), env.clone(), task, delay);
    }
}

fn spawn(shared: SharedScene, env: Env, task: SceneTask, delay: Duration) {
    wasm_bindgen_futures::spawn_local(async move {
        if !delay.is_zero() {
            Delay::from(delay).await;
        }
        if let Some(core) = shared.borrow_mut().as_mut() {
            core.tasks.begin(task);
        }
        let result = match task {
            SceneTask::Report => report(&shared, &env).await,
            SceneTask::Logs => send_logs(&shared, &env).await,
        };
        let failed = result.is_err();
        if let Err(e) = result {
            console_error!("scene {task:?}: {e}");
        }
        let again = match shared.borrow_mut().as_mut() {
            Some(core) => core.tasks.end(task),
            None => false,
        };
        if again || (failed && task == SceneTask::Logs) {
            // A failed send is tried again after a second.
            let delay = match (failed, task) {
                (true, _) => Duration::from_secs(1),
                (false, SceneTask::Report) => Duration::from_millis(200),
                (false, SceneTask::Logs) => Duration::ZERO,
            };
            if !again {
                if let Some(core) = shared.borrow_mut().as_mut() {
                    core.tasks.request(task);
                }
            }
            spawn(shared.clone(), env.clone(), task, delay);
        }
        start_queued(&shared, &env);
        sync_alarm(&shared, now_ms()).await;
    });
}

/// Reports the scene's sockets to the registry, one entry per character.
async fn report(shared: &SharedScene, env: &Env) -> worker::Result<()> {
    let (body, listed) = {
        let mut guard = shared.borrow_mut();
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        core.report_version = now_ms().max(core.report_version + 1);
        let subscribers = core.hub.subscriber_count() as u64;
        let topics = core.hub.filter_counts();
        let reports: Vec<RegistryReport> = core
            .hub
            .characters()
            .iter()
            .map(|c| RegistryReport {
                character: registry_entry(c, &core.name),
                subscribers,
                topics: topics.clone(),
                version: core.report_version,
                lease_ms: core.config.registry_lease_ms,
            })
            .collect();
        let body =
            serde_json::to_string(&reports).map_err(|e| worker::Error::RustError(e.to_string()))?;
        (body, subscribers > 0)
    };
    registry::post_report(env, path::REPORTS, &body).await?;
    if let Some(core) = shared.borrow_mut().as_mut() {
        let now = now_ms();
        core.hub.reported(now);
        let lease_ms = core.config.registry_lease_ms;
        core.store.record_report(listed, now, lease_ms)?;
    }
    Ok(())
}

/// Sends the queued events to their characters' objects; a character whose
/// send failed gets its events back at the front of the queue.
async fn send_logs(shared: &SharedScene, env: &Env) -> worker::Result<()> {
    let (scene, queued, sockets, presence) = match shared.borrow_mut().as_mut() {
        Some(core) => (
            core.name.clone(),
            std::mem::take(&mut core.events),
            core.hub.subscriber_count(),
            core.hub.presence_held(),
        ),
        None => return Ok(()),
    };
    let mut by_character: BTreeMap<CharacterId, Vec<LogEvent>> = BTreeMap::new();
    for (c, e) in queued {
        by_character.entry(c).or_default().push(e);
    }
    let sends = by_character.into_iter().map(|(c, events)| {
        let scene = scene.clone();
        async move {
            for chunk in events.chunks(MAX_SCENE_LOG_EVENTS) {
                let body = SceneLog {
                    scene: scene.clone(),
                    events: chunk.to_vec(),
                    sockets,
                    presence,
                };
                let sent = match serde_json::to_string(&body) {
                    Ok(body) => {
                        post_to_name(env, c.as_str(), path::SCENE_LOG, &JsValue::from_str(&body))
                            .await
                    }
                    Err(e) => Err(crate::error::AppError::internal(e)),
                };
                match sent {
                    Ok(resp) if resp.status_code() == 200 => {}
                    Ok(resp) => {
                        return Err((c, events, format!("answered {}", resp.status_code())))
                    }
                    Err(e) => return Err((c, events, e.message().to_string())),
                }
            }
            Ok(())
        }
    });
    let mut failed = Vec::new();
    let mut errors = Vec::new();
    for result in join_all(sends).await {
        if let Err((c, events, why)) = result {
            errors.push(format!("{c}: {why}"));
            failed.extend(events.into_iter().map(|e| (c.clone(), e)));
        }
    }
    if failed.is_empty() {
        return Ok(());
    }
    if let Some(core) = shared.borrow_mut().as_mut() {
        failed.append(&mut core.events);
        let over = failed.len().saturating_sub(MAX_UNSENT_EVENTS);
        if over > 0 {
            console_error!("scene {}: dropping {over} unsent log events", core.name);
            failed.drain(..over);
        }
        core.events = failed;
    }
    Err(worker::Error::RustError(format!(
        "log events not sent: {}",
        errors.join("; ")
    )))
}

/// Keeps the object's one alarm at the hub's next deadline (token expiry
/// or lease refresh), through `crate::alarm`.
pub async fn sync_alarm(shared: &SharedScene, now: u64) {
    let (armed, wanted, storage) = {
        let guard = shared.borrow();
        let Some(core) = guard.as_ref() else { return };
        let wanted = core.hub.poll_timeout();
        if routing::alarm::write_needed(core.alarm, wanted).is_none() {
            return;
        }
        (core.alarm, wanted, std::rc::Rc::clone(&core.storage))
    };
    let armed = crate::alarm::sync(&storage, armed, wanted, now).await;
    if let Some(core) = shared.borrow_mut().as_mut() {
        core.alarm = armed;
    }
}
