//! The router: the rows of the route catalogue behind one auth gate, with the `/info` cache,
//! the fallbacks, panic catching and tracing.

use std::sync::Arc;
use std::time::Duration;

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
    let api = device_groups::with_info_cache(api, options.info_cache)
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
        .layer(middleware::from_fn(crate::error::render_errors));
    with_request_spans(api).with_state(state)
}

/// One `request` span per call, at INFO: `method`, `path` (the matched route, such as
/// `/api/v2/apps/{app}`, never the raw URI; `unmatched` when no route matched), then `status`
/// and `latency_ms` when the reply is ready, with one `request done` event carrying them.
/// Everything a handler logs is inside the span; failures are logged once, by
/// [`crate::error::render_errors`].
fn with_request_spans(api: Router<ApiState>) -> Router<ApiState> {
    let layer = tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            let path = request
                .extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str);
            tracing::info_span!(
                "request",
                method = %request.method(),
                path,
                status = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
            )
        })
        .on_request(())
        .on_response(
            |response: &Response, latency: Duration, span: &tracing::Span| {
                span.record("status", response.status().as_u16());
                span.record("latency_ms", latency.as_secs_f64() * 1000.0);
                tracing::info!("request done");
            },
        )
        .on_body_chunk(())
        .on_eos(())
        .on_failure(());
    api.layer(layer)
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use axum::body::Body;
    use nebula_core::testing::InMemoryStore;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    #[tokio::test]
    async fn each_request_has_a_span_with_route_method_status_and_latency_in_the_json_logs() {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(buffer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let api = router(ApiState {
            manager: Manager::new(Arc::new(InMemoryStore::new()), None),
            auth: Arc::new(AuthConfig::default()),
        });
        let request = Request::builder()
            .method("GET")
            .uri("/api/v2/apps/nope")
            .body(Body::empty())
            .unwrap();
        let response = api.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);

        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let done: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|l: &Value| l["fields"]["message"] == "request done")
            .collect();
        assert_eq!(done.len(), 1, "one line per request: {text}");
        let span = &done[0]["span"];
        assert_eq!(span["name"], "request", "{text}");
        assert_eq!(span["method"], "GET");
        assert_eq!(span["path"], "/api/v2/apps/{app}", "the route, not the URI");
        assert_eq!(span["status"], 403);
        assert!(
            span["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
            "{text}"
        );
    }
}
