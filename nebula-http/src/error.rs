//! API errors and their JSON bodies, in the v1 (string flags) or v2 (boolean flags) dialect.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nebula_core::manager::ManagerError;
use nebula_core::store::StoreError;
use nebula_core::users::UsersError;
use nebula_core::validate::FieldError;
use serde_json::{Map, Value, json};

/// Which API dialect a reply speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `/api`: flags are the strings "True"/"False".
    V1,
    /// `/api/v2`: flags are booleans.
    V2,
}

impl Dialect {
    pub(crate) fn flag(self, b: bool) -> Value {
        match self {
            Self::V1 => Value::String(if b { "True" } else { "False" }.into()),
            Self::V2 => Value::Bool(b),
        }
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum ApiError {
    /// Fields broke rules (400, naming each field).
    Invalid(Vec<FieldError>),
    /// Required fields are absent (400 `missing_parameters`).
    Missing(Vec<String>),
    /// The app exists (403 `app_exists: true`).
    AppExists,
    /// The app does not exist (403 `app_exists: false`).
    AppNotFound,
    /// Restart of a stopped app (403 `running_before_restart: false`).
    NotRunning,
    /// No or bad credentials (401).
    Unauthorized,
    /// The caller may not do this (403 `access_allowed: false`).
    AccessDenied,
    /// An object exists, or does not, against the request (403 `{"<key>": <exists>}`, e.g.
    /// `user_exists`, `user_group_exists`).
    Exists {
        /// The reply's key.
        key: &'static str,
        /// Whether the object exists.
        exists: bool,
    },
    /// The body is too large (413).
    TooLarge,
    /// Concurrent writers kept winning (409).
    Contended,
    /// No such route (404).
    NoRoute,
    /// The store is down (503).
    Unavailable,
    /// A bug or corrupt data (500).
    Internal(String),
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::AppExists => Self::AppExists,
            ManagerError::AppNotFound => Self::AppNotFound,
            ManagerError::NotRunning => Self::NotRunning,
            ManagerError::Invalid(errors) => Self::Invalid(errors),
            ManagerError::Contended => Self::Contended,
            ManagerError::Store(StoreError::Unavailable(_)) => Self::Unavailable,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<UsersError> for ApiError {
    fn from(e: UsersError) -> Self {
        let exists = |key, exists| Self::Exists { key, exists };
        match e {
            UsersError::UserExists => exists("user_exists", true),
            UsersError::UserNotFound => exists("user_exists", false),
            UsersError::UserGroupExists => exists("user_group_exists", true),
            UsersError::UserGroupNotFound => exists("user_group_exists", false),
            UsersError::Invalid(errors) => Self::Invalid(errors),
            UsersError::Contended => Self::Contended,
            UsersError::Store(StoreError::Unavailable(_)) => Self::Unavailable,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::Invalid(vec![e])
    }
}

impl ApiError {
    pub(crate) fn render(self, dialect: Dialect) -> Response {
        let (status, body) = match self {
            Self::Invalid(errors) => {
                let mut body = Map::new();
                for e in &errors {
                    body.entry(e.field.clone())
                        .or_insert_with(|| Value::String(e.rule.clone()));
                }
                let list: Vec<Value> = errors
                    .iter()
                    .map(|e| json!({"field": e.field, "rule": e.rule}))
                    .collect();
                body.insert("errors".into(), Value::Array(list));
                (StatusCode::BAD_REQUEST, Value::Object(body))
            }
            Self::Missing(fields) => (
                StatusCode::BAD_REQUEST,
                json!({ "missing_parameters": fields }),
            ),
            Self::AppExists => (
                StatusCode::FORBIDDEN,
                json!({ "app_exists": dialect.flag(true) }),
            ),
            Self::AppNotFound => (
                StatusCode::FORBIDDEN,
                json!({ "app_exists": dialect.flag(false) }),
            ),
            Self::NotRunning => (
                StatusCode::FORBIDDEN,
                json!({ "running_before_restart": dialect.flag(false) }),
            ),
            Self::AccessDenied => (
                StatusCode::FORBIDDEN,
                json!({ "access_allowed": dialect.flag(false) }),
            ),
            Self::Exists { key, exists } => {
                (StatusCode::FORBIDDEN, json!({ key: dialect.flag(exists) }))
            }
            Self::Unauthorized => {
                let mut r = (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "unauthorized"})),
                )
                    .into_response();
                r.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Basic realm=\"nebula\""),
                );
                return r;
            }
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": format!("body must be at most {} bytes", crate::MAX_BODY_BYTES)}),
            ),
            Self::Contended => (
                StatusCode::CONFLICT,
                json!({"error": "too many concurrent changes to this app; retry"}),
            ),
            Self::NoRoute => (StatusCode::NOT_FOUND, json!({"error": "no such route"})),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "store unavailable; retry"}),
            ),
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "internal error"}),
                )
            }
        };
        (status, axum::Json(body)).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.render(Dialect::V2)
    }
}
