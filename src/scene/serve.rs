//! The scene object's routes: the subscribe the router forwards (joins
//! each character's object, replays resumes, accepts the socket), the
//! feeds of the characters' objects, the listing, kicks and revocations,
//! and client publishes sent on to the named character's object.

use std::rc::Rc;

use futures_util::future::join_all;
use routing::archive::rows_value;
use routing::hub::{ClientInfo, Resume, StoredCommand};
use routing::query::{query_pairs, split_url};
use routing::scene::{next_shard, parse_scene_query, MAX_SCENE_SHARDS};
use routing::scene_hub::SceneEffect;
use routing::topic::{CharacterId, TopicFilter};
use routing::wire::{
    path, FeedAnswer, FeedBody, JoinAnswer, ReplayAnswer, SceneJoin, SubscribeFacts, H_CHARACTER,
};
use worker::{Env, Method, Request, Response, WebSocketPair};

use super::{new_client_id, AppResult, Scene, SceneCore};
use crate::character::attachment;
use crate::character::CHARACTER_FULL_RETRY_SECS;
use crate::error::{json_response, AppError};
use crate::forward::{post_to_name, upgrade_to_scene};

fn owner_err(e: AppError) -> AppError {
    AppError::internal(format!("a character's object: {}", e.message()))
}

impl Scene {
    pub(super) async fn serve(&self, mut req: Request, now: u64) -> AppResult<Response> {
        let hint = req.headers().get(H_CHARACTER)?;
        let raw_url = req.inner().url();
        let (route, query) = split_url(&raw_url);
        let pairs = query_pairs(query);
        match (req.method(), route) {
            (Method::Get, path::SUBSCRIBE) => {
                let headers = req.headers();
                let facts = SubscribeFacts::from_headers(|n| headers.get(n).ok().flatten());
                self.subscribe(now, hint.as_deref(), &raw_url, &pairs, facts)
                    .await
            }
            (Method::Post, path::FEED) => {
                self.ensure_core(hint.as_deref(), None)?;
                self.feed(now, &mut req).await
            }
            (Method::Get, path::SUBSCRIPTIONS) => self.listing(),
            (Method::Delete, p) if p.starts_with(path::KICK_PREFIX) => {
                let id = p[path::KICK_PREFIX.len()..].to_string();
                self.with_core(|core| {
                    let (effects, found) = core.hub.kick(&id);
                    core.apply(now, effects);
                    if found {
                        Ok(json_response(200, r#"{"disconnected":true}"#)?)
                    } else {
                        Err(AppError::not_found(format!(
                            "no client {id:?} on this scene"
                        )))
                    }
                })
            }
            (Method::Post, path::REVOKE) => {
                let body: serde_json::Value = req.json().await?;
                let user = body["user"].as_str().unwrap_or_default().to_string();
                self.with_core(|core| {
                    let (effects, closed) = core.hub.revoke(&user);
                    core.apply(now, effects);
                    let body = serde_json::json!({ "closed": closed }).to_string();
                    Ok(json_response(200, &body)?)
                })
            }
            (_, other) => Err(AppError::not_found(format!("no scene route {other}"))),
        }
    }

    /// A subscribe: admitted here, or, when this object holds
    /// `FANOUT_LIMIT` sockets, forwarded to the next shard of the scene
    /// (whose 101 is passed back).
    async fn subscribe(
        &self,
        now: u64,
        hint: Option<&str>,
        url: &str,
        pairs: &[(String, String)],
        facts: SubscribeFacts,
    ) -> AppResult<Response> {
        let query = parse_scene_query(pairs)?;
        self.ensure_core(hint, Some(&query.characters))?;
        let (name, full) = self.with_core(|core| {
            let full = core.hub.subscriber_count() + core.pending >= core.config.fanout_limit;
            if !full {
                core.pending += 1;
            }
            Ok((core.name.clone(), full))
        })?;
        if full {
            let Some(next) = next_shard(&name) else {
                let most =
                    MAX_SCENE_SHARDS as usize * self.with_core(|c| Ok(c.config.fanout_limit))?;
                return Err(AppError::character_full(most, CHARACTER_FULL_RETRY_SECS));
            };
            return upgrade_to_scene(&self.env, &next, url, &facts.headers()).await;
        }
        let result = self.admit(now, &name, &query, facts).await;
        // The same turn as the accept: no await since.
        self.with_core(|core| {
            core.pending = core.pending.saturating_sub(1);
            Ok(())
        })?;
        result
    }

    async fn admit(
        &self,
        now: u64,
        name: &str,
        query: &routing::scene::SceneQuery,
        facts: SubscribeFacts,
    ) -> AppResult<Response> {
        // Each character's object takes this scene on (or again).
        let body = serde_json::to_string(&SceneJoin {
            scene: name.to_string(),
        })
        .map_err(AppError::internal)?;
        let joins = query.characters.iter().map(|c| {
            let body = body.clone();
            async move {
                let mut resp = post_to_name(
                    &self.env,
                    c.as_str(),
                    path::SCENE_JOIN,
                    &wasm_bindgen::JsValue::from_str(&body),
                )
                .await
                .map_err(owner_err)?;
                if resp.status_code() == 503 {
                    return Err(AppError::character_full_of(
                        c.as_str(),
                        CHARACTER_FULL_RETRY_SECS,
                    ));
                }
                if resp.status_code() != 200 {
                    return Err(AppError::internal(format!(
                        "scene join: {c} answered {}",
                        resp.status_code()
                    )));
                }
                AppResult::Ok((c.clone(), resp.json::<JoinAnswer>().await?))
            }
        });
        let mut placed = Vec::new();
        for answer in join_all(joins).await {
            placed.push(answer?);
        }
        let limit = self.with_core(|core| {
            let held = core.hub.subscriber_count() > 0;
            for (c, answer) in placed {
                let (effects, moved) = core.hub.join(&c, &answer.epoch, answer.seq, held);
                core.apply(now, effects);
                if moved {
                    core.save_place(&c)?;
                }
                // The character's retained commands as of its answer.
                if let Some(rows) = answer.retained {
                    let rows = crate::character::rows_of(rows)?;
                    if !core
                        .hub
                        .adopt_retained(&c, rows, answer.seq, answer.retained_rev)
                    {
                        worker::console_warn!("scene: {c}'s retained snapshot not taken");
                    }
                }
            }
            Ok(usize::try_from(core.config.resume_limit).unwrap_or(usize::MAX))
        })?;
        // Resumes the ring does not cover: the character's bounded read.
        let need: Vec<(CharacterId, u64)> = self.with_core(|core| {
            Ok(query
                .since
                .iter()
                .filter(|(c, since)| {
                    let epoch = query.epoch.get(*c).map(String::as_str);
                    core.hub
                        .replay(c, **since, epoch, &query.topics, limit)
                        .is_none()
                })
                .map(|(c, s)| (c.clone(), *s))
                .collect())
        })?;
        let reads = need.iter().map(|(c, since)| {
            let epoch = query.epoch.get(c).cloned();
            async move {
                let answer = owner_replay(&self.env, c, *since, epoch, &query.topics).await?;
                AppResult::Ok((c.clone(), *since, answer))
            }
        });
        let mut read = Vec::new();
        for answer in join_all(reads).await {
            read.push(answer?);
        }
        let info = ClientInfo {
            client_id: new_client_id(),
            user: facts.user,
            topics: query.topics.clone(),
            presence: query.presence,
            connected_at: now,
            can_publish: facts.can_publish,
        };
        let encoded = attachment::encode(&info, facts.expires_ms)?;
        // From here to the accept, no await: the replay ends where live
        // delivery starts, per character.
        let resumes: Vec<(CharacterId, Resume)> = self.with_core(|core| {
            let mut out = Vec::new();
            for (c, since) in &query.since {
                let epoch = query.epoch.get(c).map(String::as_str);
                let from_read = read.iter().find(|(rc, _, _)| rc == c);
                let resume = match from_read {
                    Some((_, since, answer)) => {
                        let rows = crate::character::rows_of(answer.rows.clone())?;
                        let resume = Resume {
                            since: *since,
                            rows,
                            complete: answer.complete,
                            next_since: answer.next_since,
                        };
                        core.hub
                            .extend(c, resume, answer.covered, &query.topics, limit)
                    }
                    None => core
                        .hub
                        .replay(c, *since, epoch, &query.topics, limit)
                        .unwrap_or(Resume {
                            since: *since,
                            rows: Vec::new(),
                            complete: false,
                            next_since: None,
                        }),
                };
                out.push((c.clone(), resume));
            }
            Ok(out)
        })?;
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[info.client_id.as_str()]);
        self.with_core(|core| {
            attachment::store(&pair.server, &info.client_id, &encoded, &core.store)?;
            let key = core.add_socket(pair.server.clone());
            let effects = core.hub.connect(key, info, facts.expires_ms, resumes);
            core.apply(now, effects);
            worker::console_log!(
                "scene {}: socket accepted, {} held",
                core.name,
                core.hub.subscriber_count()
            );
            Ok(())
        })?;
        Ok(Response::from_websocket(pair.client)?)
    }

    /// Rows of one character from its object.
    async fn feed(&self, now: u64, req: &mut Request) -> AppResult<Response> {
        let body: FeedBody = req
            .json()
            .await
            .map_err(|e| AppError::internal(format!("feed body: {e}")))?;
        let rows = crate::character::rows_of(body.rows)?;
        let character = body
            .character
            .as_deref()
            .and_then(|c| CharacterId::parse(c).ok());
        self.with_core(|core| {
            let holding = core.holding();
            let answer = match &character {
                Some(c) => {
                    let before = core
                        .hub
                        .follower(c)
                        .map(|f| (f.epoch().to_string(), f.last()));
                    let (effects, last) =
                        core.hub
                            .feed(c, &body.epoch, body.after, body.lost, rows, holding);
                    core.apply(now, effects);
                    let effects = core.hub.presence_frames(c, &body.presence);
                    core.apply(now, effects);
                    let after = core
                        .hub
                        .follower(c)
                        .map(|f| (f.epoch().to_string(), f.last()));
                    if before != after {
                        core.save_place(c)?;
                    }
                    last.map(|last| FeedAnswer {
                        last,
                        sockets: core.hub.subscriber_count() + core.pending,
                        presence: core.hub.presence_held(),
                    })
                }
                None => None,
            };
            // Not one of this scene's characters: 0 sockets, so it stops.
            let answer = answer.unwrap_or(FeedAnswer {
                last: 0,
                sockets: 0,
                presence: false,
            });
            let body = serde_json::to_string(&answer).map_err(AppError::internal)?;
            Ok(json_response(200, &body)?)
        })
    }

    fn listing(&self) -> AppResult<Response> {
        self.with_core(|core| {
            let subscribers: Vec<serde_json::Value> = core
                .hub
                .clients()
                .map(|(_, c)| {
                    // The shape of the character's listing entries; `relay`
                    // is this scene object's name.
                    serde_json::json!({
                        "client_id": c.client_id,
                        "user": c.user,
                        "topics": c.topics.iter().map(TopicFilter::as_str).collect::<Vec<_>>(),
                        "presence": c.presence,
                        "connected_at": c.connected_at,
                        "relay": core.name,
                    })
                })
                .collect();
            let body = serde_json::json!({
                "scene": core.name,
                "characters": core.hub.characters(),
                "subscribers": subscribers,
            });
            Ok(json_response(200, &body.to_string())?)
        })
    }
}

/// The character's bounded resume read for a scene socket.
async fn owner_replay(
    env: &Env,
    c: &CharacterId,
    since: u64,
    epoch: Option<String>,
    topics: &[TopicFilter],
) -> AppResult<ReplayAnswer> {
    let csv: Vec<&str> = topics.iter().map(TopicFilter::as_str).collect();
    let mut url = format!(
        "https://character{}?since={since}&topics={}",
        path::REPLAY,
        csv.join(",").replace('>', "%3E")
    );
    if let Some(e) = epoch {
        url.push_str(&format!("&epoch={e}"));
    }
    let req = Request::new(&url, Method::Get)?;
    req.headers().set(H_CHARACTER, c.as_str())?;
    let stub = env.durable_object("CHARACTERS")?.get_by_name(c.as_str())?;
    let mut resp = stub.fetch_with_request(req).await?;
    if resp.status_code() != 200 {
        return Err(AppError::internal(format!(
            "{c}'s resume read answered {}",
            resp.status_code()
        )));
    }
    Ok(resp.json::<ReplayAnswer>().await?)
}

/// A client's publish, sent to its character's object; the client gets
/// `published` with that character's seq, or an `error` frame.
pub fn forward_publish(
    shared: Rc<std::cell::RefCell<Option<SceneCore>>>,
    env: Env,
    p: SceneEffect,
) {
    let SceneEffect::Publish {
        client,
        character,
        command,
        r#ref,
    } = p
    else {
        return;
    };
    wasm_bindgen_futures::spawn_local(async move {
        let row = StoredCommand {
            seq: 0,
            ts: 0,
            command,
        };
        let body = serde_json::json!({ "commands": rows_value(&[row]) }).to_string();
        let sent = post_to_name(
            &env,
            character.as_str(),
            path::PUBLISH,
            &wasm_bindgen::JsValue::from_str(&body),
        )
        .await;
        let frame = crate::forward::publish_answer_frame(sent, r#ref.as_deref()).await;
        if let Some(core) = shared.borrow().as_ref() {
            if let Some(ws) = core.sockets.get(&client) {
                let _ = ws.send_with_str(&frame);
            }
        }
    });
}
