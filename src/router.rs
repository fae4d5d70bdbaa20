//! Requests to handlers. The route table (`routing::route`) names the
//! endpoint or refuses the request (404, 405, a bad name); this shell checks
//! credentials and rights, validates what else it can without state (query
//! values, body size, the upgrade header), then forwards to the character's
//! Durable Object by name.

use futures_util::future::join_all;
use routing::auth::{authorize, can_publish, token_expiry, Action, Principal};
use routing::events::LogEvent;
use routing::protocol::{parse_broadcast_body, Command, ErrorCode};
use routing::query::{parse_history_query, parse_logs_query, parse_subscribe_query};
use routing::route::{route, Route, RouteError};
use routing::settings::{cors_headers, preflight_headers, websocket_origin};
use routing::topic::CharacterId;
use wasm_bindgen::JsCast;
use worker::worker_sys::web_sys;
use worker::{Context, Env, Headers, Method, Response, Result};

use crate::auth::Auth;
use crate::character::now_ms;
use crate::config::Config;
use crate::error::{json_response, AppError};
use crate::forward::{
    bytes_value, declared_length, get_from_object, object_url, post_to_object, read_body,
    read_measured, stub, upgrade_to_object, Incoming,
};
use crate::guard;
use crate::{kv, registry};
use routing::tally::{route_label, Failure};
use routing::wire::{path as object_path, PublishAnswer, SubscribeFacts};

type Handled = std::result::Result<Response, AppError>;

pub async fn handle(req: web_sys::Request, env: Env, ctx: Context) -> Result<Response> {
    let settings = match Auth::cached(&env) {
        Ok(settings) => settings,
        Err(e) => {
            // Never guess a setting that decides who gets in: refuse, and
            // say in the log which one is wrong.
            worker::console_error!("{e}; every request is refused until it is fixed");
            return AppError::new(
                ErrorCode::Internal,
                "the gateway is misconfigured; its log names the setting",
            )
            .into_response();
        }
    };
    let req = Incoming::new(req);
    // Only read when an origin list is set.
    let origin = match settings.cors.is_some() || settings.socket_origins.is_some() {
        true => req.headers().get("origin")?,
        false => None,
    };
    let path = req.path.clone();
    let method = req.method.clone();
    let routed = route(&req.method, &req.path);
    let admin_route = routed.as_ref().ok().filter(|r| r.is_admin()).cloned();
    let label = route_label(routed.as_ref().ok());
    // Read only if authentication fails (a header read is a call into the runtime).
    let headers = req.headers();
    let now = now_ms();
    let result = dispatch(req, routed, &env, &settings, origin.as_deref()).await;
    // Auth failures (tallied, and limited per address) and admin actions go
    // to the event log after the answer.
    let (result, events) = match result {
        Err(e) if matches!(e.api.code, ErrorCode::Unauthorized | ErrorCode::Forbidden) => {
            let mut sample = LogEvent::new(now, "auth_failure", None);
            sample.detail = Some(serde_json::json!({
                "method": method.to_string(), "path": path, "status": e.api.status(), "message": e.api.message,
            }));
            let failure = Failure {
                route: label.to_string(),
                status: e.api.status(),
                reason: e.api.message.clone(),
            };
            let address = guard::client_address(&headers);
            let (e, events) =
                guard::failed_auth(&env, address.as_deref(), now, failure, sample, e).await;
            (Err(e), events)
        }
        Ok(resp) => match &admin_route {
            Some(admin) => {
                let target = admin.character().map(CharacterId::as_str);
                let mut ev = LogEvent::new(now, "admin", target);
                ev.detail = Some(serde_json::json!({
                    "method": method.to_string(), "path": path, "status": resp.status_code(),
                }));
                (Ok(resp), vec![ev])
            }
            None => (Ok(resp), Vec::new()),
        },
        other => (other, Vec::new()),
    };
    if !events.is_empty() {
        let ttl = Config::cached(&env).log_ttl_seconds;
        let character = events[0].character.clone();
        ctx.wait_until(async move {
            if let Err(e) = kv::write_logs(&env, character.as_deref(), &events, ttl).await {
                worker::console_error!("writing an event log: {e}");
            }
        });
    }
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => e.into_response()?,
    };
    with_cors(resp, &settings, origin.as_deref())
}

/// The answer with the CORS headers its caller's origin gets (none unless
/// `CORS_ORIGINS` allows it). Answers from an object have immutable headers,
/// so the headers are copied; a WebSocket's 101 is left as it is.
fn with_cors(resp: Response, settings: &Auth, origin: Option<&str>) -> Result<Response> {
    let cors = cors_headers(settings.cors.as_ref(), origin);
    if cors.is_empty() || resp.status_code() == 101 {
        return Ok(resp);
    }
    let headers = Headers::new();
    for (k, v) in resp.headers().entries() {
        headers.set(&k, &v)?;
    }
    for (k, v) in cors {
        headers.set(k, &v)?;
    }
    Ok(resp.with_headers(headers))
}

fn check(
    p: &Principal,
    action: Action,
    c: Option<&CharacterId>,
) -> std::result::Result<(), AppError> {
    Ok(authorize(p, action, c)?)
}

/// The caller's principal, from its headers and (subscribe only) `?token=`.
async fn principal(
    req: &Incoming,
    env: &Env,
    settings: &Auth,
    token: Option<&str>,
) -> std::result::Result<Principal, AppError> {
    let p = settings.principal(&req.headers(), token)?;
    // A user whose rights were withdrawn (admin revocations) is refused.
    if let Principal::Token(claims) = &p {
        crate::revoke::check_user(env, &claims.sub, now_ms()).await?;
    }
    Ok(p)
}

/// The caller's principal, if it may do `action` (on `character`).
async fn authorized(
    req: &Incoming,
    env: &Env,
    settings: &Auth,
    action: Action,
    character: Option<&CharacterId>,
) -> std::result::Result<Principal, AppError> {
    let p = principal(req, env, settings, None).await?;
    check(&p, action, character)?;
    Ok(p)
}

/// Runs the route's handler after the caller's credentials and rights were
/// checked. A route error is answered as it is, except under `/v1/admin`,
/// where credentials are checked first.
async fn dispatch(
    req: Incoming,
    routed: std::result::Result<Route, RouteError>,
    env: &Env,
    settings: &Auth,
    origin: Option<&str>,
) -> Handled {
    let route = match routed {
        Ok(route) => route,
        Err(e) => {
            if e.admin {
                principal(&req, env, settings, None).await?;
            }
            return Err(e.into());
        }
    };
    match route {
        Route::Health => Ok(json_response(200, r#"{"status":"ok"}"#)?),
        // The Worker's own clock: no object is woken, no credentials asked.
        Route::Time => Ok(json_response(200, &routing::schedule::time_body(now_ms()))?),
        Route::Preflight(allow) => {
            let headers = Headers::new();
            let cors = settings.cors.as_ref();
            for (k, v) in preflight_headers(cors, origin, allow, &settings.api_key_header) {
                headers.set(k, &v)?;
            }
            Ok(Response::empty()?.with_status(204).with_headers(headers))
        }
        Route::Subscribe(character) => {
            // A browser page from another site is refused before anything else.
            websocket_origin(settings.socket_origins.as_ref(), origin)?;
            let token = req.query_pairs().into_iter().find(|(k, _)| k == "token");
            let p = principal(&req, env, settings, token.as_ref().map(|(_, v)| v.as_str())).await?;
            check(&p, Action::Subscribe, Some(&character))?;
            subscribe(req, env, &character, &p).await
        }
        Route::SceneSubscribe => {
            websocket_origin(settings.socket_origins.as_ref(), origin)?;
            let token = req.query_pairs().into_iter().find(|(k, _)| k == "token");
            let p = principal(&req, env, settings, token.as_ref().map(|(_, v)| v.as_str())).await?;
            scene_subscribe(req, env, &p).await
        }
        Route::Publish(character) => {
            let p = authorized(&req, env, settings, Action::Publish, Some(&character)).await?;
            guard::publish_allowed(env, &p).await?;
            publish(req, env, &character).await
        }
        Route::Say(character) => {
            let p = authorized(&req, env, settings, Action::Publish, Some(&character)).await?;
            guard::publish_allowed(env, &p).await?;
            say(req, env, &character).await
        }
        Route::History(character) => {
            authorized(&req, env, settings, Action::History, Some(&character)).await?;
            history(&req, env, &character).await
        }
        Route::State(character) => {
            authorized(&req, env, settings, Action::History, Some(&character)).await?;
            let forwarded =
                get_from_object(object_path::STATE, &req, Method::Get, Some(&character))?;
            Ok(stub(env, &character)?.fetch_with_request(forwarded).await?)
        }
        Route::ClearRetained { character, topic } => {
            let p = authorized(&req, env, settings, Action::Publish, Some(&character)).await?;
            guard::publish_allowed(env, &p).await?;
            let path = format!("{}{}", object_path::RETAINED_PREFIX, topic.as_str());
            let forwarded = get_from_object(&path, &req, Method::Delete, Some(&character))?;
            Ok(stub(env, &character)?.fetch_with_request(forwarded).await?)
        }
        Route::Broadcast => {
            // The role first, before any of the body is read; the rights on
            // each character need the body's list.
            let p = authorized(&req, env, settings, Action::Publish, None).await?;
            guard::publish_allowed(env, &p).await?;
            broadcast(req, env, &p).await
        }
        Route::AdminSubscriptions => {
            authorized(&req, env, settings, Action::Admin, None).await?;
            let forwarded = get_from_object(object_path::LIST, &req, Method::Get, None)?;
            Ok(registry::stub(env)?.fetch_with_request(forwarded).await?)
        }
        Route::AdminCharacterSubscriptions(character) => {
            authorized(&req, env, settings, Action::Admin, Some(&character)).await?;
            let forwarded = get_from_object(
                object_path::SUBSCRIPTIONS,
                &req,
                Method::Get,
                Some(&character),
            )?;
            Ok(stub(env, &character)?.fetch_with_request(forwarded).await?)
        }
        Route::AdminKick {
            character,
            client_id,
        } => {
            authorized(&req, env, settings, Action::Admin, Some(&character)).await?;
            let path = format!("{}{}", object_path::KICK_PREFIX, client_id?.as_str());
            let forwarded = get_from_object(&path, &req, Method::Delete, Some(&character))?;
            Ok(stub(env, &character)?.fetch_with_request(forwarded).await?)
        }
        Route::AdminRevoke => {
            authorized(&req, env, settings, Action::Admin, None).await?;
            let body = read_body(&req).await?;
            crate::revoke::revoke(env, &body, now_ms()).await
        }
        Route::AdminLogs => {
            let p = principal(&req, env, settings, None).await?;
            let query = parse_logs_query(&req.query_pairs())?;
            check(&p, Action::Admin, query.character.as_ref())?;
            let events = crate::logs::read(env, &req, &query).await?;
            let body = serde_json::json!({ "events": events }).to_string();
            Ok(json_response(200, &body)?)
        }
    }
}

async fn subscribe(
    req: Incoming,
    env: &Env,
    character: &CharacterId,
    principal: &Principal,
) -> Handled {
    // Validated here so that a bad request never opens a socket.
    parse_subscribe_query(&req.query_pairs())?;
    require_upgrade(&req)?;
    let facts = subscribe_facts(principal, can_publish(principal, character));
    let url = object_url(object_path::SUBSCRIBE, &req);
    upgrade_to_object(env, character, &url, &facts.headers()).await
}

/// A subscribe must be a WebSocket upgrade (426 otherwise).
fn require_upgrade(req: &Incoming) -> std::result::Result<(), AppError> {
    let upgrade = req.headers().get("upgrade")?.unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(AppError::new(
            ErrorCode::UpgradeRequired,
            "subscribe needs a WebSocket upgrade (Upgrade: websocket)",
        ));
    }
    Ok(())
}

/// What the object must know of a subscriber's principal.
fn subscribe_facts(principal: &Principal, can_publish: bool) -> SubscribeFacts {
    SubscribeFacts {
        user: match principal {
            Principal::Token(claims) => Some(claims.sub.clone()),
            _ => None,
        },
        can_publish,
        expires_ms: token_expiry(principal).map(|exp| exp.saturating_mul(1000)),
    }
}

/// A scene socket (`GET /v1/subscribe?characters=`): the query is checked
/// (400), then the caller's rights on every character (403), then the
/// upgrade; the socket may publish only when the caller may publish to
/// every character. Forwarded to the scene's object.
async fn scene_subscribe(req: Incoming, env: &Env, principal: &Principal) -> Handled {
    let query = routing::scene::parse_scene_query(&req.query_pairs())?;
    for c in &query.characters {
        check(principal, Action::Subscribe, Some(c))?;
    }
    require_upgrade(&req)?;
    let can = query.characters.iter().all(|c| can_publish(principal, c));
    let facts = subscribe_facts(principal, can);
    let name = routing::scene::scene_name(&query.characters);
    let url = object_url(object_path::SUBSCRIBE, &req);
    crate::forward::upgrade_to_scene(env, &name, &url, &facts.headers()).await
}

/// The body goes to the object as the runtime's stream, without a copy into
/// this Worker; the object enforces the size limit again as it reads.
async fn publish(req: Incoming, env: &Env, character: &CharacterId) -> Handled {
    if declared_length(&req)?.is_none() {
        // No declared length: read it here with a running count, so an
        // oversized body is refused (as soon as it passes the bound) before
        // it reaches the object.
        let body = read_measured(&req).await?;
        return post_to_object(env, character, object_path::PUBLISH, bytes_value(&body)).await;
    }
    let body = match req.raw.body() {
        Some(stream) => stream.unchecked_into::<wasm_bindgen::JsValue>(),
        None => bytes_value(&[]),
    };
    post_to_object(env, character, object_path::PUBLISH, body).await
}

/// Derives commands from text, publishes them, and answers like `commands`
/// plus the derived commands.
async fn say(req: Incoming, env: &Env, character: &CharacterId) -> Handled {
    let body = read_body(&req).await?;
    let commands = crate::say::derive(env, &body, now_ms())?;
    let derived: Vec<serde_json::Value> = commands.iter().map(command_json).collect();
    let forward = serde_json::json!({ "commands": derived }).to_string();
    let mut resp = post_to_object(
        env,
        character,
        object_path::PUBLISH,
        bytes_value(forward.as_bytes()),
    )
    .await?;
    if resp.status_code() != 200 {
        return Ok(resp);
    }
    let mut answer: serde_json::Value = resp.json().await?;
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("commands".to_string(), serde_json::Value::Array(derived));
    }
    Ok(json_response(200, &answer.to_string())?)
}

async fn history(req: &Incoming, env: &Env, character: &CharacterId) -> Handled {
    parse_history_query(&req.query_pairs())?;
    let forwarded = get_from_object(object_path::HISTORY, req, Method::Get, Some(character))?;
    Ok(stub(env, character)?.fetch_with_request(forwarded).await?)
}

fn command_json(cmd: &Command) -> serde_json::Value {
    serde_json::json!({
        "topic": cmd.topic.as_str(),
        "name": cmd.name.as_str(),
        "params": cmd.params,
        "duration_ms": cmd.duration_ms,
        "id": cmd.id,
        "at": cmd.at,
        "retain": cmd.retain,
    })
}

/// Publishes one command to many characters, all objects at once.
async fn broadcast(req: Incoming, env: &Env, principal: &Principal) -> Handled {
    let body = read_body(&req).await?;
    let (characters, command) = parse_broadcast_body(&body)?;
    // Checked here too, so a bad `at` is a 400 before any character is
    // published to (each object checks it again against its own clock).
    routing::schedule::check_commands(std::slice::from_ref(&command), now_ms())?;
    for c in &characters {
        check(principal, Action::Publish, Some(c))?;
    }
    let one = serde_json::json!({ "commands": [command_json(&command)] }).to_string();
    let calls = characters.iter().map(|c| async {
        let mut resp = post_to_object(env, c, object_path::PUBLISH, bytes_value(one.as_bytes())).await?;
        if resp.status_code() == 413 {
            // The character retains its maximum of topics: no retry helps.
            return Err(AppError::from(routing::protocol::ApiError::payload_too_large(format!(
                "{} retains commands for its maximum of topics; clear one first", c.as_str()
            ))));
        }
        if resp.status_code() != 200 {
            return Err(AppError::internal(format!("broadcast to {}: status {}", c.as_str(), resp.status_code())));
        }
        let answer: PublishAnswer = resp.json().await?;
        let seq = answer.seqs.first().copied().ok_or_else(|| AppError::internal("publish answer without seq"))?;
        Ok(serde_json::json!({ "character": c.as_str(), "seq": seq, "delivered": answer.delivered }))
    });
    let mut results = Vec::with_capacity(characters.len());
    let mut failed = 0usize;
    let mut refused = None;
    for r in join_all(calls).await {
        match r {
            Ok(v) => results.push(v),
            Err(e) if e.api.code == ErrorCode::PayloadTooLarge => refused = Some(e),
            Err(_) => failed += 1,
        }
    }
    if let Some(e) = refused {
        // Published to the others; this one needs a clear before a retry.
        return Err(e);
    }
    if failed > 0 {
        // Each failure was logged with its cause; a retry with the same `id`
        // publishes exactly once where the first attempt already succeeded.
        return Err(AppError::new(
            ErrorCode::Internal,
            format!(
                "broadcast failed for {failed} of {} characters; retry with the same id",
                characters.len()
            ),
        ));
    }
    Ok(json_response(
        200,
        &serde_json::json!({ "results": results }).to_string(),
    )?)
}
