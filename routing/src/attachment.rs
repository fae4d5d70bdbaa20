//! The record the runtime keeps for each WebSocket across hibernation (its
//! "attachment", at most 2,048 bytes once structured-cloned): who the client
//! is and what it subscribed to, encoded as one ASCII-only JSON string so
//! its stored size is its length whatever the user name. A topic list that
//! does not fit is "spilled": the shell keeps it in SQLite under the client
//! id and hands it back when decoding.
//!
//! Format: `{"c":client_id,"u":user,"t":[filters],"p":presence,
//! "a":connected_at,"w":can_publish,"x":token_expiry}`; `u` and `x` are left
//! out when absent and `t` when spilled. This is the shape the Worker stored
//! as a JS object before, so `null` for `u`, `t` or `x` is read as absent;
//! the spilled list is a JSON array of filter strings, as before.

use serde::{Deserialize, Serialize};
use std::fmt::{self, Write};

use crate::hub::ClientInfo;
use crate::topic::TopicFilter;

/// Most bytes an encoded attachment takes. The runtime's limit is 2,048
/// bytes of structured-clone output; a one-byte (ASCII) string costs its
/// length plus a header of a few bytes (version, tag, varint length), so
/// 128 bytes of room are plenty.
pub const ATTACHMENT_BUDGET: usize = 1_920;
const _: () = assert!(ATTACHMENT_BUDGET + 128 <= 2_048);

/// The longest client id (ASCII, nothing JSON must escape) that the
/// guarantees of [`check_user`] and [`MAX_USER_BYTES`] allow for; the
/// Worker makes 32 hex characters.
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// Any user (token `sub`) of at most this many UTF-8 bytes always fits,
/// whatever else the client holds: escaping takes at most 6 bytes per byte
/// (a control character becomes `\u00XX`), and 256 × 6 plus the rest of the
/// record stays under [`ATTACHMENT_BUDGET`]. Longer users may fit too:
/// [`check_user`] says exactly.
pub const MAX_USER_BYTES: usize = 256;

/// What to store for a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The attachment: ASCII-only JSON, at most [`ATTACHMENT_BUDGET`] bytes.
    pub attachment: String,
    /// The topic list (a JSON array of filters) to keep in SQLite under the
    /// client id when it did not fit; `None` when it is in the attachment,
    /// so an earlier spilled row for this client may be deleted.
    pub spilled_topics: Option<String>,
}

/// The client cannot be kept in an attachment even with its topics spilled
/// (in practice: a very long user name). `len` is the smallest encoding's
/// length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    pub len: usize,
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the socket's record would take {} bytes, over its budget of {ATTACHMENT_BUDGET}",
            self.len
        )
    }
}

impl std::error::Error for TooLarge {}

#[derive(Serialize)]
struct Out<'a> {
    c: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    t: Option<&'a [TopicFilter]>,
    p: bool,
    a: u64,
    w: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    x: Option<u64>,
}

#[derive(Deserialize)]
struct In {
    c: String,
    #[serde(default)]
    u: Option<String>,
    #[serde(default)]
    t: Option<Vec<TopicFilter>>,
    p: bool,
    a: u64,
    w: bool,
    #[serde(default)]
    x: Option<u64>,
}

#[derive(Deserialize)]
struct IdOnly {
    c: String,
}

#[derive(Deserialize)]
struct IdAndTopics {
    c: String,
    #[serde(default)]
    t: Option<serde::de::IgnoredAny>,
}

/// JSON with every non-ASCII character escaped as `\uXXXX` (UTF-16 units).
/// Outside strings JSON is ASCII already, so the result is still valid.
fn ascii_json<T: Serialize>(value: &T) -> Result<String, TooLarge> {
    // Strings, numbers and bools always serialize; an error cannot happen,
    // and is reported as "does not fit" rather than panicking.
    let json = serde_json::to_string(value).map_err(|_| TooLarge { len: usize::MAX })?;
    if json.is_ascii() {
        return Ok(json);
    }
    let mut out = String::with_capacity(json.len() * 2);
    for ch in json.chars() {
        if ch.is_ascii() {
            out.push(ch);
        } else {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    Ok(out)
}

fn fitting(json: String) -> Result<String, TooLarge> {
    if json.len() <= ATTACHMENT_BUDGET {
        Ok(json)
    } else {
        Err(TooLarge { len: json.len() })
    }
}

/// Encodes a client and its token expiry (ms since the Unix epoch). The
/// topics stay in the attachment when the whole fits in
/// [`ATTACHMENT_BUDGET`], else they are spilled; `TooLarge` when even the
/// record without topics does not fit.
pub fn encode(info: &ClientInfo, expires_at: Option<u64>) -> Result<Encoded, TooLarge> {
    let out = |t| Out {
        c: &info.client_id,
        u: info.user.as_deref(),
        t,
        p: info.presence,
        a: info.connected_at,
        w: info.can_publish,
        x: expires_at,
    };
    if let Ok(attachment) = fitting(ascii_json(&out(Some(&info.topics)))?) {
        return Ok(Encoded {
            attachment,
            spilled_topics: None,
        });
    }
    let attachment = fitting(ascii_json(&out(None))?)?;
    let topics = serde_json::to_string(&info.topics).map_err(|_| TooLarge { len: usize::MAX })?;
    Ok(Encoded {
        attachment,
        spilled_topics: Some(topics),
    })
}

/// Decodes an attachment made by [`encode`] (or the Worker's earlier object
/// of the same shape, as JSON). `spilled` is asked for the topic list by
/// client id only when the topics were spilled. `None` when the attachment
/// is not such a record, names an invalid filter, or its spilled list is
/// missing or invalid: the socket's state is lost.
pub fn decode(
    attachment: &str,
    spilled: impl FnOnce(&str) -> Option<String>,
) -> Option<(ClientInfo, Option<u64>)> {
    let record: In = serde_json::from_str(attachment).ok()?;
    let topics = match record.t {
        Some(topics) => topics,
        None => serde_json::from_str(&spilled(&record.c)?).ok()?,
    };
    let info = ClientInfo {
        client_id: record.c,
        user: record.u,
        topics,
        presence: record.p,
        connected_at: record.a,
        can_publish: record.w,
    };
    Some((info, record.x))
}

/// Just the client id of an attachment, without asking for spilled topics
/// (to find a socket's hub key).
pub fn client_id(attachment: &str) -> Option<String> {
    serde_json::from_str::<IdOnly>(attachment).ok().map(|r| r.c)
}

/// The client id of an attachment and whether its topics were spilled (kept
/// in SQLite under that id): only then is there a row to delete when the
/// socket ends or its topics fit again. `t` absent or `null` is spilled,
/// as [`decode`] reads it.
pub fn spill_of(attachment: &str) -> Option<(String, bool)> {
    let r: IdAndTopics = serde_json::from_str(attachment).ok()?;
    Some((r.c, r.t.is_none()))
}

/// Whether a client with this user can always be encoded: `Ok` means
/// [`encode`] never fails for it, whatever its topics, flags and times,
/// given a client id of at most [`MAX_CLIENT_ID_LEN`] plain ASCII
/// characters. Check it before accepting a socket and refuse with 400
/// `bad_request` otherwise. Every user of at most [`MAX_USER_BYTES`] bytes
/// passes.
pub fn check_user(user: Option<&str>) -> Result<(), TooLarge> {
    let worst_id = "0".repeat(MAX_CLIENT_ID_LEN);
    let worst = Out {
        c: &worst_id,
        u: user,
        t: None,
        p: false,
        a: u64::MAX,
        w: false,
        x: Some(u64::MAX),
    };
    fitting(ascii_json(&worst)?).map(|_| ())
}

#[cfg(test)]
#[path = "attachment_tests.rs"]
mod tests;
