//! Nebula's REST API and the client workers use to sync from it.
//!
//! Start with [`router`]: the v1 routes under `/api` and the v2 routes under `/api/v2`, behind
//! [`auth::AuthConfig`]. [`client::HttpSource`] is the worker's side: a
//! [`nebula_core::worker::DesiredSource`] over HTTP.
//!
//! This crate is the only one that knows the JSON shapes of requests and errors; the app
//! document itself is [`nebula_core::model::App`].

pub mod auth;
pub mod client;
mod dto;
mod error;
pub mod openapi;
mod routes;
mod state;

pub use error::ApiError;
pub use routes::{InfoCacheConfig, ReportsConfig, RouterOptions, router, router_with};
pub use state::ApiState;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
