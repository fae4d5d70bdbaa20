//! One error type for every handler. It wraps the contract's `ApiError`, knows
//! its HTTP status and headers and turns into the body
//! `{"error":{"code","message"}}`. Faults of ours are logged with their cause
//! and answered `500 internal` without internals; faults of the client are
//! answered with their 4xx and never logged as ours.

use routing::protocol::{ApiError, ErrorCode, MAX_BODY_BYTES};
use routing::route::RouteError;
use worker::{console_error, console_warn, Response, Result};

#[derive(Debug)]
pub struct AppError {
    pub api: ApiError,
    /// For a 405, the methods the path allows: the `Allow` header.
    allow: Option<&'static [&'static str]>,
    /// For a 503, seconds to wait: the `Retry-After` header.
    retry_after: Option<u64>,
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            api: ApiError {
                code,
                message: message.into(),
            },
            allow: None,
            retry_after: None,
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    /// A request body over the contract's 64 KiB.
    pub fn body_too_large() -> Self {
        Self::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is over {MAX_BODY_BYTES} bytes"),
        )
    }
    /// A request body that broke off while it was read: the client closed
    /// the connection mid-upload (or sent a malformed chunked body). Nobody
    /// may be left to read the answer; the log says it was the client's doing.
    pub fn client_aborted(cause: impl std::fmt::Display) -> Self {
        console_warn!("client fault: request body could not be read: {cause}");
        Self::bad_request("request body could not be read")
    }
    /// A known path asked with another method; `allowed` also goes into the
    /// `Allow` header.
    pub fn method_not_allowed(allowed: &'static [&'static str]) -> Self {
        let e = RouteError::method_not_allowed(allowed);
        Self {
            allow: Some(allowed),
            ..Self::new(e.code, e.message)
        }
    }
    /// A publish refused because archiving lags (nothing was stored).
    pub fn history_backlog(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(
                ErrorCode::HistoryBacklog,
                "history archiving lags behind; nothing was stored, publish again later",
            )
        }
    }
    /// A subscribe refused before the upgrade: the character holds its
    /// maximum of sockets.
    pub fn character_full(max: usize, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(
                ErrorCode::CharacterFull,
                format!("this character holds its maximum of {max} sockets; try again later"),
            )
        }
    }
    /// A scene subscribe refused because `character` holds its maximum of
    /// sockets (or feeds its maximum of scene objects).
    pub fn character_full_of(character: &str, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(
                ErrorCode::CharacterFull,
                format!("character {character} holds its maximum of sockets; try again later"),
            )
        }
    }
    /// Over a rate limit (the message names which); retry after the window.
    pub fn rate_limited(message: &str, retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(ErrorCode::RateLimited, message)
        }
    }
    /// A fault of ours: the cause goes to the log, the client gets no details.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        console_error!("internal error: {cause}");
        Self::new(ErrorCode::Internal, "internal error")
    }

    pub fn message(&self) -> &str {
        &self.api.message
    }

    pub fn into_response(self) -> Result<Response> {
        let resp = json_response(self.api.status(), &self.api.body())?;
        if let Some(allowed) = self.allow {
            resp.headers().set("allow", &allowed.join(", "))?;
        }
        if let Some(secs) = self.retry_after {
            resp.headers().set("retry-after", &secs.to_string())?;
        }
        Ok(resp)
    }
}

impl From<RouteError> for AppError {
    fn from(e: RouteError) -> Self {
        match e.allow {
            Some(allowed) => Self::method_not_allowed(allowed),
            None => Self::new(e.code, e.message),
        }
    }
}

impl From<ApiError> for AppError {
    fn from(e: ApiError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<worker::Error> for AppError {
    fn from(e: worker::Error) -> Self {
        Self::internal(e)
    }
}

/// A JSON response with the given status and an already-serialized body.
pub fn json_response(status: u16, body: &str) -> Result<Response> {
    let resp = Response::ok(body)?.with_status(status);
    resp.headers().set("content-type", "application/json")?;
    Ok(resp)
}
