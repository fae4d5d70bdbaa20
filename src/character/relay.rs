//! The relay role of the character object (`<character>~r<n>`, see
//! `routing::relays`): it holds sockets the character's own object placed
//! here and delivers what that object stored, through the same hub. Its
//! place in the stream (`routing::relay::Follower`: epoch, last applied
//! seq) is kept in its SQLite, so after eviction it knows where it is.
//! Resumes of its sockets replay from its ring of recent rows, or from the
//! owner's history read joined to the rows applied since. A client
//! `publish` frame on a relay-held socket is forwarded to the owner, and
//! answered with `published` (or an `error` frame) when the owner answers.

use routing::archive::rows_value;
use routing::hub::{ClientInfo, Input, Origin, Pending, Resume};
use routing::query::parse_subscribe_query;
use routing::relays::relay_id;
use routing::retained::RetainedSet;
use routing::wire::{
    path, FeedAnswer, FeedBody, ReplayAnswer, RetainedAnswer, SubscribeFacts, H_CHARACTER,
    H_RELAY_EPOCH, H_RELAY_RETAINED_REV, H_RELAY_SEQ,
};
use worker::{console_warn, Env, Request, Response, WebSocketPair};

use super::core::{Core, Role, Shared};
use super::relays::{named_stub, rows_of};
use super::{attachment, random_hex, AppResult, Character};
use crate::error::{json_response, AppError};
use crate::forward::post_to_name;

/// The meta key of the last seq a relay applied.
pub const RELAY_LAST: &str = "relay_last";

impl Core {
    /// Relay: whether sockets are held or being set up (then a gap in the
    /// stream must be filled, not skipped).
    fn holding(&self) -> bool {
        let pending = match &self.role {
            Role::Relay { pending, .. } => *pending,
            Role::Owner { .. } => 0,
        };
        self.hub.subscriber_count() + pending > 0
    }

    /// Relay: the stream restarts at `seq` in `epoch` (sockets held are
    /// closed with 1011 and resume); remembered in SQLite.
    fn resync(&mut self, now: u64, epoch: String, seq: u64) -> AppResult<()> {
        if self.hub.epoch() != epoch {
            self.store.set_meta("epoch", &epoch)?;
        }
        self.store.set_meta(RELAY_LAST, &seq.to_string())?;
        self.feed(now, Input::Resync { epoch, seq });
        Ok(())
    }

    /// Relay: the owner's retained snapshot becomes this relay's copy,
    /// brought to the place this relay delivers from
    /// (`routing::retained::RetainedSet::adopt`). A snapshot of another
    /// epoch, or one the ring cannot bring up to date, is not taken (false):
    /// the copy stays unknown and the next subscribe fetches again.
    fn adopt_retained(&mut self, answer: RetainedAnswer) -> AppResult<bool> {
        if answer.epoch != self.hub.epoch() {
            console_warn!("retained snapshot of another epoch; not taken");
            return Ok(false);
        }
        let rows = rows_of(answer.rows)?;
        let last = self.hub.seq();
        let applied = match &self.role {
            Role::Relay { follower, .. } => follower.applied_after(answer.seq),
            Role::Owner { .. } => return Err(AppError::internal("not a relay")),
        };
        let mut set = RetainedSet::unknown();
        let adopted = set.adopt(rows, answer.seq, answer.rev, last, applied.as_deref());
        if adopted {
            self.hub.set_retained(set);
        } else {
            console_warn!("retained snapshot older than the relay's ring; not taken");
        }
        Ok(adopted)
    }

    fn set_pending(&mut self, delta: isize) {
        if let Role::Relay { pending, .. } = &mut self.role {
            *pending = pending.saturating_add_signed(delta);
        }
    }
}

impl Character {
    /// Relay: a subscribe the owner forwarded, with the owner's epoch and
    /// seq; answered with the 101 the owner passes on.
    pub(super) async fn relay_subscribe(
        &self,
        now: u64,
        req: &Request,
        pairs: &[(String, String)],
        facts: SubscribeFacts,
    ) -> AppResult<Response> {
        let query = parse_subscribe_query(pairs)?;
        let headers = req.headers();
        let epoch = headers
            .get(H_RELAY_EPOCH)?
            .ok_or_else(|| AppError::internal("a relay subscribe without the epoch"))?;
        let seq: u64 = headers
            .get(H_RELAY_SEQ)?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let retained_rev: Option<u64> = headers
            .get(H_RELAY_RETAINED_REV)?
            .and_then(|v| v.parse().ok());
        self.with_core(now, |core| {
            core.admit()?;
            let holding = core.holding();
            let restart = match &mut core.role {
                Role::Relay { follower, .. } => follower.subscribe(&epoch, seq, holding),
                Role::Owner { .. } => return Err(AppError::internal("not a relay")),
            };
            if let Some((epoch, seq)) = restart {
                core.resync(now, epoch, seq)?;
            }
            core.set_pending(1);
            Ok(())
        })?;
        let raw = req.inner().url();
        let query_string = raw
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or("")
            .to_string();
        let result = self
            .relay_accept(now, &query, &query_string, facts, retained_rev)
            .await;
        // The same turn as the accept: no await since.
        self.with_core(now, |core| {
            core.set_pending(-1);
            Ok(())
        })?;
        result
    }

    async fn relay_accept(
        &self,
        now: u64,
        query: &routing::query::SubscribeQuery,
        query_string: &str,
        facts: SubscribeFacts,
        retained_rev: Option<u64>,
    ) -> AppResult<Response> {
        let info = ClientInfo {
            client_id: random_hex(4),
            user: facts.user,
            topics: query.topics.clone(),
            presence: query.presence,
            connected_at: now,
            can_publish: facts.can_publish,
        };
        let encoded = attachment::encode(&info, facts.expires_ms)?;
        if query.since.is_none() {
            self.ensure_retained(now, retained_rev).await?;
        }
        let resume = match query.since {
            None => None,
            Some(since) => {
                let (limit, from_ring, owner) = self.with_core(now, |core| {
                    let limit = usize::try_from(core.config.resume_limit).unwrap_or(usize::MAX);
                    let owner = core.hub.character().as_str().to_string();
                    match &core.role {
                        Role::Relay { follower, .. } => Ok((
                            limit,
                            follower.replay(since, query.epoch.as_deref(), &query.topics, limit),
                            owner,
                        )),
                        Role::Owner { .. } => Err(AppError::internal("not a relay")),
                    }
                })?;
                match from_ring {
                    Some(resume) => Some(resume),
                    None => {
                        let answer = self
                            .owner_read::<ReplayAnswer>(&owner, path::REPLAY, query_string)
                            .await?;
                        let resume = Resume {
                            since,
                            rows: rows_of(answer.rows)?,
                            complete: answer.complete,
                            next_since: answer.next_since,
                        };
                        Some(self.with_core(now, |core| match &core.role {
                            Role::Relay { follower, .. } => {
                                Ok(follower.extend(resume, answer.covered, &query.topics, limit))
                            }
                            Role::Owner { .. } => Err(AppError::internal("not a relay")),
                        })?)
                    }
                }
            }
        };
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

    /// Relay: a socket without `since` is served the retained commands from
    /// this relay's copy, so a copy of another revision than the owner's
    /// `rev` (or none yet) is replaced by the owner's snapshot first. Once
    /// taken, the rows the relay applies keep it current, whatever turn the
    /// socket joins in. A snapshot older than the ring can bring up to date
    /// (the relay was fed meanwhile) is read once more.
    async fn ensure_retained(&self, now: u64, rev: Option<u64>) -> AppResult<()> {
        for _ in 0..2 {
            let (current, owner) = self.with_core(now, |core| {
                let held = core.hub.retained().rev();
                let owner = core.hub.character().as_str().to_string();
                Ok((held.is_some() && held == rev, owner))
            })?;
            if current {
                return Ok(());
            }
            let answer = self
                .owner_read::<RetainedAnswer>(&owner, path::RELAY_RETAINED, "")
                .await?;
            if self.with_core(now, |core| core.adopt_retained(answer))? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// A read of the owner's for a socket of this relay: its resume read
    /// (`path::REPLAY`) or its retained snapshot (`path::RELAY_RETAINED`).
    async fn owner_read<T: serde::de::DeserializeOwned>(
        &self,
        owner: &str,
        at: &str,
        query: &str,
    ) -> AppResult<T> {
        let req = Request::new(
            &format!("https://character{at}?{query}"),
            worker::Method::Get,
        )?;
        req.headers().set(H_CHARACTER, owner)?;
        let mut resp = named_stub(&self.env, owner)?
            .fetch_with_request(req)
            .await?;
        if resp.status_code() != 200 {
            return Err(AppError::internal(format!(
                "the character's read {at} answered {}",
                resp.status_code()
            )));
        }
        Ok(resp.json::<T>().await?)
    }

    /// Relay: rows from the owner. Applied in order once each (duplicates
    /// skipped); the answer says where the relay is and how many sockets
    /// it holds.
    pub(super) async fn relay_feed(&self, now: u64, req: &mut Request) -> AppResult<Response> {
        let body: FeedBody = req
            .json()
            .await
            .map_err(|e| AppError::internal(format!("feed body: {e}")))?;
        let rows = rows_of(body.rows)?;
        self.with_core(now, |core| {
            let holding = core.holding();
            let before = core.hub.seq();
            let plan = match &mut core.role {
                Role::Relay { follower, .. } => {
                    follower.feed(&body.epoch, body.after, body.lost, rows, holding)
                }
                Role::Owner { .. } => return Err(AppError::internal("not a relay")),
            };
            if let Some((epoch, seq)) = plan.resync {
                core.resync(now, epoch, seq)?;
            }
            if !plan.apply.is_empty() {
                core.feed(now, Input::Relayed { rows: plan.apply });
            }
            let last = core.hub.seq();
            if last != before {
                core.store.set_meta(RELAY_LAST, &last.to_string())?;
            }
            let answer = FeedAnswer {
                last,
                sockets: core.hub.subscriber_count(),
                presence: false,
            };
            let body = serde_json::to_string(&answer).map_err(AppError::internal)?;
            Ok(json_response(200, &body)?)
        })
    }

    /// The relay's id in listings, `None` for the character's own object.
    pub(super) fn listing_relay(core: &Core) -> Option<String> {
        match &core.role {
            Role::Relay { index, .. } => Some(relay_id(*index)),
            Role::Owner { .. } => None,
        }
    }
}

/// Relay: a client's publish frame, sent on to the owner; the client gets
/// `published` with the owner's seq, or an `error` frame.
pub fn forward_publish(shared: Shared, env: Env, pending: Pending) {
    wasm_bindgen_futures::spawn_local(async move {
        let Origin::Client { client, r#ref } = pending.origin.clone() else {
            return;
        };
        let owner = match shared.borrow().as_ref() {
            Some(core) => core.hub.character().as_str().to_string(),
            None => return,
        };
        let body = serde_json::json!({ "commands": rows_value(&pending.rows) }).to_string();
        let sent = post_to_name(
            &env,
            &owner,
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
