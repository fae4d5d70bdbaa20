//! Credentials to a `Principal`: reads the configuration and the request's
//! headers and hands them to the pure policy in `routing::auth`. Every
//! failure is one `401` or `403` with the contract's body. Also the other
//! access settings of the router (`CORS_ORIGINS`, `ALLOWED_ORIGINS`), parsed
//! strictly by `routing::settings`: a bad value refuses every request.

use std::cell::RefCell;
use std::rc::Rc;

use routing::auth::{authenticate, AuthConfig, Credentials, Principal};
use routing::settings::{auth_enabled, ConfigError, Origins};
use worker::{Date, Env, Headers};

use crate::config::{secret, var};
use crate::error::AppError;

pub struct Auth {
    enabled: bool,
    jwt_secret: String,
    api_keys: String,
    pub api_key_header: String,
    /// `CORS_ORIGINS`: who may call the HTTP API from a browser.
    pub cors: Option<Origins>,
    /// `ALLOWED_ORIGINS`: which browser pages may open a subscription.
    pub socket_origins: Option<Origins>,
}

type Settings = Result<Rc<Auth>, ConfigError>;

thread_local! {
    static CACHED: RefCell<Option<Settings>> = const { RefCell::new(None) };
}

impl Auth {
    /// The settings, read once per isolate (vars and secrets are fixed for a
    /// deployment), or the configuration error that refuses every request.
    pub fn cached(env: &Env) -> Settings {
        CACHED.with(|c| {
            c.borrow_mut()
                .get_or_insert_with(|| Self::from_env(env).map(Rc::new))
                .clone()
        })
    }

    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            enabled: auth_enabled(var(env, "AUTH_ENABLED").as_deref())?,
            jwt_secret: secret(env, "JWT_SECRET").unwrap_or_default(),
            api_keys: secret(env, "API_KEYS").unwrap_or_default(),
            api_key_header: var(env, "API_KEY_HEADER")
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| "X-API-Key".to_string()),
            cors: Origins::parse("CORS_ORIGINS", var(env, "CORS_ORIGINS").as_deref())?,
            socket_origins: Origins::parse(
                "ALLOWED_ORIGINS",
                var(env, "ALLOWED_ORIGINS").as_deref(),
            )?,
        })
    }

    /// Who is calling. `query_token` is the `?token=` of a subscribe URL.
    pub fn principal(
        &self,
        headers: &Headers,
        query_token: Option<&str>,
    ) -> Result<Principal, AppError> {
        if !self.enabled {
            return Ok(Principal::Anonymous);
        }
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
