//! Nebula's REST API and the client workers use to sync from it.
//!
//! Start with [`router`]: the v1 routes under `/api` and the v2 routes under `/api/v2`, behind
//! [`auth::AuthConfig`]. [`client::HttpSource`] is the worker's side: a
//! [`nebula_core::worker::DesiredSource`] over HTTP.
//!
//! This crate is the only one that knows the JSON shapes of requests and errors; the app
//! document itself is [`nebula_core::model::App`].
//!
//! Every route is one row of the route catalogue, [`catalogue::ROUTES`]: method, path, the
//! [`auth::Rule`] its caller needs, its handler and its OpenAPI operation. The router, the auth
//! gate and the OpenAPI document ([`catalogue::document`]) are all built from those rows, so a
//! route cannot be served without a rule or a description.
//!
//! # Adding a route
//!
//! 1. Write the handler in `routes` (or a file of `routes/`): an axum handler returning a
//!    response or an [`ApiError`].
//! 2. Add one row to [`catalogue::ROUTES`]: method, path, rule, `handler!(...)` and its
//!    operation (summary, description, request body schema, success and other replies).
//! 3. If it takes a new body or answers a new shape, add its component schema to
//!    `openapi.rs`.
//! 4. Give it an expectation in the authorization matrix of `tests/authz.rs` (which fails until
//!    it has one); `tests/openapi.rs` then calls it and checks its replies against the document.

pub mod auth;
pub mod catalogue;
pub mod client;
mod dto;
mod error;
pub mod openapi;
mod route;
mod router;
mod routes;
mod state;
mod ttl_cache;

pub use error::ApiError;
pub use router::{RouterOptions, router, router_with};
pub use routes::{InfoCacheConfig, ReportsConfig};
pub use state::ApiState;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
