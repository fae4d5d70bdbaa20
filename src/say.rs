//! `POST /v1/characters/{c}/say`: text to timed animation commands by the
//! rule engine of `routing::animator`, compiled once per isolate, optionally
//! scheduled on server time (`lead_ms`, `routing::schedule`). The rules
//! are the shipped default unless the `SAY_RULES` var holds a rules file.

use std::cell::RefCell;
use std::rc::Rc;

use routing::animator::{default_animator, Animator, RuleAnimator};
use routing::protocol::{ApiError, Command};
use routing::topic::Topic;
use worker::Env;

use crate::config::var;
use crate::error::AppError;

thread_local! {
    static ANIMATOR: RefCell<Option<Rc<RuleAnimator>>> = const { RefCell::new(None) };
}

fn animator(env: &Env) -> Result<Rc<RuleAnimator>, AppError> {
    if let Some(a) = ANIMATOR.with(|cell| cell.borrow().clone()) {
        return Ok(a);
    }
    let loaded = match var(env, "SAY_RULES").filter(|r| !r.trim().is_empty()) {
        Some(json) => RuleAnimator::from_json(&json),
        None => default_animator(),
    }
    .map_err(|e| AppError::internal(format!("say rules failed to load: {e}")))?;
    let rc = Rc::new(loaded);
    ANIMATOR.with(|cell| *cell.borrow_mut() = Some(rc.clone()));
    Ok(rc)
}

/// Parses a say body and derives its commands. With `lead_ms` they are
/// scheduled on server time: `at` is `now + lead_ms + start_ms`.
pub fn derive(env: &Env, body: &[u8], now: u64) -> Result<Vec<Command>, AppError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let text = match obj.get("text") {
        Some(serde_json::Value::String(t)) => t,
        Some(_) => return Err(ApiError::bad_request("`text` must be a string").into()),
        None => return Err(ApiError::bad_request("`text` is required").into()),
    };
    let topic = match obj.get("topic") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(Topic::parse(t).map_err(ApiError::from)?),
        Some(_) => return Err(ApiError::bad_request("`topic` must be a string").into()),
    };
    let lead = routing::schedule::parse_lead(obj.get("lead_ms"))?;
    let mut commands = animator(env)?.animate(text, topic.as_ref())?;
    if let Some(lead) = lead {
        routing::schedule::schedule(&mut commands, now, lead);
    }
    Ok(commands)
}
