//! The per-socket record the runtime keeps across hibernation (at most 2 KiB):
//! who the client is and what it subscribed to. Topic lists too long for the
//! budget are kept in SQLite instead and found again by client id.

use routing::hub::ClientInfo;
use routing::topic::TopicFilter;
use serde::{Deserialize, Serialize};
use worker::WebSocket;

use crate::error::AppError;
use crate::store::Store;

/// Topic lists longer than this (as JSON) are spilled to SQLite.
const TOPICS_BUDGET: usize = 1200;

#[derive(Serialize, Deserialize)]
pub struct Attachment {
    /// client id
    pub c: String,
    /// user (token `sub`), absent with auth off
    pub u: Option<String>,
    /// topic filters; `None` when spilled to SQLite
    pub t: Option<Vec<String>>,
    /// wants presence events
    pub p: bool,
    /// connected_at, ms since the Unix epoch
    pub a: u64,
    /// may publish over the socket
    pub w: bool,
    /// token expiry, ms since the Unix epoch
    #[serde(default)]
    pub x: Option<u64>,
}

pub fn read(ws: &WebSocket) -> Option<Attachment> {
    ws.deserialize_attachment().ok().flatten()
}

pub fn save(
    ws: &WebSocket,
    info: &ClientInfo,
    expires_at: Option<u64>,
    store: &Store,
) -> Result<(), AppError> {
    let topics: Vec<String> = info.topics.iter().map(|t| t.as_str().to_string()).collect();
    let json = serde_json::to_string(&topics).map_err(AppError::internal)?;
    let t = if json.len() > TOPICS_BUDGET {
        store.spill_topics(&info.client_id, &json)?;
        None
    } else {
        Some(topics)
    };
    let att = Attachment {
        c: info.client_id.clone(),
        u: info.user.clone(),
        t,
        p: info.presence,
        a: info.connected_at,
        w: info.can_publish,
        x: expires_at,
    };
    ws.serialize_attachment(&att)?;
    Ok(())
}

/// The client as it was before the object slept, and its token expiry.
pub fn restore(ws: &WebSocket, store: &Store) -> Option<(ClientInfo, Option<u64>)> {
    let att = read(ws)?;
    let topics: Vec<String> = match att.t {
        Some(t) => t,
        None => serde_json::from_str(&store.spilled_topics(&att.c).ok().flatten()?).ok()?,
    };
    let info = ClientInfo {
        client_id: att.c,
        user: att.u,
        topics: topics
            .iter()
            .filter_map(|t| TopicFilter::parse(t).ok())
            .collect(),
        presence: att.p,
        connected_at: att.a,
        can_publish: att.w,
    };
    Some((info, att.x))
}
