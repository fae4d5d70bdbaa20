//! Withdrawing a user's rights (close code 4003): the admin request records
//! the revocation in the registry, then asks every character that has
//! subscribers to close that user's sockets; and every request with a JWT
//! is checked against the isolate's copy of the active revocations
//! (`routing::revocation`: at most 10 s old).

use std::cell::RefCell;

use futures_util::future::join_all;
use routing::revocation::{parse_revocation_body, RevocationCache};
use routing::topic::CharacterId;
use routing::wire::{path, Revocation, RevocationRecorded, RevokeAnswer, H_CHARACTER};
use worker::{console_error, Env, Headers, Method, Request, RequestInit, Response, Stub};

use crate::error::{json_response, AppError};
use crate::forward::stub;
use crate::registry;

thread_local! {
    static CACHE: RefCell<RevocationCache> = RefCell::new(RevocationCache::default());
}

fn registry_stub(env: &Env) -> Result<Stub, AppError> {
    Ok(env
        .durable_object(registry::BINDING)?
        .get_by_name(registry::INSTANCE)?)
}

fn post(url: &str, body: &str, character: Option<&CharacterId>) -> Result<Request, AppError> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    if let Some(c) = character {
        headers.set(H_CHARACTER, c.as_str())?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(wasm_bindgen::JsValue::from_str(body)));
    Ok(Request::new_with_init(url, &init)?)
}

async fn fetch_list(env: &Env) -> Result<Vec<Revocation>, AppError> {
    let url = format!("https://registry{}", path::REVOCATIONS);
    let mut resp = registry_stub(env)?
        .fetch_with_request(Request::new(&url, Method::Get)?)
        .await?;
    Ok(resp.json().await?)
}

/// Refuses a token whose user is revoked now: 401, like any credential
/// that no longer counts.
pub async fn check_user(env: &Env, user: &str, now: u64) -> Result<(), AppError> {
    if CACHE.with(|c| c.borrow().stale(now)) {
        match fetch_list(env).await {
            Ok(list) => CACHE.with(|c| c.borrow_mut().replace(list, now)),
            Err(e) => {
                // A registry fault must not refuse every token.
                console_error!("reading revocations: {}", e.message());
                CACHE.with(|c| c.borrow_mut().touch(now));
            }
        }
    }
    match CACHE.with(|c| c.borrow().revoked_until(user, now)) {
        Some(until) => Err(AppError::new(
            routing::protocol::ErrorCode::Unauthorized,
            format!("this user's rights are withdrawn until {until} (ms since the Unix epoch)"),
        )),
        None => Ok(()),
    }
}

/// `POST /v1/admin/revocations`: records the revocation, then closes the
/// user's sockets on every character that has subscribers (20 at a time).
pub async fn revoke(env: &Env, body: &[u8], now: u64) -> Result<Response, AppError> {
    let revocation = parse_revocation_body(body, now)?;
    let json = serde_json::to_string(&revocation).map_err(AppError::internal)?;
    let url = format!("https://registry{}", path::REVOCATIONS);
    let mut resp = registry_stub(env)?
        .fetch_with_request(post(&url, &json, None)?)
        .await?;
    if resp.status_code() != 200 {
        return Err(AppError::internal(format!(
            "registry answered {}",
            resp.status_code()
        )));
    }
    let recorded: RevocationRecorded = resp.json().await?;
    CACHE.with(|c| c.borrow_mut().insert(revocation.clone()));
    let user = serde_json::json!({ "user": revocation.user }).to_string();
    let mut closed = 0usize;
    let characters: Vec<CharacterId> = recorded
        .characters
        .iter()
        .filter_map(|c| CharacterId::parse(c).ok())
        .collect();
    for chunk in characters.chunks(20) {
        let calls = chunk.iter().map(|c| async {
            let url = format!("https://character{}", path::REVOKE);
            let mut resp = stub(env, c)?
                .fetch_with_request(post(&url, &user, Some(c))?)
                .await?;
            let answer: RevokeAnswer = resp.json().await?;
            Ok::<usize, AppError>(answer.closed)
        });
        for r in join_all(calls).await {
            closed += r?;
        }
    }
    let body = serde_json::json!({
        "user": revocation.user,
        "until": revocation.until,
        "closed": closed,
        "characters": characters.len(),
    });
    Ok(json_response(200, &body.to_string())?)
}
