//! Withdrawing a user's rights (close code 4003): the admin request records
//! the revocation in the registry, then asks every character that has
//! subscribers to close that user's sockets; and every request with a JWT
//! is checked against the isolate's copy of the active revocations
//! (`routing::revocation`: at most 10 s old).

use std::cell::RefCell;

use futures_util::future::join_all;
use routing::revocation::{parse_revocation_body, RevocationCache};
use routing::topic::CharacterId;
use routing::wire::{path, Revocation, RevocationRecorded, RevokeAnswer};
use wasm_bindgen::JsValue;
use worker::{console_error, Env, Method, Request, Response};

use crate::error::{json_response, AppError};
use crate::forward::{post_request, post_to_object};
use crate::registry;

thread_local! {
    static CACHE: RefCell<RevocationCache> = RefCell::new(RevocationCache::default());
}

async fn fetch_list(env: &Env) -> Result<Vec<Revocation>, AppError> {
    let url = format!("https://registry{}", path::REVOCATIONS);
    let mut resp = registry::stub(env)?
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
    let mut resp = registry::stub(env)?
        .fetch_with_request(post_request(&url, JsValue::from_str(&json), None)?)
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
            let body = JsValue::from_str(&user);
            let mut resp = post_to_object(env, c, path::REVOKE, body).await?;
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
