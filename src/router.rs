//! Paths to handlers. The router validates what it can without state (names,
//! query values, methods, body size, the upgrade header), then forwards to the
//! character's Durable Object by name. Unknown paths answer 404, known paths
//! with the wrong method 405, both with the contract's error body.

use futures_util::future::join_all;
use routing::protocol::{parse_broadcast_body, ApiError, Command, ErrorCode, MAX_BODY_BYTES};
use routing::query::{parse_history_query, parse_subscribe_query};
use routing::topic::CharacterId;
use serde::Deserialize;
use worker::{Env, Headers, Method, Request, RequestInit, Response, Result, Stub, Url};

use crate::character::{H_CAN_PUBLISH, H_CHARACTER, H_USER};
use crate::error::{json_response, AppError};

type Handled = std::result::Result<Response, AppError>;

pub async fn handle(req: Request, env: Env) -> Result<Response> {
    match route(req, env).await {
        Ok(resp) => Ok(resp),
        Err(e) => e.into_response(),
    }
}

fn allow(method: &Method, allowed: &[Method]) -> std::result::Result<(), AppError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        let names: Vec<String> = allowed.iter().map(|m| m.to_string()).collect();
        Err(AppError::method_not_allowed(&names.join(", ")))
    }
}

async fn route(req: Request, env: Env) -> Handled {
    let url = req.url()?;
    let path = url.path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method();
    match segments.as_slice() {
        ["healthz"] => {
            allow(&method, &[Method::Get, Method::Head])?;
            Ok(json_response(200, r#"{"status":"ok"}"#)?)
        }
        ["v1", "characters", name, action @ ("subscribe" | "commands" | "history")] => {
            let allowed = if *action == "commands" {
                Method::Post
            } else {
                Method::Get
            };
            allow(&method, &[allowed])?;
            let character = CharacterId::parse(&percent_decode(name)).map_err(ApiError::from)?;
            match *action {
                "subscribe" => subscribe(req, &url, &env, &character).await,
                "commands" => publish(req, &env, &character).await,
                _ => history(&url, &env, &character).await,
            }
        }
        ["v1", "broadcast"] => {
            allow(&method, &[Method::Post])?;
            broadcast(req, &env).await
        }
        _ => Err(AppError::not_found(format!("no route for {path}"))),
    }
}

/// Path segments arrive percent-encoded; names never need encoding to be
/// valid, but a client may encode them anyway.
fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_pairs(url: &Url) -> Vec<(String, String)> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn stub(env: &Env, character: &CharacterId) -> std::result::Result<Stub, AppError> {
    Ok(env
        .durable_object("CHARACTERS")?
        .get_by_name(character.as_str())?)
}

fn object_url(path: &str, url: &Url) -> String {
    match url.query() {
        Some(q) => format!("https://character{path}?{q}"),
        None => format!("https://character{path}"),
    }
}

async fn subscribe(req: Request, url: &Url, env: &Env, character: &CharacterId) -> Handled {
    // Validated here so that a bad request never opens a socket.
    parse_subscribe_query(&query_pairs(url))?;
    let upgrade = req.headers().get("upgrade")?.unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return Err(AppError::new(
            ErrorCode::UpgradeRequired,
            "subscribe needs a WebSocket upgrade (Upgrade: websocket)",
        ));
    }
    let headers = Headers::new();
    for (k, v) in req.headers().entries() {
        if !k.starts_with("x-gateway-") {
            headers.set(&k, &v)?;
        }
    }
    headers.set(H_CHARACTER, character.as_str())?;
    headers.set(H_CAN_PUBLISH, "true")?;
    headers.delete(H_USER)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let forwarded = Request::new_with_init(&object_url("/subscribe", url), &init)?;
    Ok(stub(env, character)?.fetch_with_request(forwarded).await?)
}

/// Reads a request body, refusing more than the contract's 64 KiB.
async fn read_body(mut req: Request) -> std::result::Result<Vec<u8>, AppError> {
    let too_large = || {
        AppError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is over {} bytes", MAX_BODY_BYTES),
        )
    };
    if let Some(len) = req.headers().get("content-length")? {
        if len
            .trim()
            .parse::<usize>()
            .is_ok_and(|n| n > MAX_BODY_BYTES)
        {
            return Err(too_large());
        }
    }
    let body = req
        .bytes()
        .await
        .map_err(|_| AppError::bad_request("unreadable request body"))?;
    if body.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(body)
}

async fn post_to_object(
    env: &Env,
    character: &CharacterId,
    body: &[u8],
) -> std::result::Result<Response, AppError> {
    let headers = Headers::new();
    headers.set(H_CHARACTER, character.as_str())?;
    headers.set("content-type", "application/json")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(js_sys::Uint8Array::from(body).into()));
    let forwarded = Request::new_with_init("https://character/publish", &init)?;
    Ok(stub(env, character)?.fetch_with_request(forwarded).await?)
}

async fn publish(req: Request, env: &Env, character: &CharacterId) -> Handled {
    let body = read_body(req).await?;
    post_to_object(env, character, &body).await
}

async fn history(url: &Url, env: &Env, character: &CharacterId) -> Handled {
    parse_history_query(&query_pairs(url))?;
    let headers = Headers::new();
    headers.set(H_CHARACTER, character.as_str())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let forwarded = Request::new_with_init(&object_url("/history", url), &init)?;
    Ok(stub(env, character)?.fetch_with_request(forwarded).await?)
}

fn command_json(cmd: &Command) -> serde_json::Value {
    serde_json::json!({
        "topic": cmd.topic.as_str(),
        "name": cmd.name.as_str(),
        "params": cmd.params,
        "duration_ms": cmd.duration_ms,
        "id": cmd.id,
    })
}

#[derive(Deserialize)]
struct PublishAnswer {
    seqs: Vec<u64>,
    delivered: u64,
}

/// Publishes one command to many characters, all objects at once.
async fn broadcast(req: Request, env: &Env) -> Handled {
    let body = read_body(req).await?;
    let (characters, command) = parse_broadcast_body(&body)?;
    let one = serde_json::json!({ "commands": [command_json(&command)] }).to_string();
    let calls = characters.iter().map(|c| async {
        let mut resp = post_to_object(env, c, one.as_bytes()).await?;
        if resp.status_code() != 200 {
            return Err(AppError::internal(format!("broadcast to {}: status {}", c.as_str(), resp.status_code())));
        }
        let answer: PublishAnswer = resp.json().await?;
        let seq = answer.seqs.first().copied().ok_or_else(|| AppError::internal("publish answer without seq"))?;
        Ok(serde_json::json!({ "character": c.as_str(), "seq": seq, "delivered": answer.delivered }))
    });
    let mut results = Vec::with_capacity(characters.len());
    let mut failed = 0usize;
    for r in join_all(calls).await {
        match r {
            Ok(v) => results.push(v),
            Err(_) => failed += 1,
        }
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
