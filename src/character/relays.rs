//! The character's own object and its relays (`routing::relays` decides):
//! placing a subscriber on a relay by forwarding its upgrade and returning
//! the relay's 101, feeding each relay the stored rows (one request in
//! flight per relay, later rows coalesced into the next), the resume reads
//! relays ask for, and the admin listing, kicks and revocations that reach
//! relay-held sockets.

use std::rc::Rc;

use futures_util::future::join_all;
use routing::archive::{decode_rows, rows_value};
use routing::catalogue::MAX_FEED_ROWS;
use routing::query::parse_subscribe_query;
use routing::reader::ReadOutcome;
use routing::relays::{relay_name, Placement};
use routing::wire::{
    path, FeedAnswer, FeedBody, ReplayAnswer, H_CHARACTER, H_RELAY_EPOCH, H_RELAY_RETAINED_REV,
    H_RELAY_SEQ,
};
use worker::{console_error, Env, Headers, Method, Request, RequestInit, Response, Stub};

use super::core::{Role, Shared, CHARACTER_FULL_RETRY_SECS};
use super::{AppResult, Character};
use crate::error::{json_response, AppError};
use crate::forward::post_to_name;

/// Most relays one subscribe is offered to (a relay full by then counts as
/// full, and the next is tried).
const PLACE_ATTEMPTS: usize = 3;
/// Most feed requests one run of a relay's feed task makes; a relay that
/// is still behind is fed again by the next publish or wake.
pub(super) const FEED_ROUNDS: usize = 64;

/// A stub of the object named `name` (a character or one of its relays).
pub fn named_stub(env: &Env, name: &str) -> AppResult<Stub> {
    Ok(env.durable_object("CHARACTERS")?.get_by_name(name)?)
}

fn bad(e: impl std::fmt::Display) -> AppError {
    AppError::internal(e.to_string())
}

impl Character {
    /// Owner: where a new subscriber goes. `Ok(None)`: this object takes it;
    /// `Ok(Some(101))`: a relay did; `character_full` when everything is.
    pub(super) async fn place_on_relay(
        &self,
        now: u64,
        req: &Request,
        presence: bool,
    ) -> AppResult<Option<Response>> {
        for _ in 0..PLACE_ATTEMPTS {
            let placed = self.with_core(now, |core| {
                let owner_sockets = core.hub.subscriber_count();
                let max = core.config.max_subscribers;
                let Role::Owner { relays } = &mut core.role else {
                    return Ok(None);
                };
                match relays.place(owner_sockets, presence, max) {
                    Placement::Owner => Ok(None),
                    Placement::Full => {
                        Err(AppError::character_full(max, CHARACTER_FULL_RETRY_SECS))
                    }
                    Placement::Relay(index) => {
                        if relays.placing(index) {
                            core.store.add_relay(index, 0)?;
                        }
                        let name = relay_name(core.hub.character(), index);
                        Ok(Some((
                            index,
                            name,
                            core.hub.epoch().to_string(),
                            core.hub.seq(),
                            core.hub.retained().rev().unwrap_or(0),
                        )))
                    }
                }
            })?;
            let Some((index, name, epoch, seq, rev)) = placed else {
                return Ok(None);
            };
            let answer = self.forward_subscribe(req, &name, &epoch, seq, rev).await;
            let status = answer.as_ref().map(|r| r.status_code()).unwrap_or(0);
            self.with_core(now, |core| {
                let Role::Owner { relays } = &mut core.role else {
                    return Ok(());
                };
                if relays.placed(index, status == 101, status == 503, None, None) {
                    core.store.drop_relay(index)?;
                }
                Ok(())
            })?;
            match answer {
                Ok(resp) if status == 503 => drop(resp),
                Ok(resp) => return Ok(Some(resp)),
                Err(e) => return Err(e),
            }
        }
        let max = self.with_core(now, |core| Ok(core.config.max_subscribers))?;
        Err(AppError::character_full(max, CHARACTER_FULL_RETRY_SECS))
    }

    /// The client's upgrade, forwarded to relay `name` with the stream's
    /// epoch and latest seq, and the retained set's revision.
    async fn forward_subscribe(
        &self,
        req: &Request,
        name: &str,
        epoch: &str,
        seq: u64,
        retained_rev: u64,
    ) -> AppResult<Response> {
        let headers = Headers::new();
        for (k, v) in req.headers().entries() {
            headers.set(&k, &v)?;
        }
        headers.set(H_CHARACTER, name)?;
        headers.set(H_RELAY_EPOCH, epoch)?;
        headers.set(H_RELAY_SEQ, &seq.to_string())?;
        headers.set(H_RELAY_RETAINED_REV, &retained_rev.to_string())?;
        let raw = req.inner().url();
        let query = raw.split_once('?').map(|(_, q)| q).unwrap_or("");
        let url = format!("https://relay{}?{query}", path::SUBSCRIBE);
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        let forwarded = Request::new_with_init(&url, &init)?;
        Ok(named_stub(&self.env, name)?
            .fetch_with_request(forwarded)
            .await?)
    }

    /// Owner: the resume read of a relay-held socket, bounded like any
    /// resume; `covered` is this object's seq in the turn of the last read.
    pub(super) async fn replay_for_relay(
        &self,
        now: u64,
        pairs: &[(String, String)],
    ) -> AppResult<Response> {
        let query = parse_subscribe_query(pairs)?;
        let since = query.since.unwrap_or(0);
        let reader = self.resume_reader(now, since, query.epoch.clone(), &query.topics)?;
        let reader = self.drive(now, reader).await?;
        let covered = self.with_core(now, |core| Ok(core.hub.seq()))?;
        let ReadOutcome {
            rows,
            complete,
            next_since,
        } = reader.finish();
        let answer = ReplayAnswer {
            rows: rows_value(&rows),
            complete,
            next_since,
            covered,
        };
        let body = serde_json::to_string(&answer).map_err(bad)?;
        Ok(json_response(200, &body)?)
    }

    /// Owner: the listing entries of every relay and scene object that
    /// holds its sockets, each marked (by the holder) with its id in
    /// `relay`; each relay's count is updated from what it listed (an empty
    /// relay leaves the set). Also how many relays hold sockets.
    pub(super) async fn relay_listings(
        &self,
        now: u64,
    ) -> AppResult<(Vec<serde_json::Value>, usize)> {
        let holders = self.holders(now)?;
        let calls = holders.iter().map(|h| async move {
            let mut resp = self
                .to_holder(h, path::SUBSCRIPTIONS, Method::Get, None)
                .await?;
            let body: serde_json::Value = resp.json().await?;
            AppResult::Ok(body)
        });
        let answers = join_all(calls).await;
        let mut entries = Vec::new();
        let mut serving = 0;
        self.with_core(now, |core| {
            for (h, answer) in holders.iter().zip(answers) {
                let list = match answer {
                    Ok(body) => body["subscribers"].as_array().cloned().unwrap_or_default(),
                    Err(e) => {
                        console_error!("listing {}: {}", h.name, e.message());
                        continue;
                    }
                };
                if let (Some(i), Role::Owner { relays }) = (h.relay, &mut core.role) {
                    if !list.is_empty() {
                        serving += 1;
                    }
                    if relays.counted(i, list.len()) {
                        core.store.drop_relay(i)?;
                    }
                }
                entries.extend(list);
            }
            Ok(())
        })?;
        Ok((entries, serving))
    }

    /// Owner: a kick for a client none of its own sockets has, tried on
    /// each relay and scene object; the first that had it answers.
    pub(super) async fn kick_on_relays(
        &self,
        now: u64,
        client_id: &str,
    ) -> AppResult<Option<Response>> {
        let at = format!("{}{client_id}", path::KICK_PREFIX);
        for h in self.holders(now)? {
            let resp = self.to_holder(&h, &at, Method::Delete, None).await?;
            if resp.status_code() == 200 {
                return Ok(Some(resp));
            }
        }
        Ok(None)
    }

    /// Owner: a revocation passed on to every relay and scene object; the
    /// sockets they closed.
    pub(super) async fn revoke_on_relays(&self, now: u64, user: &str) -> AppResult<usize> {
        let holders = self.holders(now)?;
        let body = serde_json::json!({ "user": user }).to_string();
        let calls = holders.iter().map(|h| {
            let body = body.as_str();
            async move {
                let mut resp = self
                    .to_holder(h, path::REVOKE, Method::Post, Some(body))
                    .await?;
                let answer: routing::wire::RevokeAnswer = resp.json().await?;
                AppResult::Ok(answer.closed)
            }
        });
        let mut closed = 0;
        for answer in join_all(calls).await {
            match answer {
                Ok(n) => closed += n,
                Err(e) => console_error!("revoking on a relay or scene: {}", e.message()),
            }
        }
        Ok(closed)
    }

    /// Owner: the other objects holding sockets of this character, relays
    /// first, then the scene objects it feeds.
    fn holders(&self, now: u64) -> AppResult<Vec<Holder>> {
        self.with_core(now, |core| match &core.role {
            Role::Owner { relays } => {
                let character = core.hub.character();
                let mut out: Vec<Holder> = relays
                    .indices()
                    .into_iter()
                    .map(|i| Holder {
                        name: relay_name(character, i),
                        relay: Some(i),
                    })
                    .collect();
                for slot in relays.scenes.slots() {
                    if let Some(feed) = relays.scenes.get(slot) {
                        out.push(Holder {
                            name: feed.name.clone(),
                            relay: None,
                        });
                    }
                }
                Ok(out)
            }
            Role::Relay { .. } => Ok(Vec::new()),
        })
    }

    async fn to_holder(
        &self,
        h: &Holder,
        at: &str,
        method: Method,
        body: Option<&str>,
    ) -> AppResult<Response> {
        let mut init = RequestInit::new();
        init.with_method(method);
        if let Some(body) = body {
            init.with_body(Some(wasm_bindgen::JsValue::from_str(body)));
        }
        let req = Request::new_with_init(&format!("https://holder{at}"), &init)?;
        req.headers().set(H_CHARACTER, &h.name)?;
        let stub = match h.relay {
            Some(_) => named_stub(&self.env, &h.name)?,
            None => self.env.durable_object("SCENES")?.get_by_name(&h.name)?,
        };
        Ok(stub.fetch_with_request(req).await?)
    }
}

/// An object other than the character's own that holds its sockets: a
/// relay (with its number) or a scene object (`relay: None`).
struct Holder {
    name: String,
    relay: Option<u32>,
}

/// Owner: brings relay `index` up to this object's seq, one request at a
/// time (the task scheduler runs one per relay): rows from the seq it last
/// acknowledged, or a probe without rows when that is unknown. Stops when it
/// is caught up, leaves the set, or a request fails (its place is unknown
/// then, and the next publish or wake probes it).
pub async fn feed(shared: &Shared, env: &Env, index: u32) -> worker::Result<()> {
    for _ in 0..FEED_ROUNDS {
        let next = {
            let mut guard = shared.borrow_mut();
            let Some(core) = guard.as_mut() else {
                return Ok(());
            };
            let Role::Owner { relays } = &core.role else {
                return Ok(());
            };
            let seq = core.hub.seq();
            match relays.feed_from(index, seq) {
                None => None,
                Some(after) => {
                    // Rows up to the archive mark are in KV only: the
                    // relay cannot be brought over that gap, it restarts.
                    let lost = after < core.archived_through;
                    let after = after.max(core.archived_through);
                    // Relays at the same place (the usual case after a
                    // publish) share one read and one body.
                    let key = (after, lost, seq);
                    let body = match &core.feed_cache {
                        Some((k, body)) if *k == key => Rc::clone(body),
                        _ => {
                            let rows = core.store.after(after, MAX_FEED_ROWS)?;
                            let body = FeedBody {
                                epoch: core.hub.epoch().to_string(),
                                after,
                                lost,
                                rows: rows_value(&rows),
                                character: None,
                                presence: Vec::new(),
                            };
                            let body: Rc<str> = serde_json::to_string(&body)
                                .map_err(|e| worker::Error::RustError(e.to_string()))?
                                .into();
                            core.feed_cache = Some((key, Rc::clone(&body)));
                            body
                        }
                    };
                    Some((relay_name(core.hub.character(), index), body))
                }
            }
        };
        let Some((name, body)) = next else {
            return Ok(());
        };
        let answer = post_to_name(
            env,
            &name,
            path::FEED,
            &wasm_bindgen::JsValue::from_str(&body),
        )
        .await;
        let answer = feed_answer(answer, "relay", &name).await;
        let mut guard = shared.borrow_mut();
        let Some(core) = guard.as_mut() else {
            return Ok(());
        };
        let Role::Owner { relays } = &mut core.role else {
            return Ok(());
        };
        match answer {
            Ok(FeedAnswer { last, sockets, .. }) => {
                if relays.answered(index, last, sockets) {
                    core.store.drop_relay(index)?;
                    return Ok(());
                }
            }
            Err(e) => {
                relays.failed(index);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Decodes the rows of a feed or replay answer.
pub fn rows_of(value: serde_json::Value) -> AppResult<Vec<routing::hub::StoredCommand>> {
    decode_rows(value).ok_or_else(|| AppError::internal("unreadable relay rows"))
}

/// A relay's or scene's answer to a feed request: its place and sockets,
/// or what went wrong (`kind` and `name` say which object, for the log).
pub(super) async fn feed_answer(
    answer: std::result::Result<Response, AppError>,
    kind: &str,
    name: &str,
) -> worker::Result<FeedAnswer> {
    match answer {
        Ok(mut resp) if resp.status_code() == 200 => resp.json::<FeedAnswer>().await,
        Ok(resp) => Err(worker::Error::RustError(format!(
            "{kind} {name} answered {}",
            resp.status_code()
        ))),
        Err(e) => Err(worker::Error::RustError(e.message().to_string())),
    }
}
