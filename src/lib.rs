//! The animation gateway Worker: the fetch entry point. Everything it does is
//! in the modules below; the rules themselves live in the `routing` crate.

mod alarm;
mod auth;
mod character;
mod config;
mod error;
mod forward;
mod guard;
mod kv;
mod logs;
mod logstore;
mod registry;
mod revoke;
mod router;
mod say;
mod scene;
mod store;

pub use character::Character;
pub use registry::Registry;
pub use scene::Scene;
use worker::worker_sys::web_sys;
use worker::{event, Context, Env, Response, Result};

/// Takes the runtime's request as is: the router reads only what it needs.
#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> Result<Response> {
    router::handle(req, env, ctx).await
}
