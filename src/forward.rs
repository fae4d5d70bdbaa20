//! The request as the router sees it, its body (read with the contract's
//! 64 KiB bound, a broken-off upload counted as the client's fault), and the
//! requests forwarded to the objects over the internal contract of
//! `routing::wire`.

use routing::protocol::MAX_BODY_BYTES;
use routing::query::{query_pairs, split_url};
use routing::topic::CharacterId;
use routing::wire::H_CHARACTER;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::worker_sys::web_sys;
use worker::{Env, Headers, Method, Request, RequestInit, Response, Stub};

use crate::error::AppError;

/// An incoming request as the router sees it: the runtime's request plus its
/// method, path and query, read once. It is not wrapped in `worker::Request`,
/// whose constructor also materializes the `cf` object, and the URL is split
/// rather than parsed, since the runtime hands it over already serialized.
pub struct Incoming {
    pub raw: web_sys::Request,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
}

impl Incoming {
    pub fn new(raw: web_sys::Request) -> Self {
        let url = raw.url();
        let (path, query) = split_url(&url);
        let (path, query) = (path.to_string(), query.map(str::to_string));
        Self {
            method: raw.method(),
            raw,
            path,
            query,
        }
    }

    pub fn headers(&self) -> Headers {
        Headers(self.raw.headers())
    }

    pub fn query_pairs(&self) -> Vec<(String, String)> {
        query_pairs(self.query.as_deref())
    }
}

pub fn stub(env: &Env, character: &CharacterId) -> std::result::Result<Stub, AppError> {
    Ok(env
        .durable_object("CHARACTERS")?
        .get_by_name(character.as_str())?)
}

pub fn object_url(path: &str, req: &Incoming) -> String {
    match &req.query {
        Some(q) => format!("https://character{path}?{q}"),
        None => format!("https://character{path}"),
    }
}

/// The declared body length, refused early when it is over the contract's
/// 64 KiB. A body without a length is measured when it is read.
pub fn declared_length(req: &Incoming) -> std::result::Result<Option<usize>, AppError> {
    let declared = req
        .headers()
        .get("content-length")?
        .and_then(|len| len.trim().parse::<usize>().ok());
    match declared {
        Some(n) if n > MAX_BODY_BYTES => Err(AppError::body_too_large()),
        other => Ok(other),
    }
}

/// Reads a request body, refusing more than the contract's 64 KiB.
pub async fn read_body(req: &Incoming) -> std::result::Result<Vec<u8>, AppError> {
    declared_length(req)?;
    read_measured(req).await
}

/// Reads a body whose declared length (if any) was already checked, and
/// measures it as it arrives. Once the read has started, its failure is the
/// client's: the connection closed before the body was complete.
pub async fn read_measured(req: &Incoming) -> std::result::Result<Vec<u8>, AppError> {
    if req.raw.body_used() {
        return Err(AppError::internal("request body read twice"));
    }
    read_capped(req.raw.body()).await
}

/// Reads a body stream chunk by chunk with a running count, refusing it
/// (`413`) as soon as it passes the contract's 64 KiB: at most one chunk
/// past the bound is ever held, and the rest of the upload is not awaited.
/// The stream is cancelled then, so the runtime stops reading it and can
/// answer at once.
pub async fn read_capped(
    stream: Option<web_sys::ReadableStream>,
) -> std::result::Result<Vec<u8>, AppError> {
    let Some(stream) = stream else {
        return Ok(Vec::new());
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    let mut body = Vec::new();
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| AppError::client_aborted(js_message(&e)))?;
        let done = js_sys::Reflect::get(&chunk, &"done".into())
            .map_err(|e| AppError::internal(js_message(&e)))?;
        if done.as_bool().unwrap_or(false) {
            return Ok(body);
        }
        let value = js_sys::Reflect::get(&chunk, &"value".into())
            .map_err(|e| AppError::internal(js_message(&e)))?;
        let bytes = js_sys::Uint8Array::new(&value);
        if body.len().saturating_add(bytes.length() as usize) > MAX_BODY_BYTES {
            // The cancel settles on its own; nothing waits for it.
            let _ = reader.cancel();
            return Err(AppError::body_too_large());
        }
        let at = body.len();
        body.resize(at + bytes.length() as usize, 0);
        bytes.copy_to(&mut body[at..]);
    }
}

/// Reads a body the router already bounded, in one piece (one promise
/// instead of one per chunk); over the contract's 64 KiB it is still a 413.
pub async fn read_bounded(req: &web_sys::Request) -> std::result::Result<Vec<u8>, AppError> {
    let promise = req
        .array_buffer()
        .map_err(|e| AppError::internal(js_message(&e)))?;
    let buffer = JsFuture::from(promise)
        .await
        .map_err(|e| AppError::client_aborted(js_message(&e)))?;
    let bytes = js_sys::Uint8Array::new(&buffer);
    if bytes.length() as usize > MAX_BODY_BYTES {
        return Err(AppError::body_too_large());
    }
    Ok(bytes.to_vec())
}

/// A rejection's message, for the log.
pub fn js_message(e: &wasm_bindgen::JsValue) -> String {
    match e.dyn_ref::<js_sys::Error>() {
        Some(error) => error.message().into(),
        None => e.as_string().unwrap_or_else(|| format!("{e:?}")),
    }
}

// The publish path talks to the runtime's own objects, without worker-rs's
// wrappers (measured in BENCHMARKS.md, "Where our time goes"): the
// namespace binding is looked up once per isolate instead of on every
// request (with a type check by constructor name), and the request is
// built from a plain init rather than converted from `worker::RequestInit`.
#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// The `CHARACTERS` Durable Object namespace binding.
    #[derive(Clone)]
    type Namespace;
    #[wasm_bindgen(method, catch, js_name = getByName)]
    fn get_by_name(this: &Namespace, name: &str) -> Result<ObjectStub, wasm_bindgen::JsValue>;
    /// A stub of one object.
    type ObjectStub;
    #[wasm_bindgen(method, catch, js_name = fetch)]
    fn fetch(
        this: &ObjectStub,
        req: &web_sys::Request,
    ) -> Result<js_sys::Promise, wasm_bindgen::JsValue>;
}

thread_local! {
    /// Bindings are fixed for the isolate's life.
    static CHARACTERS: std::cell::RefCell<Option<Namespace>> = const { std::cell::RefCell::new(None) };
}

/// The namespace of scene objects (`SCENES`).
fn scenes(env: &Env) -> std::result::Result<Namespace, AppError> {
    let value = js_sys::Reflect::get(env, &"SCENES".into())
        .map_err(|e| AppError::internal(js_message(&e)))?;
    if value.is_undefined() {
        return Err(AppError::internal("no SCENES binding"));
    }
    Ok(value.unchecked_into())
}

fn characters(env: &Env) -> std::result::Result<Namespace, AppError> {
    if let Some(ns) = CHARACTERS.with(|c| c.borrow().clone()) {
        return Ok(ns);
    }
    let value = js_sys::Reflect::get(env, &"CHARACTERS".into())
        .map_err(|e| AppError::internal(js_message(&e)))?;
    if value.is_undefined() {
        return Err(AppError::internal("no CHARACTERS binding"));
    }
    let ns: Namespace = value.unchecked_into();
    CHARACTERS.with(|c| *c.borrow_mut() = Some(ns.clone()));
    Ok(ns)
}

/// Posts a publish body to the character's object, which parses, stores
/// and sends it.
pub async fn post_to_object(
    env: &Env,
    character: &CharacterId,
    path: &str,
    body: wasm_bindgen::JsValue,
) -> std::result::Result<Response, AppError> {
    let url = format!("https://character{path}");
    let req = json_post(&url, &body, Some(character)).map_err(js_error)?;
    fetch_object(env, character, &req).await
}

/// Forwards a WebSocket upgrade to the character's object: a fresh request
/// that carries only what the object reads (the upgrade, the character and
/// the router's `facts`), so nothing a client sent under the internal prefix
/// can reach it.
pub async fn upgrade_to_object(
    env: &Env,
    character: &CharacterId,
    url: &str,
    facts: &[(&str, String)],
) -> std::result::Result<Response, AppError> {
    let req = upgrade_request(url, character.as_str(), facts).map_err(js_error)?;
    fetch_object(env, character, &req).await
}

/// A scene subscribe's upgrade, forwarded to the scene object `name` (the
/// `SCENES` namespace) with the caller's facts, built the same way.
pub async fn upgrade_to_scene(
    env: &Env,
    name: &str,
    url: &str,
    facts: &[(&str, String)],
) -> std::result::Result<Response, AppError> {
    let req = upgrade_request(url, name, facts).map_err(js_error)?;
    let stub = scenes(env)?.get_by_name(name).map_err(js_error)?;
    send(&stub, &req).await
}

/// A GET with only the upgrade, the object's name and `facts`.
fn upgrade_request(
    url: &str,
    name: &str,
    facts: &[(&str, String)],
) -> std::result::Result<web_sys::Request, wasm_bindgen::JsValue> {
    let headers = web_sys::Headers::new()?;
    headers.set("upgrade", "websocket")?;
    headers.set(H_CHARACTER, name)?;
    for (key, value) in facts {
        headers.set(key, value)?;
    }
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    init.set_headers(&headers);
    web_sys::Request::new_with_str_and_init(url, &init)
}

fn js_error(e: wasm_bindgen::JsValue) -> AppError {
    AppError::internal(js_message(&e))
}

/// One request to the character's object through the cached namespace.
async fn fetch_object(
    env: &Env,
    character: &CharacterId,
    req: &web_sys::Request,
) -> std::result::Result<Response, AppError> {
    let stub = characters(env)?
        .get_by_name(character.as_str())
        .map_err(js_error)?;
    send(&stub, req).await
}

/// Sends `req` to an object and takes its answer as a worker-rs response.
async fn send(
    stub: &ObjectStub,
    req: &web_sys::Request,
) -> std::result::Result<Response, AppError> {
    let answer = JsFuture::from(stub.fetch(req).map_err(js_error)?)
        .await
        .map_err(js_error)?;
    let resp: web_sys::Response = answer.dyn_into().map_err(js_error)?;
    Ok(resp.into())
}

/// Posts a JSON body to the object named `name` (a character's own object
/// or one of its relays), naming it in the request for an object that has
/// not stored its name yet.
pub async fn post_to_name(
    env: &Env,
    name: &str,
    path: &str,
    body: &wasm_bindgen::JsValue,
) -> std::result::Result<Response, AppError> {
    let stub = characters(env)?.get_by_name(name).map_err(js_error)?;
    post_to_stub(&stub, name, path, body).await
}

/// [`post_to_name`] for a scene object (the `SCENES` namespace).
pub async fn post_to_scene(
    env: &Env,
    name: &str,
    path: &str,
    body: &wasm_bindgen::JsValue,
) -> std::result::Result<Response, AppError> {
    let stub = scenes(env)?.get_by_name(name).map_err(js_error)?;
    post_to_stub(&stub, name, path, body).await
}

async fn post_to_stub(
    stub: &ObjectStub,
    name: &str,
    path: &str,
    body: &wasm_bindgen::JsValue,
) -> std::result::Result<Response, AppError> {
    let url = format!("https://character{path}");
    let req = json_post(&url, body, None).map_err(js_error)?;
    req.headers().set(H_CHARACTER, name).map_err(js_error)?;
    send(stub, &req).await
}

/// A JSON POST to an object's internal `url`, naming `character` for a
/// character object, built from the runtime's own types.
fn json_post(
    url: &str,
    body: &wasm_bindgen::JsValue,
    character: Option<&CharacterId>,
) -> std::result::Result<web_sys::Request, wasm_bindgen::JsValue> {
    let headers = web_sys::Headers::new()?;
    headers.set("content-type", "application/json")?;
    if let Some(c) = character {
        headers.set(H_CHARACTER, c.as_str())?;
    }
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_headers(&headers);
    init.set_body(body);
    web_sys::Request::new_with_str_and_init(url, &init)
}

/// [`json_post`] as a `worker::Request`, for a worker-rs stub (the registry).
pub fn post_request(
    url: &str,
    body: wasm_bindgen::JsValue,
    character: Option<&CharacterId>,
) -> worker::Result<Request> {
    Ok(json_post(url, &body, character)?.into())
}

pub fn bytes_value(body: &[u8]) -> wasm_bindgen::JsValue {
    js_sys::Uint8Array::from(body).into()
}

/// A request to an object's internal `path`, carrying the public query and,
/// for a character object, its name.
pub fn get_from_object(
    path: &str,
    incoming: &Incoming,
    method: Method,
    character: Option<&CharacterId>,
) -> std::result::Result<Request, AppError> {
    let mut init = RequestInit::new();
    init.with_method(method);
    let req = Request::new_with_init(&object_url(path, incoming), &init)?;
    if let Some(c) = character {
        req.headers().set(H_CHARACTER, c.as_str())?;
    }
    Ok(req)
}

/// The client's answer to a `publish` frame that a relay or scene object
/// sent on to the character's object (`routing::wire::forwarded_publish_frame`);
/// a fault of ours is logged.
pub async fn publish_answer_frame(
    sent: std::result::Result<Response, AppError>,
    r#ref: Option<&str>,
) -> String {
    let (frame, fault) = match sent {
        Ok(mut resp) => {
            let status = resp.status_code();
            let body = resp.text().await.unwrap_or_default();
            routing::wire::forwarded_publish_frame(status, &body, r#ref)
        }
        // Not answered at all: the same `internal` frame, logged with why.
        Err(e) => {
            let (frame, _) = routing::wire::forwarded_publish_frame(0, "", r#ref);
            (frame, Some(e.message().to_string()))
        }
    };
    if let Some(why) = fault {
        worker::console_error!("forwarded publish: {why}");
    }
    frame
}
