//! The object's internal routes, called by the router with what it has
//! established (`routing::wire`): subscribe (with its resume), publish,
//! history, the admin listing, kicks and the event log's buffered tail.
//! History and resume reads are driven by the sans-IO
//! `routing::reader::Reader`: it says which KV pages or SQLite rows it needs
//! next, this file only performs the reads.

use routing::archive::rows_value;
use routing::archive::{page_key, unarchived};
use routing::catalogue::{HISTORY_MAX_PAGES, RESUME_MAX_PAGES};
use routing::hub::{ClientInfo, Input, Reply, Resume};
use routing::logbuf::batch_body;
use routing::protocol::parse_publish_body;
use routing::query::{
    parse_history_query, parse_logs_query, parse_subscribe_query, query_pairs, split_url,
};
use routing::reader::{Need, ReadOutcome, ReadSpec, Reader};
use routing::topic::{Topic, TopicFilter};
use routing::wire::{path, PublishAnswer, RetainedAnswer, SubscribeFacts, H_CHARACTER};
use worker::{Method, Request, Response, WebSocketPair};

use super::core::Core;
use super::{attachment, random_hex, AppResult, Character};
use crate::error::{json_response, AppError};
use crate::kv;
use routing::protocol::ErrorCode;

impl Character {
    pub(super) async fn serve(&self, mut req: Request, now: u64) -> AppResult<Response> {
        let hint = req.headers().get(H_CHARACTER)?;
        self.ensure_core(now, hint.as_deref())?;
        let raw_url = req.inner().url();
        let (route, query) = split_url(&raw_url);
        let pairs = query_pairs(query);
        let relay = self.with_core(now, |core| Ok(core.is_relay()))?;
        if relay {
            return self.serve_relay(now, req, route, &pairs).await;
        }
        match (req.method(), route) {
            (Method::Get, path::SUBSCRIBE) => {
                let headers = req.headers();
                let facts = SubscribeFacts::from_headers(|name| headers.get(name).ok().flatten());
                self.subscribe(now, &req, &pairs, facts).await
            }
            (Method::Post, path::PUBLISH) => {
                // Bounded before it gets here: the router forwards a body
                // whose declared length it checked (HTTP framing holds it to
                // that length), or one it measured as it read it. So it is
                // read in one piece, and checked once more.
                let body = crate::forward::read_bounded(req.inner()).await?;
                self.publish(now, &body)
            }
            (Method::Get, path::HISTORY) => self.history(now, &pairs).await,
            (Method::Get, path::STATE) => self.state_answer(now),
            (Method::Get, path::RELAY_RETAINED) => self.retained_snapshot(now),
            (Method::Delete, p) if p.starts_with(path::RETAINED_PREFIX) => {
                self.clear_retained(now, &p[path::RETAINED_PREFIX.len()..])
            }
            (Method::Get, path::REPLAY) => self.replay_for_relay(now, &pairs).await,
            (Method::Post, path::SCENE_JOIN) => self.scene_join(now, &mut req).await,
            (Method::Post, path::SCENE_LOG) => self.scene_log(now, &mut req).await,
            (Method::Get, path::SUBSCRIPTIONS) => self.subscriptions(now).await,
            (Method::Get, path::LOGS) => self.log_tail(now, &pairs),
            (Method::Delete, p) if p.starts_with(path::KICK_PREFIX) => {
                self.kick(now, &p[path::KICK_PREFIX.len()..]).await
            }
            (Method::Post, path::REVOKE) => {
                let user = revoke_user(&mut req).await?;
                self.revoke(now, user).await
            }
            (_, other) => Err(AppError::not_found(format!("no object route {other}"))),
        }
    }

    /// The routes of a relay: subscribes the owner placed here, its feed,
    /// and the admin listing, kicks and revocations the owner passes on.
    async fn serve_relay(
        &self,
        now: u64,
        mut req: Request,
        route: &str,
        pairs: &[(String, String)],
    ) -> AppResult<Response> {
        match (req.method(), route) {
            (Method::Get, path::SUBSCRIBE) => {
                let headers = req.headers();
                let facts = SubscribeFacts::from_headers(|name| headers.get(name).ok().flatten());
                self.relay_subscribe(now, &req, pairs, facts).await
            }
            (Method::Post, path::FEED) => self.relay_feed(now, &mut req).await,
            (Method::Get, path::SUBSCRIPTIONS) => {
                let list = self.with_core(now, |core| Ok(own_entries(core)))?;
                let body = serde_json::json!({ "subscribers": list });
                Ok(json_response(200, &body.to_string())?)
            }
            (Method::Get, path::LOGS) => self.log_tail(now, pairs),
            (Method::Delete, p) if p.starts_with(path::KICK_PREFIX) => {
                self.kick_here(now, &p[path::KICK_PREFIX.len()..])
            }
            (Method::Post, path::REVOKE) => {
                let user = revoke_user(&mut req).await?;
                let closed = self.revoke_here(now, user)?;
                revoke_answer(closed)
            }
            (_, other) => Err(AppError::not_found(format!("no relay route {other}"))),
        }
    }

    /// A new subscriber. The resume is read first (KV is async); its last
    /// SQLite read, the accept and the hub's `Connect` then happen in one
    /// turn, so no publish can slip between the replay and live delivery.
    async fn subscribe(
        &self,
        now: u64,
        req: &Request,
        pairs: &[(String, String)],
        facts: SubscribeFacts,
    ) -> AppResult<Response> {
        let query = parse_subscribe_query(pairs)?;
        // Past `FANOUT_LIMIT` sockets here, a relay takes it (presence
        // subscribers excepted).
        if let Some(resp) = self.place_on_relay(now, req, query.presence).await? {
            return Ok(resp);
        }
        self.with_core(now, |core| core.admit())?;
        let info = ClientInfo {
            client_id: random_hex(4),
            user: facts.user,
            topics: query.topics.clone(),
            presence: query.presence,
            connected_at: now,
            can_publish: facts.can_publish,
        };
        // Refused before any socket exists when the client cannot be kept
        // across hibernation.
        let encoded = attachment::encode(&info, facts.expires_ms)?;
        // Bounded in commands (`RESUME_LIMIT`) and in KV reads; a cut replay
        // says where `GET .../history` continues.
        let resume = match query.since {
            Some(since) => {
                let reader = self.resume_reader(now, since, query.epoch.clone(), &query.topics)?;
                let ReadOutcome {
                    rows,
                    complete,
                    next_since,
                } = self.drive(now, reader).await?.finish();
                Some(Resume {
                    since,
                    rows,
                    complete,
                    next_since,
                })
            }
            None => None,
        };
        // Again after the resume read's awaits, in the turn that accepts.
        self.with_core(now, |core| core.admit())?;
        let pair = WebSocketPair::new()?;
        self.state
            .accept_websocket_with_tags(&pair.server, &[info.client_id.as_str()]);
        self.with_core(now, |core| {
            attachment::store(&pair.server, &info.client_id, &encoded, &core.store)?;
            let client = core.add_socket(pair.server.clone());
            let expires_at = facts.expires_ms;
            core.feed(
                now,
                Input::Connect {
                    client,
                    info,
                    expires_at,
                    resume,
                },
            );
            Ok(())
        })?;
        Ok(Response::from_websocket(pair.client)?)
    }

    fn publish(&self, now: u64, body: &[u8]) -> AppResult<Response> {
        let commands = parse_publish_body(body)?;
        routing::schedule::check_commands(&commands, now)?;
        self.with_core(now, |core| {
            let replies = core.feed(now, Input::Publish { commands });
            let (seqs, delivered) = match replies.into_iter().next() {
                Some(Reply::Published { seqs, delivered }) => (seqs, delivered),
                Some(Reply::Backlogged) => {
                    return Err(AppError::history_backlog(
                        core.archive.retry_after_secs(now),
                    ))
                }
                Some(Reply::Refused(e)) => return Err(e.into()),
                _ => return Err(AppError::internal("the publish was not stored")),
            };
            let answer = PublishAnswer {
                character: core.hub.character().as_str().to_string(),
                epoch: core.hub.epoch().to_string(),
                seqs,
                delivered,
            };
            let body = serde_json::to_string(&answer)
                .map_err(|e| AppError::internal(format!("publish answer: {e}")))?;
            Ok(json_response(200, &body)?)
        })
    }

    async fn history(&self, now: u64, pairs: &[(String, String)]) -> AppResult<Response> {
        let query = parse_history_query(pairs)?;
        let reader = self.read(
            now,
            query.since,
            None,
            &query.topics,
            query.limit as usize,
            HISTORY_MAX_PAGES,
        )?;
        let outcome = self.drive(now, reader).await?.finish();
        self.with_core(now, |core| {
            let frames: Vec<String> = outcome
                .rows
                .iter()
                .map(|r| core.hub.command_frame_of(r))
                .collect();
            // `complete`: every seq of the range read was found (a missing or
            // unreadable archive page makes it false; the read goes on past
            // it). `next_since`: the read was cut (limit or page bound).
            let mut head = serde_json::json!({
                "character": core.hub.character().as_str(),
                "epoch": core.hub.epoch(),
                "seq": core.hub.seq(),
                "complete": outcome.complete,
            });
            if let Some(next) = outcome.next_since {
                head["next_since"] = next.into();
            }
            let head = head.to_string();
            // Splice the already-serialized frames in instead of re-parsing them.
            let head = head.strip_suffix('}').unwrap_or(&head);
            let body = format!("{head},\"commands\":[{}]}}", frames.join(","));
            Ok(json_response(200, &body)?)
        })
    }

    /// `GET .../state`: the retained commands as `command` frames
    /// (`retained: true`), in seq order, beside the character's place.
    fn state_answer(&self, now: u64) -> AppResult<Response> {
        self.with_core(now, |core| {
            let hub = &core.hub;
            let frames: Vec<String> = hub
                .retained()
                .rows()
                .into_iter()
                .map(|r| hub.retained_frame_of(r))
                .collect();
            // The frames are JSON already: placed as they are, not re-parsed.
            let body = format!(
                r#"{{"character":{},"epoch":{},"seq":{},"retained":[{}]}}"#,
                serde_json::Value::from(hub.character().as_str()),
                serde_json::Value::from(hub.epoch()),
                hub.seq(),
                frames.join(",")
            );
            Ok(json_response(200, &body)?)
        })
    }

    /// The retained set for a relay's copy: its rows, revision, and this
    /// object's place when they were read.
    fn retained_snapshot(&self, now: u64) -> AppResult<Response> {
        self.with_core(now, |core| {
            let hub = &core.hub;
            let answer = RetainedAnswer {
                epoch: hub.epoch().to_string(),
                seq: hub.seq(),
                rev: hub.retained().rev().unwrap_or(0),
                rows: rows_value(hub.retained().rows()),
            };
            let body = serde_json::to_string(&answer).map_err(AppError::internal)?;
            Ok(json_response(200, &body)?)
        })
    }

    /// `DELETE .../retained/{topic}`: stored first (the row and the new
    /// revision, so relays and scenes holding a copy fetch it again), then
    /// the hub forgets it. `200 {"character","topic","cleared"}` whether or
    /// not one was held.
    fn clear_retained(&self, now: u64, topic: &str) -> AppResult<Response> {
        let topic = Topic::parse(topic).map_err(routing::protocol::ApiError::from)?;
        self.with_core(now, |core| {
            let held = core.hub.retained().contains(&topic);
            let rev = core.hub.retained().next_rev();
            if held {
                core.store.clear_retained(topic.as_str(), rev)?;
            }
            let cleared = match core
                .feed(
                    now,
                    Input::ClearRetained {
                        topic: topic.clone(),
                        rev,
                    },
                )
                .first()
            {
                Some(Reply::Cleared { cleared }) => *cleared,
                _ => false,
            };
            let body = serde_json::json!({
                "character": core.hub.character().as_str(),
                "topic": topic.as_str(),
                "cleared": cleared,
            });
            Ok(json_response(200, &body.to_string())?)
        })
    }

    /// A reader of the commands after `since` that match `filters`.
    /// The reader of a resume: bounded by `RESUME_LIMIT` commands and
    /// `RESUME_MAX_PAGES` archive pages.
    pub(super) fn resume_reader(
        &self,
        now: u64,
        since: u64,
        client_epoch: Option<String>,
        filters: &[TopicFilter],
    ) -> AppResult<Reader> {
        let limit = self.with_core(now, |core| Ok(core.config.resume_limit))?;
        self.read(
            now,
            since,
            client_epoch,
            filters,
            usize::try_from(limit).unwrap_or(usize::MAX),
            RESUME_MAX_PAGES,
        )
    }

    pub(super) fn read(
        &self,
        now: u64,
        since: u64,
        client_epoch: Option<String>,
        filters: &[TopicFilter],
        limit: usize,
        max_pages: u64,
    ) -> AppResult<Reader> {
        self.with_core(now, |core| {
            Ok(Reader::new(ReadSpec {
                since,
                client_epoch,
                epoch: core.hub.epoch().to_string(),
                latest_seq: core.hub.seq(),
                archived_through: core.archived_through,
                page_size: core.page_size,
                limit,
                max_pages,
                filters: filters.to_vec(),
            }))
        })
    }

    /// Performs the reads `reader` asks for until it is done. SQLite reads
    /// are synchronous, so when this returns no await has passed since the
    /// last of them.
    pub(super) async fn drive(&self, now: u64, mut reader: Reader) -> AppResult<Reader> {
        loop {
            match reader.next() {
                Need::Done => return Ok(reader),
                Need::Rows { after, limit } => self.with_core(now, |core| {
                    let rows = core.store.after(after, limit)?;
                    reader.feed_rows(rows, core.archived_through);
                    Ok(())
                })?,
                Need::Pages { first, last } => {
                    let (character, epoch) = self.with_core(now, |core| {
                        Ok((core.hub.character().clone(), core.hub.epoch().to_string()))
                    })?;
                    let keys: Vec<(u64, String)> = (first..=last)
                        .map(|p| (p, page_key(&character, &epoch, p)))
                        .collect();
                    reader.feed_pages(kv::read_pages(&self.env, &keys).await);
                    // The archive may have moved rows out of SQLite meanwhile.
                    let mark = self.with_core(now, |core| Ok(core.archived_through))?;
                    reader.update_archived_through(mark);
                }
            }
        }
    }

    /// The admin listing: this object's sockets and every relay's and scene
    /// object's, each entry with `relay` (null here), and `relays`: how many
    /// relays hold sockets of the character.
    async fn subscriptions(&self, now: u64) -> AppResult<Response> {
        let (relayed, relays) = self.relay_listings(now).await?;
        let scene_sockets = relayed
            .iter()
            .filter(|s| {
                s["relay"]
                    .as_str()
                    .is_some_and(routing::scene::is_scene_name)
            })
            .count();
        self.with_core(now, |core| {
            let mut subscribers = own_entries(core);
            subscribers.extend(relayed);
            subscribers.sort_by_key(|s| s["connected_at"].as_u64().unwrap_or(0));
            let body = serde_json::json!({
                "character": core.hub.character().as_str(),
                "epoch": core.hub.epoch(),
                "seq": core.hub.seq(),
                "relays": relays,
                // Relays this object feeds now (an emptied one leaves at its
                // next answer), beside `relays`, those holding sockets.
                "relays_fed": match &core.role {
                    super::core::Role::Owner { relays } => relays.len(),
                    super::core::Role::Relay { .. } => 0,
                },
                // Scene objects this object feeds, and the sockets they
                // hold now (each listed in `subscribers` too).
                "scenes": match &core.role {
                    super::core::Role::Owner { relays } => relays.scenes.len(),
                    super::core::Role::Relay { .. } => 0,
                },
                "scene_sockets": scene_sockets,
                "subscribers": subscribers,
                "archive": {
                    "unarchived": unarchived(core.archived_through, core.hub.seq()),
                    "backlog_limit": core.backlog_limit,
                    "failures": core.archive.failures,
                    "retry_at": core.archive.retry_at,
                },
            });
            Ok(json_response(200, &body.to_string())?)
        })
    }

    /// The newest buffered event-log rows, for `GET /v1/admin/logs?character=`
    /// (which merges them with KV): the unflushed ones and the flushed ones
    /// still in their grace. The rows are already serialized events.
    fn log_tail(&self, now: u64, pairs: &[(String, String)]) -> AppResult<Response> {
        let query = parse_logs_query(pairs)?;
        self.with_core(now, |core| {
            // Nothing is held back from this read.
            core.write_staged();
            let rows = core.store.logs.tail(query.limit as u64)?;
            let body = format!(
                "{{\"events\":{}}}",
                batch_body(rows.iter().map(String::as_str))
            );
            Ok(json_response(200, &body)?)
        })
    }

    /// Closes every socket of `user` with 4003, here and on the relays (the
    /// router already recorded the revocation, so a reconnect is refused).
    async fn revoke(&self, now: u64, user: String) -> AppResult<Response> {
        let closed = self.revoke_here(now, user.clone())?;
        let relayed = self.revoke_on_relays(now, &user).await?;
        revoke_answer(closed + relayed)
    }

    fn revoke_here(&self, now: u64, user: String) -> AppResult<usize> {
        self.with_core(now, |core| {
            Ok(match core.feed(now, Input::Revoke { user }).first() {
                Some(Reply::Revoked { closed }) => *closed,
                _ => 0,
            })
        })
    }

    /// Closes a client's socket with 4010, here or on the relay that holds it.
    async fn kick(&self, now: u64, client_id: &str) -> AppResult<Response> {
        match self.kick_here(now, client_id) {
            Err(e) if e.api.code == ErrorCode::NotFound => {
                match self.kick_on_relays(now, client_id).await? {
                    Some(resp) => Ok(resp),
                    None => Err(e),
                }
            }
            other => other,
        }
    }

    fn kick_here(&self, now: u64, client_id: &str) -> AppResult<Response> {
        self.with_core(now, |core| {
            let client_id = client_id.to_string();
            match core
                .feed(
                    now,
                    Input::Kick {
                        client_id: client_id.clone(),
                    },
                )
                .first()
            {
                Some(Reply::Kicked) => Ok(json_response(200, r#"{"disconnected":true}"#)?),
                _ => Err(AppError::not_found(format!(
                    "no client {client_id:?} on this character"
                ))),
            }
        })
    }
}

/// This object's sockets as listing entries, oldest first; `relay` names
/// the relay holding them (null on the character's own object).
fn own_entries(core: &Core) -> Vec<serde_json::Value> {
    let relay = Character::listing_relay(core);
    let mut subscribers: Vec<(u64, serde_json::Value)> = core
        .hub
        .clients()
        .map(|(_, c)| {
            let entry = serde_json::json!({
                "client_id": c.client_id,
                "user": c.user,
                "topics": c.topics.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                "presence": c.presence,
                "connected_at": c.connected_at,
                "relay": relay,
            });
            (c.connected_at, entry)
        })
        .collect();
    subscribers.sort_by_key(|(at, _)| *at);
    subscribers.into_iter().map(|(_, s)| s).collect()
}

async fn revoke_user(req: &mut Request) -> AppResult<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        user: String,
    }
    let body: Body = req
        .json()
        .await
        .map_err(|e| AppError::internal(format!("revoke body: {e}")))?;
    Ok(body.user)
}

fn revoke_answer(closed: usize) -> AppResult<Response> {
    let answer = routing::wire::RevokeAnswer { closed };
    let body = serde_json::to_string(&answer).map_err(AppError::internal)?;
    Ok(json_response(200, &body)?)
}
