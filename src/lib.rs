//! The animation gateway Worker: the fetch entry point. Everything it does is
//! in the modules below; the rules themselves live in the `routing` crate.

mod character;
mod config;
mod error;
mod router;
mod store;

pub use character::Character;
use worker::{event, Context, Env, Request, Response, Result};

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    router::handle(req, env).await
}
