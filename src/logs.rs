//! `GET /v1/admin/logs`: one character's log is its object's buffered tail
//! merged with KV, so nothing waits for a flush to be seen; the global view
//! reads KV only and lags by up to `LOG_FLUSH_SECONDS`.

use routing::events::LogEvent;
use routing::logbuf::merge_newest;
use routing::query::LogsQuery;
use routing::wire::path;
use serde::Deserialize;
use worker::{Env, Method};

use crate::error::AppError;
use crate::forward::{get_from_object, stub, Incoming};
use crate::kv;

#[derive(Deserialize)]
struct Tail {
    events: Vec<LogEvent>,
}

/// The newest `query.limit` events, newest first.
pub async fn read(
    env: &Env,
    req: &Incoming,
    query: &LogsQuery,
) -> std::result::Result<Vec<LogEvent>, AppError> {
    let Some(character) = &query.character else {
        return Ok(kv::read_logs(env, None, query.limit).await?);
    };
    // The tail first, then KV: a row the object lets go of was written to
    // KV before, so it is in one of the two reads (the merge drops it from
    // the other).
    let forwarded = get_from_object(path::LOGS, req, Method::Get, Some(character))?;
    let mut resp = stub(env, character)?.fetch_with_request(forwarded).await?;
    if resp.status_code() != 200 {
        return Err(AppError::internal(format!(
            "log tail of {}: status {}",
            character.as_str(),
            resp.status_code()
        )));
    }
    let tail: Tail = resp.json().await?;
    let stored = kv::read_logs(env, Some(character.as_str()), query.limit).await?;
    Ok(merge_newest(tail.events, stored, query.limit))
}
