//! The harness the API tests share: the whole router over an in-memory store, called with
//! `oneshot`, as the local admin (`admin:pw`, token `tok`). A test file adds its own helpers in
//! an `impl Api` of its own.

// Each test file uses its own part of the harness.
#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Request, StatusCode, header};
use base64::Engine;
use nebula_core::manager::Manager;
use nebula_core::store::Store;
use nebula_core::testing::InMemoryStore;
use nebula_http::auth::AuthConfig;
use nebula_http::{ApiState, RouterOptions, router_with};
use serde_json::Value;
use tower::ServiceExt;

/// The router over a fresh in-memory store.
pub(crate) struct Api {
    /// The router.
    pub(crate) app: axum::Router,
    /// A second manager on the same store: writes that bypass this API process.
    pub(crate) elsewhere: Manager,
}

/// A whole reply.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// The JSON body (`Null` when empty or not JSON).
    pub(crate) body: Value,
    /// The body's length in bytes.
    pub(crate) raw_len: usize,
}

/// The local admin's Basic header.
pub(crate) fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin:pw")
    )
}

impl Api {
    /// A router over a fresh in-memory store, auth on, default options.
    pub(crate) fn new() -> Self {
        Self::with_options(RouterOptions::default())
    }

    /// A router over a fresh in-memory store, auth on, with `options`.
    pub(crate) fn with_options(options: RouterOptions) -> Self {
        let auth = AuthConfig {
            enabled: true,
            user: Some("admin".into()),
            password: Some("pw".into()),
            token: Some("tok".into()),
        };
        let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
        Self {
            app: router_with(
                ApiState {
                    manager: Manager::new(store.clone(), None),
                    auth: Arc::new(auth),
                },
                options,
            ),
            elsewhere: Manager::new(store, None),
        }
    }

    /// One call with a JSON body and `headers`.
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(HeaderName, &str)],
    ) -> Reply {
        let body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        self.send(method, path, headers, body).await
    }

    /// One call with raw body bytes and `headers`.
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(HeaderName, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            req = req.header(k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            raw_len: bytes.len(),
        }
    }

    /// One call: status and JSON body, with `auth` as the `Authorization` header.
    pub(crate) async fn raw(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let headers: Vec<(HeaderName, &str)> = auth
            .map(|a| (header::AUTHORIZATION, a))
            .into_iter()
            .collect();
        let r = self.send(method, path, &headers, body).await;
        (r.status, r.body)
    }

    /// One call as the local admin.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let auth = basic();
        let r = self
            .request(method, path, body, &[(header::AUTHORIZATION, &auth)])
            .await;
        (r.status, r.body)
    }
}
