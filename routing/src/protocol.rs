//! The wire protocol (contract §2, §3, §5): error codes and bodies, request
//! bodies for publish and broadcast, client frames, and the server frames,
//! serialized here once so every path emits byte-identical field names.

use crate::topic::{
    parse_filter_list, CharacterId, CommandName, NameError, Topic, TopicFilter, MAX_FILTERS,
};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

pub use crate::catalogue::{
    MAX_BATCH, MAX_BODY_BYTES, MAX_COMMAND_BYTES, MAX_DURATION_MS, MAX_FRAME_BYTES, MAX_ID_CHARS,
};

/// Error codes of the contract (§2 `error` frames, §5 HTTP bodies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UpgradeRequired,
    RateLimited,
    Internal,
    /// 503: a publish refused because archiving lags (nothing was stored).
    HistoryBacklog,
    /// 503: a subscribe refused before the upgrade: the character holds its
    /// maximum of sockets.
    CharacterFull,
    /// Only in `error` frames: a client frame that is not a known message.
    BadMessage,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UpgradeRequired => "upgrade_required",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::HistoryBacklog => "history_backlog",
            ErrorCode::CharacterFull => "character_full",
            ErrorCode::BadMessage => "bad_message",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::BadMessage => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UpgradeRequired => 426,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::HistoryBacklog | ErrorCode::CharacterFull => 503,
        }
    }
}

/// A refused HTTP request: status, code and a message for the caller.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

macro_rules! api_ctor {
    ($($fn:ident => $code:ident),* $(,)?) => {$(
        #[doc = concat!("An `", stringify!($fn), "` error.")]
        pub fn $fn(message: impl Into<String>) -> Self {
            ApiError { code: ErrorCode::$code, message: message.into() }
        }
    )*};
}

impl ApiError {
    api_ctor!(
        bad_request => BadRequest,
        unauthorized => Unauthorized,
        forbidden => Forbidden,
        not_found => NotFound,
        method_not_allowed => MethodNotAllowed,
        payload_too_large => PayloadTooLarge,
        upgrade_required => UpgradeRequired,
        rate_limited => RateLimited,
        internal => Internal,
        history_backlog => HistoryBacklog,
        character_full => CharacterFull,
    );

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// `{"error":{"code":"...","message":"..."}}`.
    pub fn body(&self) -> String {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'static str,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        to_json(&Outer {
            error: Inner {
                code: self.code.as_str(),
                message: &self.message,
            },
        })
    }

    fn prefixed(self, prefix: &str) -> Self {
        ApiError {
            code: self.code,
            message: format!("{prefix}{}", self.message),
        }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::bad_request(e.0)
    }
}

/// Serializes a frame. Our frame types hold only strings, integers and JSON
/// values, which cannot fail to serialize; the fallback keeps that
/// invariant out of the panic path.
fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| {
        r#"{"type":"error","code":"internal","message":"serialization failed","ref":null}"#
            .to_owned()
    })
}

/// Counts serialized bytes without building the string.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The length of `v` serialized as JSON, without building the string.
pub(crate) fn json_len<T: Serialize + ?Sized>(v: &T) -> usize {
    let mut c = ByteCounter(0);
    // Serializing into an infallible sink cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// A validated command, as published.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub topic: Topic,
    pub name: CommandName,
    pub params: Map<String, Value>,
    pub duration_ms: Option<u32>,
    pub id: Option<String>,
    /// When it should start playing (ms since the Unix epoch, server
    /// clock); its distance from now is checked by `schedule::check_at`.
    pub at: Option<u64>,
    /// `retain: true`: also becomes its topic's retained command
    /// (`routing::retained`), replacing the previous one.
    pub retain: bool,
}

/// Validates one command object. `null` counts as absent for the optional
/// fields (`topic`, `params`, `duration_ms`, `id`, `at`, `retain`); unknown
/// fields are ignored.
pub fn parse_command(v: &Value) -> Result<Command, ApiError> {
    let Some(obj) = v.as_object() else {
        return Err(ApiError::bad_request("a command must be a JSON object"));
    };
    if json_len(v) > MAX_COMMAND_BYTES {
        return Err(ApiError::payload_too_large(format!(
            "a command may be at most {MAX_COMMAND_BYTES} bytes serialized"
        )));
    }
    let topic = match obj.get("topic") {
        None | Some(Value::Null) => Topic::main(),
        Some(Value::String(s)) => Topic::parse(s)?,
        Some(_) => return Err(ApiError::bad_request("field `topic` must be a string")),
    };
    let name = match obj.get("name") {
        Some(Value::String(s)) => CommandName::parse(s)?,
        None | Some(Value::Null) => return Err(ApiError::bad_request("field `name` is required")),
        Some(_) => return Err(ApiError::bad_request("field `name` must be a string")),
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(ApiError::bad_request("field `params` must be an object")),
    };
    let duration_ms = optional_uint(obj.get("duration_ms"), MAX_DURATION_MS, || {
        format!("field `duration_ms` must be an integer from 0 to {MAX_DURATION_MS}")
    })?
    .and_then(|n| u32::try_from(n).ok());
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if (1..=MAX_ID_CHARS).contains(&s.chars().count()) => {
            Some(s.clone())
        }
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "field `id` must be a string of 1 to {MAX_ID_CHARS} characters"
            )))
        }
    };
    let at = crate::schedule::parse_at(obj.get("at"))?;
    let retain = match obj.get("retain") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::bad_request("field `retain` must be a boolean")),
    };
    Ok(Command {
        topic,
        name,
        params,
        duration_ms,
        id,
        at,
        retain,
    })
}

/// An optional integer field: absent or `null` is none; otherwise an
/// integer from 0 to `max`, or a 400 saying `message`.
pub fn optional_uint(
    v: Option<&Value>,
    max: u64,
    message: impl FnOnce() -> String,
) -> Result<Option<u64>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64().filter(|n| *n <= max) {
            Some(n) => Ok(Some(n)),
            None => Err(ApiError::bad_request(message())),
        },
    }
}

/// Size check and JSON parse shared by the HTTP bodies; yields the top object.
fn parse_body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::payload_too_large(format!(
            "request body may be at most {MAX_BODY_BYTES} bytes"
        )));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("malformed JSON: {e}"))),
    }
}

/// Checks the length of a `commands`/`characters` array.
fn batch_items<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, ApiError> {
    let Value::Array(items) = v else {
        return Err(ApiError::bad_request(format!(
            "field `{field}` must be an array"
        )));
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(format!(
            "field `{field}` must not be empty"
        )));
    }
    if items.len() > MAX_BATCH {
        return Err(ApiError::payload_too_large(format!(
            "field `{field}` may hold at most {MAX_BATCH} items"
        )));
    }
    Ok(items)
}

/// `POST /v1/characters/{c}/commands`: one command, or `{"commands":[...]}`.
pub fn parse_publish_body(body: &[u8]) -> Result<Vec<Command>, ApiError> {
    let obj = parse_body_object(body)?;
    match obj.get("commands") {
        Some(list) => batch_items(list, "commands")?
            .iter()
            .enumerate()
            .map(|(i, c)| parse_command(c).map_err(|e| e.prefixed(&format!("commands[{i}]: "))))
            .collect(),
        None => Ok(vec![parse_command(&Value::Object(obj))?]),
    }
}

/// `POST /v1/broadcast`: `{"characters":[...], ...command}`. Duplicate
/// characters are dropped, keeping first-seen order.
pub fn parse_broadcast_body(body: &[u8]) -> Result<(Vec<CharacterId>, Command), ApiError> {
    let mut obj = parse_body_object(body)?;
    let list = obj
        .remove("characters")
        .ok_or_else(|| ApiError::bad_request("field `characters` is required"))?;
    let mut chars: Vec<CharacterId> = Vec::new();
    for item in batch_items(&list, "characters")? {
        let Value::String(s) = item else {
            return Err(ApiError::bad_request(
                "field `characters` must hold strings",
            ));
        };
        let c = CharacterId::parse(s)?;
        if !chars.contains(&c) {
            chars.push(c);
        }
    }
    let command = parse_command(&Value::Object(obj))?;
    Ok((chars, command))
}

/// A parsed client → server frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Subscribe {
        topics: Vec<TopicFilter>,
        r#ref: Option<String>,
    },
    Unsubscribe {
        topics: Vec<TopicFilter>,
        r#ref: Option<String>,
    },
    Publish {
        command: Command,
        r#ref: Option<String>,
    },
}

/// Why a client frame was refused; becomes an `error` frame echoing `ref`.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub r#ref: Option<String>,
}

impl FrameError {
    fn new(code: ErrorCode, message: impl Into<String>, r#ref: Option<String>) -> Self {
        FrameError {
            code,
            message: message.into(),
            r#ref,
        }
    }
}

/// Parses a client text frame. Frames over 16 KiB are refused unread (no
/// `ref` recovered). A `ref` that is neither a string nor null makes the frame
/// `bad_message` (a client could not match a lossy echo).
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::new(
            ErrorCode::PayloadTooLarge,
            format!("a frame may be at most {MAX_FRAME_BYTES} bytes"),
            None,
        ));
    }
    let mut obj = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Err(FrameError::new(
                ErrorCode::BadMessage,
                "a frame must be a JSON object",
                None,
            ))
        }
        Err(e) => {
            return Err(FrameError::new(
                ErrorCode::BadMessage,
                format!("malformed JSON: {e}"),
                None,
            ))
        }
    };
    let r#ref = match obj.remove("ref") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(FrameError::new(
                ErrorCode::BadMessage,
                "field `ref` must be a string",
                None,
            ))
        }
    };
    let kind = match obj.remove("type") {
        Some(Value::String(s)) => s,
        _ => {
            return Err(FrameError::new(
                ErrorCode::BadMessage,
                "field `type` must be a string",
                r#ref,
            ))
        }
    };
    match kind.as_str() {
        "subscribe" | "unsubscribe" => {
            let topics = match frame_topics(obj.get("topics")) {
                Ok(t) => t,
                Err(msg) => return Err(FrameError::new(ErrorCode::BadRequest, msg, r#ref)),
            };
            Ok(if kind == "subscribe" {
                ClientFrame::Subscribe { topics, r#ref }
            } else {
                ClientFrame::Unsubscribe { topics, r#ref }
            })
        }
        "publish" => match parse_command(&Value::Object(obj)) {
            Ok(command) => Ok(ClientFrame::Publish { command, r#ref }),
            Err(e) => Err(FrameError::new(e.code, e.message, r#ref)),
        },
        other => Err(FrameError::new(
            ErrorCode::BadMessage,
            format!(
                "unknown frame type {:?}",
                other.chars().take(32).collect::<String>()
            ),
            r#ref,
        )),
    }
}

/// `topics` of a subscribe/unsubscribe: 1..=32 valid filters, deduped.
fn frame_topics(v: Option<&Value>) -> Result<Vec<TopicFilter>, String> {
    let Some(Value::Array(items)) = v else {
        return Err("field `topics` must be an array of topic filters".to_owned());
    };
    if items.is_empty() || items.len() > MAX_FILTERS {
        return Err(format!(
            "field `topics` must hold 1 to {MAX_FILTERS} filters"
        ));
    }
    let strs: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
    let strs = strs.ok_or_else(|| "field `topics` must hold strings".to_owned())?;
    parse_filter_list(&strs).map_err(|e| e.0)
}

/// A `command` frame, borrowing from the stored command; `type` comes first.
#[derive(Debug, Clone, Copy)]
pub struct CommandFrame<'a> {
    pub character: &'a CharacterId,
    pub topic: &'a Topic,
    pub seq: u64,
    pub epoch: &'a str,
    pub ts: u64,
    pub at: Option<u64>,
    pub name: &'a CommandName,
    pub params: &'a Map<String, Value>,
    pub duration_ms: Option<u32>,
    pub id: Option<&'a str>,
    /// True only for the retained commands sent right after `welcome`.
    pub retained: bool,
}

impl Serialize for CommandFrame<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("CommandFrame", 12)?;
        st.serialize_field("type", "command")?;
        st.serialize_field("character", self.character)?;
        st.serialize_field("topic", self.topic)?;
        st.serialize_field("seq", &self.seq)?;
        st.serialize_field("epoch", self.epoch)?;
        st.serialize_field("ts", &self.ts)?;
        st.serialize_field("at", &self.at)?;
        st.serialize_field("name", self.name)?;
        st.serialize_field("params", self.params)?;
        st.serialize_field("duration_ms", &self.duration_ms)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("retained", &self.retained)?;
        st.end()
    }
}

/// One `command` frame (also the element of `history` and `batch`), as
/// delivered live or replayed: `retained: false`.
pub fn command_frame_json(
    character: &CharacterId,
    epoch: &str,
    seq: u64,
    ts: u64,
    cmd: &Command,
) -> String {
    frame_json(character, epoch, seq, ts, cmd, false)
}

/// The `command` frame of a retained command, sent after `welcome` and in
/// the `state` answer: `retained: true`, its original seq and ts.
pub fn retained_frame_json(
    character: &CharacterId,
    epoch: &str,
    seq: u64,
    ts: u64,
    cmd: &Command,
) -> String {
    frame_json(character, epoch, seq, ts, cmd, true)
}

fn frame_json(
    character: &CharacterId,
    epoch: &str,
    seq: u64,
    ts: u64,
    cmd: &Command,
    retained: bool,
) -> String {
    to_json(&CommandFrame {
        character,
        topic: &cmd.topic,
        seq,
        epoch,
        ts,
        at: cmd.at,
        name: &cmd.name,
        params: &cmd.params,
        duration_ms: cmd.duration_ms,
        id: cmd.id.as_deref(),
        retained,
    })
}

/// A `batch` frame around already-serialized command frames (not re-parsed).
pub fn batch_frame_json(character: &CharacterId, command_frames: &[&str]) -> String {
    let body: usize = command_frames.iter().map(|f| f.len() + 1).sum();
    let mut out = String::with_capacity(body + character.as_str().len() + 48);
    out.push_str(r#"{"type":"batch","character":"#);
    out.push_str(&to_json(&character));
    out.push_str(r#","commands":["#);
    for (i, f) in command_frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(f);
    }
    out.push_str("]}");
    out
}

/// `welcome`: first frame after the upgrade.
pub fn welcome_frame_json(
    client_id: &str,
    character: &CharacterId,
    epoch: &str,
    seq: u64,
    topics: &[TopicFilter],
) -> String {
    #[derive(Serialize)]
    struct F<'a> {
        r#type: &'static str,
        client_id: &'a str,
        character: &'a CharacterId,
        epoch: &'a str,
        seq: u64,
        topics: &'a [TopicFilter],
    }
    to_json(&F {
        r#type: "welcome",
        client_id,
        character,
        epoch,
        seq,
        topics,
    })
}

/// `recovered`: ends the replay a `since` asked for. `next_since` is given
/// when the replay was cut short (`RESUME_LIMIT` commands or the archive
/// page bound): the frame then says `truncated: true` and where
/// `GET .../history` continues; otherwise `truncated: false` and no
/// `next_since`.
pub fn recovered_frame_json(
    since: u64,
    seq: u64,
    complete: bool,
    next_since: Option<u64>,
) -> String {
    #[derive(Serialize)]
    struct F {
        r#type: &'static str,
        since: u64,
        seq: u64,
        complete: bool,
        truncated: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_since: Option<u64>,
    }
    to_json(&F {
        r#type: "recovered",
        since,
        seq,
        complete,
        truncated: next_since.is_some(),
        next_since,
    })
}

/// `subscribed`: the full filter list now in force.
pub fn subscribed_frame_json(topics: &[TopicFilter]) -> String {
    #[derive(Serialize)]
    struct F<'a> {
        r#type: &'static str,
        topics: &'a [TopicFilter],
    }
    to_json(&F {
        r#type: "subscribed",
        topics,
    })
}

/// `published`: answer to a client `publish`.
pub fn published_frame_json(seq: u64, r#ref: Option<&str>) -> String {
    #[derive(Serialize)]
    struct F<'a> {
        r#type: &'static str,
        seq: u64,
        r#ref: Option<&'a str>,
    }
    to_json(&F {
        r#type: "published",
        seq,
        r#ref,
    })
}

/// Presence event kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceEvent {
    Join,
    Leave,
}

/// `presence`: a subscriber joined or left; `count` is subscribers now.
pub fn presence_frame_json(
    event: PresenceEvent,
    client_id: &str,
    user: Option<&str>,
    count: usize,
) -> String {
    #[derive(Serialize)]
    struct F<'a> {
        r#type: &'static str,
        event: PresenceEvent,
        client_id: &'a str,
        user: Option<&'a str>,
        count: usize,
    }
    to_json(&F {
        r#type: "presence",
        event,
        client_id,
        user,
        count,
    })
}

/// `error`: a refused client frame; the socket stays open.
pub fn error_frame_json(code: ErrorCode, message: &str, r#ref: Option<&str>) -> String {
    #[derive(Serialize)]
    struct F<'a> {
        r#type: &'static str,
        code: &'static str,
        message: &'a str,
        r#ref: Option<&'a str>,
    }
    to_json(&F {
        r#type: "error",
        code: code.as_str(),
        message,
        r#ref,
    })
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
