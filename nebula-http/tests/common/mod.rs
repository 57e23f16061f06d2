//! The harness the API tests share: the whole router over an in-memory store, called with
//! `oneshot`, as the local admin (`admin:pw`, token `tok`).

// Each test file uses its own part of the harness.
#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use nebula_core::manager::Manager;
use nebula_core::testing::InMemoryStore;
use nebula_http::auth::AuthConfig;
use nebula_http::{ApiState, router};
use serde_json::Value;
use tower::ServiceExt;

/// The router over a fresh in-memory store.
pub(crate) struct Api {
    /// The router.
    pub(crate) app: axum::Router,
}

/// The local admin's Basic header.
pub(crate) fn basic() -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin:pw")
    )
}

impl Api {
    /// A router over a fresh in-memory store, auth on.
    pub(crate) fn new() -> Self {
        let auth = AuthConfig {
            enabled: true,
            user: Some("admin".into()),
            password: Some("pw".into()),
            token: Some("tok".into()),
        };
        let manager = Manager::new(Arc::new(InMemoryStore::new()), None);
        Self {
            app: router(ApiState {
                manager,
                auth: Arc::new(auth),
            }),
        }
    }

    /// One call: status and JSON body (`Null` when empty or not JSON).
    pub(crate) async fn raw(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        (status, value)
    }

    /// One call as the local admin.
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        self.raw(method, path, Some(&basic()), body).await
    }
}
