//! The per-socket record the runtime keeps across hibernation. Its encoding
//! and size bound live in `routing::attachment`; this file only moves the
//! encoded string in and out of the runtime, and keeps a topic list that is
//! over its budget in SQLite, found again by client id.

use routing::attachment::{self as codec, Encoded, MAX_USER_BYTES};
use routing::hub::ClientInfo;
use worker::{console_error, WebSocket};

use crate::error::AppError;
use crate::store::Store;

/// Encodes a client before its socket is accepted: a client that cannot be
/// kept across hibernation is refused with the contract's 400 instead.
/// The documented bound is on the user (the token's `sub`): every user of
/// at most `MAX_USER_BYTES` fits, whatever else the client holds.
pub fn encode(info: &ClientInfo, expires_at: Option<u64>) -> Result<Encoded, AppError> {
    if info.user.as_ref().is_some_and(|u| u.len() > MAX_USER_BYTES) {
        return Err(AppError::bad_request(format!(
            "the token's user (`sub`) may be at most {MAX_USER_BYTES} bytes"
        )));
    }
    codec::encode(info, expires_at).map_err(|e| AppError::bad_request(e.to_string()))
}

/// Stores an encoded client on its socket (and its spilled topics in SQLite).
pub fn store(
    ws: &WebSocket,
    client_id: &str,
    encoded: &Encoded,
    store: &Store,
) -> Result<(), AppError> {
    match &encoded.spilled_topics {
        Some(topics) => store.spill_topics(client_id, topics)?,
        // A row exists only if the socket's record said so (never for a new socket).
        None if spilled(ws) => store.drop_spilled_topics(client_id)?,
        None => {}
    }
    ws.serialize_attachment(&encoded.attachment)?;
    Ok(())
}

/// Saves a client whose topics changed.
pub fn save(ws: &WebSocket, info: &ClientInfo, expires_at: Option<u64>, db: &Store) {
    let result = encode(info, expires_at).and_then(|e| store(ws, &info.client_id, &e, db));
    if let Err(e) = result {
        console_error!("saving socket attachment: {}", e.message());
    }
}

fn raw(ws: &WebSocket) -> Option<String> {
    ws.deserialize_attachment::<String>().ok().flatten()
}

/// Whether the socket's current record keeps its topics in SQLite.
pub fn spilled(ws: &WebSocket) -> bool {
    raw(ws)
        .and_then(|r| codec::spill_of(&r))
        .is_some_and(|(_, spilled)| spilled)
}

/// The client id a socket was accepted under.
pub fn client_id(ws: &WebSocket) -> Option<String> {
    codec::client_id(&raw(ws)?)
}

/// The client as it was before the object slept, and its token expiry.
pub fn restore(ws: &WebSocket, store: &Store) -> Option<(ClientInfo, Option<u64>)> {
    codec::decode(&raw(ws)?, |id| store.spilled_topics(id).ok().flatten())
}
