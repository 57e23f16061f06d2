//! The router: the rows of the route catalogue behind one auth gate, with the `/info` cache,
//! the fallbacks, panic catching and tracing.

use std::sync::Arc;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use nebula_core::manager::Manager;
use serde_json::json;

use crate::auth::{AuthConfig, Authenticator};
use crate::catalogue::{ROUTES, rule_of};
use crate::error::{ApiError, Dialect};
use crate::routes::device_groups::{self, InfoCacheConfig};
use crate::routes::reports::ReportsConfig;
use crate::state::ApiState;

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

/// The whole API with `options`: every row of [`crate::catalogue::ROUTES`].
pub fn router_with(state: ApiState, options: RouterOptions) -> Router {
    let authenticator = options.authenticator;
    let mut api = Router::new();
    for route in ROUTES {
        let dialect = if route.is_v1() {
            Dialect::V1
        } else {
            Dialect::V2
        };
        // Rows of one path merge into one method router.
        api = api.route(
            route.path,
            (route.handler)(route.method_filter()).layer(Extension(dialect)),
        );
    }
    let gate = Gate {
        auth: state.auth.clone(),
        manager: state.manager.clone(),
        authenticator: authenticator.clone(),
    };
    // The gate authenticates every call and authorizes each route by its catalogue rule.
    device_groups::with_info_cache(api, options.info_cache)
        .layer(Extension(options.reports))
        .layer(Extension(authenticator))
        .layer(middleware::from_fn_with_state(gate, self::gate))
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
        .layer(middleware::from_fn(crate::error::render_errors))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

/// What the gate needs.
#[derive(Clone, Debug)]
struct Gate {
    /// Who may call.
    auth: Arc<AuthConfig>,
    /// The manager, to read users.
    manager: Manager,
    /// Checks users' credentials.
    authenticator: Arc<Authenticator>,
}

/// The gate in front of every route: authenticates (401), then authorizes by the route's rule
/// (403 `{"access_allowed": false}`), and hands the
/// [`Principal`](nebula_core::users::Principal) to the handler.
async fn gate(
    State(gate): State<Gate>,
    matched: Option<MatchedPath>,
    params: Result<RawPathParams, axum::extract::rejection::RawPathParamsRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = match gate
        .authenticator
        .principal(&gate.auth, &gate.manager, request.headers())
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => return ApiError::Unauthorized.into_response(),
        Err(e) => return e.into_response(),
    };
    if let Some(matched) = matched {
        let path = matched.as_str();
        match rule_of(request.method().as_str(), path) {
            Ok(Some(rule)) => {
                let allowed = match &params {
                    Ok(params) => rule.allows(&principal, params.iter()),
                    Err(_) => rule.allows(&principal, std::iter::empty()),
                };
                if !allowed {
                    tracing::info!(user = principal.user_name(), method = %request.method(), route = path, "access denied");
                    return ApiError::AccessDenied.into_response();
                }
            }
            Ok(None) => {}
            Err(()) => {
                // Not reached: the router serves the catalogue's rows only.
                return ApiError::Internal(format!("route {path} has no authorization rule"))
                    .into_response();
            }
        }
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}
