//! The handlers: v1 under `/api`, v2 under `/api/v2`, with the original's status codes and
//! reply shapes in each dialect. The route catalogue ([`crate::catalogue::ROUTES`]) says which
//! handler serves which route.

// Handlers answer errors as ready responses; their size is irrelevant next to the I/O.
#![allow(clippy::result_large_err)]

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use nebula_core::manager::Manager;
use nebula_core::model::{App, AppName};
use serde_json::{Value, json};

use crate::dto::{self, Mode};
use crate::error::{ApiError, Dialect};
use crate::state::ApiState;

pub(crate) mod cron_jobs;
pub(crate) mod device_groups;
pub(crate) mod reports;
pub(crate) mod users;

pub use device_groups::InfoCacheConfig;
pub use reports::ReportsConfig;

/// A JSON body, bounded, with errors in the API's own shape.
pub(crate) struct Body(serde_json::Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = Response;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let dialect = req
            .extensions()
            .get::<Dialect>()
            .copied()
            .unwrap_or(Dialect::V2);
        let bytes = axum::body::to_bytes(req.into_body(), crate::MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::TooLarge.render(dialect))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(serde_json::Map::new()));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::from(nebula_core::validate::FieldError::new(
                "body",
                format!("must be JSON: {e}"),
            ))
            .render(dialect)
        })?;
        dto::object(value).map(Self).map_err(|e| e.render(dialect))
    }
}

pub(crate) type Reply = Result<Response, Response>;

fn fail(dialect: Dialect) -> impl Fn(ApiError) -> Response {
    move |e| e.render(dialect)
}

fn app_name(raw: &str, dialect: Dialect) -> Result<AppName, Response> {
    AppName::parse(raw).map_err(|e| ApiError::from(e).render(dialect))
}

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

pub(crate) async fn list_apps(
    Extension(dialect): Extension<Dialect>,
    State(state): State<ApiState>,
) -> Reply {
    let apps = state
        .manager
        .list_apps()
        .await
        .map_err(|e| ApiError::from(e).render(dialect))?;
    Ok(Json(json!({ "apps": apps })).into_response())
}

pub(crate) async fn get_app(
    Extension(d): Extension<Dialect>,
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    let name = app_name(&app, d)?;
    let app = state
        .manager
        .get_app(&name)
        .await
        .map_err(|e| ApiError::from(e).render(d))?;
    Ok(Json(doc(&app, None)).into_response())
}

pub(crate) async fn create_app(
    Extension(d): Extension<Dialect>,
    State(state): State<ApiState>,
    Path(app): Path<String>,
    Body(body): Body,
) -> Reply {
    let name = app_name(&app, d)?;
    let mode = if d == Dialect::V1 {
        Mode::V1Full
    } else {
        Mode::V2Full
    };
    let spec = dto::spec(&body, mode).map_err(fail(d))?;
    let app = state
        .manager
        .create_app(name, spec)
        .await
        .map_err(|e| ApiError::from(e).render(d))?;
    let code = if d == Dialect::V1 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(doc(&app, None))).into_response())
}

pub(crate) async fn delete_app(
    Extension(d): Extension<Dialect>,
    State(state): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    let name = app_name(&app, d)?;
    state
        .manager
        .delete_app(&name)
        .await
        .map_err(|e| ApiError::from(e).render(d))?;
    let code = if d == Dialect::V1 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(json!({}))).into_response())
}

/// Runs one app command and answers 202 with the new document (v1 adds `command`).
async fn command<F, Fut>(d: Dialect, state: &ApiState, app: &str, cmd: &str, run: F) -> Reply
where
    F: FnOnce(Manager, AppName) -> Fut,
    Fut: std::future::Future<Output = Result<App, nebula_core::manager::ManagerError>>,
{
    let name = app_name(app, d)?;
    let app = run(state.manager.clone(), name)
        .await
        .map_err(|e| ApiError::from(e).render(d))?;
    let command = (d == Dialect::V1).then_some(cmd);
    Ok((StatusCode::ACCEPTED, Json(doc(&app, command))).into_response())
}

pub(crate) async fn stop(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    command(
        d,
        &s,
        &app,
        "stop",
        |m, n| async move { m.stop_app(&n).await },
    )
    .await
}

pub(crate) async fn start(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    command(
        d,
        &s,
        &app,
        "start",
        |m, n| async move { m.start_app(&n).await },
    )
    .await
}

pub(crate) async fn restart(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    command(d, &s, &app, "restart", |m, n| async move {
        m.restart_app(&n, false).await
    })
    .await
}

pub(crate) async fn roll(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    command(d, &s, &app, "roll", |m, n| async move {
        m.restart_app(&n, true).await
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
        match m.restart_app(&n, false).await {
            Err(nebula_core::manager::ManagerError::NotRunning) => m.start_app(&n).await,
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
    command(
        d,
        &s,
        &app,
        "prune",
        |m, n| async move { m.prune_app(&n).await },
    )
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
    let spec = dto::spec(&body, mode).map_err(fail(d))?;
    command(d, &s, &app, "update", |m, n| async move {
        m.update_app(&n, spec).await
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
        return Err((
            StatusCode::BAD_REQUEST,
            Json(json!({ "missing_parameters": d.flag(true) })),
        )
            .into_response());
    }
    let patch = dto::patch(&body).map_err(fail(d))?;
    command(d, &s, &app, "update", |m, n| async move {
        m.patch_app(&n, patch).await
    })
    .await
}
