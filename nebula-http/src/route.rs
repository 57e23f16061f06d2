//! The row type of the route catalogue ([`crate::catalogue::ROUTES`]): what one route is.

use axum::routing::{MethodFilter, MethodRouter};

use crate::auth::Rule;
use crate::state::ApiState;

/// Builds a route's method router for a method filter: `|f| axum::routing::on(f, handler)`.
pub(crate) type Handler = fn(MethodFilter) -> MethodRouter<ApiState>;

/// One route of the API: what the router, the auth gate and the OpenAPI document know of it.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// The HTTP method (`GET`, `POST`, `PUT`, `PATCH`, `DELETE`).
    pub method: &'static str,
    /// The route, as the router declares it (`/api/v2/apps/{app}`).
    pub path: &'static str,
    /// What the caller needs; the gate checks it before the handler runs.
    pub rule: Rule,
    /// The handler.
    pub(crate) handler: Handler,
    /// Its OpenAPI operation.
    pub(crate) doc: Operation,
}

impl Route {
    /// The router's method filter of [`Self::method`].
    ///
    /// # Panics
    /// On a method the catalogue does not use (a test covers every row).
    pub(crate) fn method_filter(&self) -> MethodFilter {
        match self.method {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "PATCH" => MethodFilter::PATCH,
            "DELETE" => MethodFilter::DELETE,
            other => panic!("route {} has the unknown method {other}", self.path),
        }
    }

    /// The API dialect of the route: v2 under `/api/v2/`, v1 otherwise.
    pub(crate) fn is_v1(&self) -> bool {
        !self.path.starts_with("/api/v2/")
    }
}

/// A catalogue row.
pub(crate) const fn route(
    method: &'static str,
    path: &'static str,
    rule: Rule,
    handler: Handler,
    doc: Operation,
) -> Route {
    Route {
        method,
        path,
        rule,
        handler,
        doc,
    }
}

/// What a reply carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Out {
    /// A JSON body of the named component schema.
    Schema(&'static str),
    /// `{"<key>": <flag>}`: a boolean on v2 routes, `"True"`/`"False"` on v1 routes.
    Flag(&'static str, bool),
    /// No body.
    Nothing,
}

/// A route's OpenAPI operation, beyond what every operation gets (see [`crate::openapi`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operation {
    /// One line.
    pub(crate) summary: &'static str,
    /// More, in Markdown.
    pub(crate) description: &'static str,
    /// The component schema of the request body, if it takes one.
    pub(crate) body: Option<&'static str>,
    /// The success status and body.
    pub(crate) ok: (u16, Out),
    /// The other replies of this route, beyond those every route gets.
    pub(crate) errors: &'static [(u16, Out)],
}

/// An operation: summary; description; request body, success, other replies.
pub(crate) const fn op(
    summary: &'static str,
    description: &'static str,
    body: Option<&'static str>,
    ok: (u16, Out),
    errors: &'static [(u16, Out)],
) -> Operation {
    Operation {
        summary,
        description,
        body,
        ok,
        errors,
    }
}

/// A [`Handler`] for an axum handler function.
macro_rules! handler {
    ($f:path) => {
        |filter| axum::routing::on(filter, $f)
    };
}
pub(crate) use handler;
