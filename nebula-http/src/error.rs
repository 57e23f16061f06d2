//! API errors and their JSON bodies, in the v1 (string flags) or v2 (boolean flags) dialect.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nebula_core::cron_job::CronJobError;
use nebula_core::device_group::DeviceGroupError;
use nebula_core::manager::ManagerError;
use nebula_core::report::ReportError;
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
    /// The dialect of a request path: v2 under `/api/v2/`, v1 otherwise.
    pub(crate) fn of_path(path: &str) -> Self {
        if path.starts_with("/api/v2/") {
            Self::V2
        } else {
            Self::V1
        }
    }

    pub(crate) fn flag(self, b: bool) -> Value {
        match self {
            Self::V1 => Value::String(if b { "True" } else { "False" }.into()),
            Self::V2 => Value::Bool(b),
        }
    }
}

/// Why a request failed.
///
/// Its [`IntoResponse`] sets the status and leaves the body to the router's outermost layer
/// ([`render_errors`]), which knows the dialect of the route and logs 5xx details: handlers
/// return `Result<_, ApiError>` and use `?`.
#[derive(Clone, Debug)]
pub enum ApiError {
    /// Fields broke rules (400, naming each field).
    Invalid(Vec<FieldError>),
    /// A cron job's fields broke rules: as [`Self::Invalid`], with `schedule_valid: false`
    /// when the schedule is one of them.
    CronJobInvalid(Vec<FieldError>),
    /// Required fields are absent (400 `missing_parameters`).
    Missing(Vec<String>),
    /// An update that changes nothing (400 `{"missing_parameters": true}`).
    NothingToChange,
    /// A member list is not a list (400 `{"<key>_is_list": false}`).
    NotAList(&'static str),
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
    /// `user_exists`, `user_group_exists`, `device_group_exists`, `cron_job_exists`).
    Exists {
        /// The reply's key.
        key: &'static str,
        /// Whether the object exists.
        exists: bool,
    },
    /// The body is too large (413).
    TooLarge,
    /// Concurrent writers kept winning (409); names what kind of document ("app", "device
    /// group", "cron job").
    Contended(&'static str),
    /// No such route (404).
    NoRoute,
    /// The store is down (503).
    Unavailable,
    /// A bug or corrupt data (500); the detail is logged, never sent.
    Internal(String),
}

/// An error and its causes, `: `-separated (what a 500 logs).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The store failure of a manager error: 503 when the store is down, 500 otherwise.
fn store_error(e: &StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => ApiError::Unavailable,
        other => ApiError::Internal(chain(other)),
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::AppExists => Self::AppExists,
            ManagerError::AppNotFound => Self::AppNotFound,
            ManagerError::NotRunning => Self::NotRunning,
            ManagerError::Invalid(errors) => Self::Invalid(errors),
            ManagerError::Contended => Self::Contended("app"),
            ManagerError::Store(e) => store_error(&e),
            other => Self::Internal(chain(&other)),
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
            // As the original: the app's wording.
            UsersError::Contended => Self::Contended("app"),
            UsersError::Store(e) => store_error(&e),
            other => Self::Internal(chain(&other)),
        }
    }
}

impl From<DeviceGroupError> for ApiError {
    fn from(e: DeviceGroupError) -> Self {
        let exists = |key, exists| Self::Exists { key, exists };
        match e {
            DeviceGroupError::Exists => exists("device_group_exists", true),
            DeviceGroupError::NotFound => exists("device_group_exists", false),
            DeviceGroupError::AppNotFound(_) => Self::AppNotFound,
            DeviceGroupError::CronJobNotFound(_) => exists("cron_job_exists", false),
            DeviceGroupError::Invalid(errors) => Self::Invalid(errors),
            DeviceGroupError::Contended => Self::Contended("device group"),
            DeviceGroupError::Store(e) => store_error(&e),
            other => Self::Internal(chain(&other)),
        }
    }
}

impl From<CronJobError> for ApiError {
    fn from(e: CronJobError) -> Self {
        let exists = |key, exists| Self::Exists { key, exists };
        match e {
            CronJobError::Exists => exists("cron_job_exists", true),
            CronJobError::NotFound => exists("cron_job_exists", false),
            CronJobError::Invalid(errors) => Self::CronJobInvalid(errors),
            CronJobError::Contended => Self::Contended("cron job"),
            CronJobError::Store(e) => store_error(&e),
            other => Self::Internal(chain(&other)),
        }
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Invalid(errors) => Self::Invalid(errors),
            ReportError::AppNotFound => Self::AppNotFound,
            ReportError::Store(e) => store_error(&e),
            other => Self::Internal(chain(&other)),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::Invalid(vec![e])
    }
}

/// `{"<field>": "<rule>", ..., "errors": [{"field", "rule"}, ...]}`: the first rule of each
/// field, then every error in order.
fn invalid_body(mut body: Map<String, Value>, errors: &[FieldError]) -> Value {
    for e in errors {
        body.entry(e.field.clone())
            .or_insert_with(|| Value::String(e.rule.clone()));
    }
    let list: Vec<Value> = errors
        .iter()
        .map(|e| json!({"field": e.field, "rule": e.rule}))
        .collect();
    body.insert("errors".into(), Value::Array(list));
    Value::Object(body)
}

impl ApiError {
    /// The reply's status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_)
            | Self::CronJobInvalid(_)
            | Self::Missing(_)
            | Self::NothingToChange
            | Self::NotAList(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::AppExists
            | Self::AppNotFound
            | Self::NotRunning
            | Self::AccessDenied
            | Self::Exists { .. } => StatusCode::FORBIDDEN,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Contended(_) => StatusCode::CONFLICT,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The whole reply in `dialect` (pure: logging is [`render_errors`]'s).
    pub(crate) fn render(self, dialect: Dialect) -> Response {
        let (status, body) = match self {
            Self::Invalid(errors) => (StatusCode::BAD_REQUEST, invalid_body(Map::new(), &errors)),
            Self::CronJobInvalid(errors) => {
                let mut body = Map::new();
                if errors.iter().any(|e| e.field == "schedule") {
                    body.insert("schedule_valid".into(), Value::Bool(false));
                }
                (StatusCode::BAD_REQUEST, invalid_body(body, &errors))
            }
            Self::Missing(fields) => (
                StatusCode::BAD_REQUEST,
                json!({ "missing_parameters": fields }),
            ),
            Self::NothingToChange => (
                StatusCode::BAD_REQUEST,
                json!({ "missing_parameters": dialect.flag(true) }),
            ),
            Self::NotAList(key) => (
                StatusCode::BAD_REQUEST,
                json!({ format!("{key}_is_list"): dialect.flag(false) }),
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
            Self::Contended(what) => (
                StatusCode::CONFLICT,
                json!({"error": format!("too many concurrent changes to this {what}; retry")}),
            ),
            Self::NoRoute => (StatusCode::NOT_FOUND, json!({"error": "no such route"})),
            Self::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "store unavailable; retry"}),
            ),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "internal error"}),
            ),
        };
        (status, axum::Json(body)).into_response()
    }
}

/// An error whose body is not written yet: [`render_errors`] writes it.
#[derive(Clone, Debug)]
struct Unrendered(ApiError);

impl IntoResponse for ApiError {
    /// The status, with the error kept for [`render_errors`], which writes the body in the
    /// route's dialect.
    fn into_response(self) -> Response {
        let mut response = self.status().into_response();
        response.extensions_mut().insert(Unrendered(self));
        response
    }
}

/// The router's outermost layer: writes the body of every [`ApiError`] answered inside it in
/// the dialect of the request's path, and logs the detail of each 500 (4xx are not logged).
pub(crate) async fn render_errors(request: Request, next: Next) -> Response {
    let dialect = Dialect::of_path(request.uri().path());
    let mut response = next.run(request).await;
    let Some(Unrendered(error)) = response.extensions_mut().remove::<Unrendered>() else {
        return response;
    };
    if let ApiError::Internal(detail) = &error {
        tracing::error!(error = %detail, "internal error");
    }
    let (mut parts, _) = response.into_parts();
    let (rendered, body) = error.render(dialect).into_parts();
    parts.status = rendered.status;
    parts.headers.extend(rendered.headers);
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_the_rendered_status() {
        let all = [
            ApiError::Invalid(vec![FieldError::new("a", "b")]),
            ApiError::CronJobInvalid(vec![FieldError::new("schedule", "b")]),
            ApiError::Missing(vec!["x".into()]),
            ApiError::NothingToChange,
            ApiError::NotAList("apps"),
            ApiError::AppExists,
            ApiError::AppNotFound,
            ApiError::NotRunning,
            ApiError::Unauthorized,
            ApiError::AccessDenied,
            ApiError::Exists {
                key: "user_exists",
                exists: true,
            },
            ApiError::TooLarge,
            ApiError::Contended("app"),
            ApiError::NoRoute,
            ApiError::Unavailable,
            ApiError::Internal("x".into()),
        ];
        for e in all {
            for d in [Dialect::V1, Dialect::V2] {
                assert_eq!(e.status(), e.clone().render(d).status(), "{e:?}");
            }
        }
    }

    #[test]
    fn a_500_logs_its_causes() {
        let e = StoreError::Corrupt("bad bytes".into());
        let ApiError::Internal(detail) = ApiError::from(ManagerError::Store(e)) else {
            unreachable!()
        };
        assert!(detail.contains("bad bytes"), "{detail}");
    }
}
