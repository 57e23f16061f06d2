//! The handlers: v1 under `/api`, v2 under `/api/v2`, with the original's status codes and
//! reply shapes in each dialect. The route catalogue ([`crate::catalogue::ROUTES`]) says which
//! handler serves which route.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nebula_core::manager::{AppCommand, Manager, ManagerError, Touched};
use nebula_core::model::{App, AppName};
use serde_json::{Value, json};

use crate::dto::{self, Mode};
use crate::error::{ApiError, Dialect};
use crate::state::ApiState;
use device_groups::touching;

pub(crate) mod cron_jobs;
pub(crate) mod device_groups;
pub(crate) mod reports;
pub(crate) mod users;

pub use device_groups::InfoCacheConfig;
pub use reports::ReportsConfig;

/// A JSON body, bounded, with errors in the API's own shape.
pub(crate) struct Body(serde_json::Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::to_bytes(req.into_body(), crate::MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::TooLarge)?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(serde_json::Map::new()));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            nebula_core::validate::FieldError::new("body", format!("must be JSON: {e}"))
        })?;
        dto::object(value).map(Self)
    }
}

/// What a handler answers: a reply, or an [`ApiError`] the router renders in the route's
/// dialect.
pub(crate) type Reply = Result<Response, ApiError>;

fn doc(app: &App, command: Option<&str>) -> Value {
    let mut value = serde_json::to_value(app).unwrap_or(Value::Null);
    if let (Some(cmd), Value::Object(map)) = (command, &mut value) {
        map.insert("command".into(), Value::String(cmd.into()));
    }
    value
}

pub(crate) async fn status(
    Extension(dialect): Extension<Dialect>,
    State(state): State<ApiState>,
) -> Response {
    let store_ok = state.manager.list_apps().await.is_ok();
    let code = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({ "api_available": dialect.flag(store_ok) })),
    )
        .into_response()
}

pub(crate) async fn list_apps(State(state): State<ApiState>) -> Reply {
    let apps = state.manager.list_apps().await?;
    Ok(Json(json!({ "apps": apps })).into_response())
}

pub(crate) async fn get_app(State(state): State<ApiState>, Path(app): Path<String>) -> Reply {
    let name = AppName::parse(&app)?;
    let app = state.manager.get_app(&name).await?;
    Ok(Json(doc(&app, None)).into_response())
}

pub(crate) async fn create_app(
    Extension(d): Extension<Dialect>,
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Body(body): Body,
) -> Reply {
    let name = AppName::parse(&app)?;
    let mode = if d == Dialect::V1 {
        Mode::V1Full
    } else {
        Mode::V2Full
    };
    let spec = dto::spec(&body, mode)?;
    let created = state.manager.create_app_touched(name, spec).await?;
    let code = if d == Dialect::V1 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(touching(
        (code, Json(doc(&created.value, None))),
        created.device_groups,
    ))
}

pub(crate) async fn delete_app(
    Extension(d): Extension<Dialect>,
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    let name = AppName::parse(&app)?;
    let deleted = state.manager.delete_app_touched(&name).await?;
    let code = if d == Dialect::V1 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(touching((code, Json(json!({}))), deleted.device_groups))
}

/// Runs one app command and answers 202 with the new document (v1 adds `command`), telling
/// the `/info` cache the groups that list the app.
async fn command<F, Fut>(d: Dialect, state: &ApiState, app: &str, cmd: &str, run: F) -> Reply
where
    F: FnOnce(Manager, AppName) -> Fut,
    Fut: std::future::Future<Output = Result<Touched<App>, ManagerError>>,
{
    let name = AppName::parse(app)?;
    let changed = run(state.manager.clone(), name).await?;
    let command = (d == Dialect::V1).then_some(cmd);
    Ok(touching(
        (StatusCode::ACCEPTED, Json(doc(&changed.value, command))),
        changed.device_groups,
    ))
}

pub(crate) async fn stop(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    command(d, &s, &app, "stop", |m, n| async move {
        m.change_app(&n, AppCommand::Stop).await
    })
    .await
}

pub(crate) async fn start(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    command(d, &s, &app, "start", |m, n| async move {
        m.change_app(&n, AppCommand::Start).await
    })
    .await
}

pub(crate) async fn restart(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    command(d, &s, &app, "restart", |m, n| async move {
        m.change_app(&n, AppCommand::Restart { rolling: false })
            .await
    })
    .await
}

pub(crate) async fn roll(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    command(d, &s, &app, "roll", |m, n| async move {
        m.change_app(&n, AppCommand::Restart { rolling: true })
            .await
    })
    .await
}

pub(crate) async fn release(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    // The original's legacy release is a restart without the running check.
    command(d, &s, &app, "release", |m, n| async move {
        match m
            .change_app(&n, AppCommand::Restart { rolling: false })
            .await
        {
            Err(ManagerError::NotRunning) => m.change_app(&n, AppCommand::Start).await,
            other => other,
        }
    })
    .await
}

pub(crate) async fn prune(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    command(d, &s, &app, "prune", |m, n| async move {
        m.change_app(&n, AppCommand::Prune).await
    })
    .await
}

pub(crate) async fn update_full(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
    Body(body): Body,
) -> Reply {
    let mode = if d == Dialect::V1 {
        Mode::V1Full
    } else {
        Mode::V2Full
    };
    let spec = dto::spec(&body, mode)?;
    command(d, &s, &app, "update", |m, n| async move {
        m.change_app(&n, AppCommand::Update(spec)).await
    })
    .await
}

pub(crate) async fn update_patch(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
    Body(body): Body,
) -> Reply {
    if body.is_empty() {
        return Err(ApiError::NothingToChange);
    }
    let patch = dto::patch(&body)?;
    command(d, &s, &app, "update", |m, n| async move {
        m.change_app(&n, AppCommand::Patch(patch)).await
    })
    .await
}
