//! The routes: v1 under `/api`, v2 under `/api/v2`, with the original's status codes and
//! reply shapes in each dialect.

// Handlers answer errors as ready responses; their size is irrelevant next to the I/O.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use nebula_core::manager::Manager;
use nebula_core::model::{App, AppName};
use serde_json::{Value, json};

use crate::auth::{Authenticator, Gate};
use crate::dto::{self, Mode};
use crate::error::{ApiError, Dialect};
use crate::state::ApiState;

mod cron_jobs;
mod device_groups;
mod reports;
mod users;

pub use device_groups::InfoCacheConfig;
pub use reports::ReportsConfig;

/// Knobs of the API beyond its state.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RouterOptions {
    /// The per-process cache of device group `/info` replies.
    pub info_cache: InfoCacheConfig,
    /// Checks users' credentials and hashes new ones (its bcrypt cost); one per process.
    pub authenticator: Arc<Authenticator>,
    /// How long worker reports are kept.
    pub reports: ReportsConfig,
}

/// The whole API: `/api/...` (v1) and `/api/v2/...` (v2), with the default options.
pub fn router(state: ApiState) -> Router {
    router_with(state, RouterOptions::default())
}

/// The whole API with `options`.
pub fn router_with(state: ApiState, options: RouterOptions) -> Router {
    let authenticator = options.authenticator;
    let v1 = Router::new()
        .route("/status", get(status))
        .route("/apps", get(list_apps))
        .route(
            "/apps/{app}",
            get(get_app).post(create_app).delete(delete_app),
        )
        .route("/apps/{app}/stop", post(stop))
        .route("/apps/{app}/start", post(start))
        .route("/apps/{app}/restart", post(restart))
        .route("/apps/{app}/roll", post(roll))
        .route("/apps/{app}/release", post(release))
        .route("/apps/{app}/prune", post(prune))
        .route(
            "/apps/{app}/update",
            post(update_full).put(update_patch).patch(update_patch),
        )
        .route("/openapi.json", get(crate::openapi::serve))
        .layer(Extension(Dialect::V1));
    let v2 = Router::new()
        .route("/status", get(status))
        .route("/apps", get(list_apps))
        .route(
            "/apps/{app}",
            get(get_app).post(create_app).delete(delete_app),
        )
        .route("/apps/{app}/stop", post(stop))
        .route("/apps/{app}/start", post(start))
        .route("/apps/{app}/restart", post(restart))
        .route(
            "/apps/{app}/update",
            post(update_full).put(update_patch).patch(update_patch),
        )
        .merge(cron_jobs::routes())
        .merge(device_groups::routes())
        .merge(reports::routes(options.reports))
        .merge(users::routes())
        .route("/openapi.json", get(crate::openapi::serve))
        .layer(Extension(Dialect::V2));
    let gate = Gate {
        auth: state.auth.clone(),
        manager: state.manager.clone(),
        authenticator: authenticator.clone(),
    };
    // Every route is added above: the gate authenticates every call and authorizes each route
    // by `auth::ROUTE_RULES`.
    let api = Router::new().nest("/api/v2", v2).nest("/api", v1);
    device_groups::with_info_cache(api, options.info_cache)
        .layer(Extension(authenticator))
        .layer(middleware::from_fn_with_state(gate, crate::auth::gate))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(json!({"error": "method not allowed on this route"})),
            )
        })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// A JSON body, bounded, with errors in the API's own shape.
struct Body(serde_json::Map<String, Value>);

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

type Reply = Result<Response, Response>;

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

async fn status(Extension(dialect): Extension<Dialect>, State(state): State<ApiState>) -> Response {
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

async fn list_apps(Extension(dialect): Extension<Dialect>, State(state): State<ApiState>) -> Reply {
    let apps = state
        .manager
        .list_apps()
        .await
        .map_err(|e| ApiError::from(e).render(dialect))?;
    Ok(Json(json!({ "apps": apps })).into_response())
}

async fn get_app(
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

async fn create_app(
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

async fn delete_app(
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

async fn stop(
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

async fn start(
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

async fn restart(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    command(d, &s, &app, "restart", |m, n| async move {
        m.restart_app(&n, false).await
    })
    .await
}

async fn roll(
    Extension(d): Extension<Dialect>,
    State(s): State<ApiState>,
    Path(app): Path<String>,
) -> Reply {
    command(d, &s, &app, "roll", |m, n| async move {
        m.restart_app(&n, true).await
    })
    .await
}

async fn release(
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

async fn prune(
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

async fn update_full(
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

async fn update_patch(
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
