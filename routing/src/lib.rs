//! Pure logic of the animation gateway: routes, names, subscriptions, the wire
//! protocol and each character's hub state machine. No clock, randomness or
//! I/O lives here; the Worker shell passes time and ids in and applies the
//! effects the hub returns.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod alarm;
pub mod animator;
pub mod archive;
pub mod attachment;
pub mod auth;
pub mod backoff;
pub mod catalogue;
pub mod events;
pub mod hub;
pub mod lease;
pub mod logbuf;
pub mod protocol;
pub mod query;
pub mod reader;
pub mod relay;
pub mod relays;
pub mod retained;
pub mod revocation;
pub mod route;
pub mod scene;
pub mod scene_feeds;
pub mod scene_hub;
pub mod schedule;
pub mod settings;
pub mod subscriptions;
pub mod tally;
pub mod tasks;
pub mod topic;
pub mod wire;
