//! Credentials to a `Principal`: reads the configuration and the request's
//! headers and hands them to the pure policy in `routing::auth`. Every
//! failure is one `401` or `403` with the contract's body.

use std::cell::RefCell;
use std::rc::Rc;

use routing::auth::{authenticate, AuthConfig, Credentials, Principal};
use worker::{Date, Env, Headers};

use crate::config::{secret, var};
use crate::error::AppError;

pub struct Auth {
    enabled: bool,
    jwt_secret: String,
    api_keys: String,
    api_key_header: String,
}

thread_local! {
    static CACHED: RefCell<Option<Rc<Auth>>> = const { RefCell::new(None) };
}

impl Auth {
    /// The settings, read once per isolate (vars and secrets are fixed for a
    /// deployment).
    pub fn cached(env: &Env) -> Rc<Self> {
        CACHED.with(|c| {
            c.borrow_mut()
                .get_or_insert_with(|| Rc::new(Self::from_env(env)))
                .clone()
        })
    }

    fn from_env(env: &Env) -> Self {
        Self {
            enabled: var(env, "AUTH_ENABLED").is_some_and(|v| v.trim() == "true"),
            jwt_secret: secret(env, "JWT_SECRET").unwrap_or_default(),
            api_keys: secret(env, "API_KEYS").unwrap_or_default(),
            api_key_header: var(env, "API_KEY_HEADER")
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| "X-API-Key".to_string()),
        }
    }

    /// Who is calling. `query_token` is the `?token=` of a subscribe URL.
    pub fn principal(
        &self,
        headers: &Headers,
        query_token: Option<&str>,
    ) -> Result<Principal, AppError> {
        let authorization = headers.get("authorization")?;
        let api_key = headers.get(&self.api_key_header)?;
        let cfg = AuthConfig {
            enabled: self.enabled,
            jwt_secret: self.jwt_secret.as_bytes(),
            api_keys: &self.api_keys,
        };
        let creds = Credentials {
            authorization: authorization.as_deref(),
            query_token,
            api_key: api_key.as_deref(),
        };
        let now_s = Date::now().as_millis() / 1000;
        Ok(authenticate(&cfg, &creds, now_s)?)
    }
}
