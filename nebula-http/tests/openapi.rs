//! The OpenAPI document against the real router: every documented operation is routed, and
//! the replies of every route (successes, missing objects, bad names, bad bodies, refusals,
//! an unavailable store) have a documented status and a body that conforms to the document.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use nebula_core::manager::Manager;
use nebula_core::model::{AppName, AppSpec};
use nebula_core::store::{Collection, Expect, Store, StoreError, Stored};
use nebula_core::testing::InMemoryStore;
use nebula_http::auth::{AuthConfig, Authenticator, MIN_BCRYPT_COST};
use nebula_http::catalogue::ROUTES as ROUTE_RULES;
use nebula_http::{ApiState, RouterOptions, router_with};
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "admin:pw";

fn basic(credentials: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// One reply.
struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

struct Api {
    app: axum::Router,
    manager: Manager,
}

impl Api {
    fn over(store: Arc<dyn Store>) -> Self {
        let manager = Manager::new(store, None);
        let mut options = RouterOptions::default();
        options.authenticator = Arc::new(Authenticator::new(MIN_BCRYPT_COST));
        let app = router_with(
            ApiState {
                manager: manager.clone(),
                auth: Arc::new(AuthConfig {
                    enabled: true,
                    user: Some("admin".into()),
                    password: Some("pw".into()),
                    token: Some("admin-token".into()),
                }),
            },
            options,
        );
        Self { app, manager }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(body.unwrap_or_default())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.call(method, path, Some(&basic(ADMIN)), &[], body)
            .await
    }
}

/// A fresh API holding: apps `site` (running) and `stopped`, cron job `cj`, device group `dg`
/// (both), user `nobody` (no rights, token `nobody-token`), user group `readers`, a report.
async fn fixture() -> Api {
    let api = Api::over(Arc::new(InMemoryStore::new()));
    for name in ["site", "stopped"] {
        api.manager
            .create_app(AppName::parse(name).unwrap(), AppSpec::with_image("nginx"))
            .await
            .unwrap();
    }
    api.manager
        .stop_app(&AppName::parse("stopped").unwrap())
        .await
        .unwrap();
    for (path, body) in [
        (
            "/api/v2/cron_jobs/cj",
            json!({"schedule": "0 * * * *", "docker_image": "nginx"}),
        ),
        (
            "/api/v2/device_groups/dg",
            json!({"apps": ["site"], "cron_jobs": ["cj"]}),
        ),
        (
            "/api/v2/users/nobody",
            json!({"password": "nobody-pw", "token": "nobody-token"}),
        ),
        (
            "/api/v2/user_groups/readers",
            json!({"apps": {"site": "ro"}}),
        ),
        ("/api/v2/reports", report()),
    ] {
        let r = api.admin("POST", path, Some(body)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    api
}

fn report() -> Value {
    json!({"hostname": "h1", "report_creation_time": 1_700_000_000u64, "device_group": "dg",
        "updated": true, "memory_usage": {"total": 4, "used": 2, "free": 1, "available": 2},
        "root_disk_usage": null, "cpu_usage": {"cores": 2, "used_percent": 12.5},
        "apps_containers": [{"name": "site-1", "id": "abc", "state": "running", "health": "none",
            "image": "nginx", "app_name": "site", "app_id": 1, "created": 5}],
        "current_device_group_config": {"apps": {"site": {"app_id": 1, "incarnation": 1, "running": true}},
            "apps_list": ["site"], "device_group_id": 1, "prune_id": 1, "incarnation": 1},
        "apps_status": {"site": {"app_id": 1, "incarnation": 1, "running": true,
            "desired_containers": 1, "running_containers": 1, "converged": true}}})
}

fn v1_app() -> Value {
    json!({"starting_ports": [80, {"8443": "443"}], "containers_per": {"server": 2},
        "env_vars": {"A": 1}, "docker_image": "nginx", "running": true,
        "networks": ["nebula", "bridge"], "volumes": ["/tmp:/tmp:ro"], "devices": [],
        "privileged": false})
}

/// Whether a route creates the object its last parameter names.
fn creates(method: &str, route: &str) -> bool {
    method == "POST" && route.ends_with('}')
}

/// The route with its parameters filled: existing objects, or `fresh` ones for creates.
fn fill(method: &str, route: &str) -> String {
    let new = creates(method, route);
    route
        .replace("{app}", if new { "fresh" } else { "site" })
        .replace("{dg}", if new { "fresh-dg" } else { "dg" })
        .replace("{cron_job}", if new { "fresh-cj" } else { "cj" })
        .replace("{user}", if new { "carol" } else { "nobody" })
        .replace("{user_group}", if new { "ops" } else { "readers" })
}

/// Every parameter set to `name`.
fn fill_with(route: &str, name: &str) -> String {
    let mut out = String::new();
    for (i, part) in route.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if part.starts_with('{') { name } else { part });
    }
    out
}

/// A body the route accepts, if it takes one.
fn good_body(method: &str, route: &str) -> Option<Value> {
    let v2 = route.starts_with("/api/v2/");
    Some(match (method, route) {
        ("POST", r) if r.ends_with("/apps/{app}") || r.ends_with("/apps/{app}/update") => {
            if v2 {
                json!({"docker_image": "nginx", "starting_ports": [8080], "containers_per": {"cpu": 0.5},
                    "memory_limit_mb": 64, "cpu_limit": 0.5, "run_command": ["sleep", "1"],
                    "rollout": {"wave_size": 2, "min_healthy_seconds": 1}, "rolling_restart": true,
                    "healthcheck": {"test": "true", "interval": "1m30s", "retries": 2}})
            } else {
                v1_app()
            }
        }
        ("PUT" | "PATCH", r) if r.ends_with("/apps/{app}/update") => {
            json!({"privileged": true, "env_vars": {"B": "2"}})
        }
        ("POST", "/api/v2/device_groups/{dg}" | "/api/v2/device_groups/{dg}/update")
        | ("PUT" | "PATCH", "/api/v2/device_groups/{dg}/update") => {
            json!({"apps": ["site", "stopped"], "cron_jobs": []})
        }
        ("POST", "/api/v2/cron_jobs/{cron_job}" | "/api/v2/cron_jobs/{cron_job}/update") => {
            json!({"schedule": "*/5 * * * *", "docker_image": "nginx", "env_vars": {"X": true},
                "entrypoint": ["/bin/sh"], "healthcheck": {"disable": true}})
        }
        ("PUT" | "PATCH", "/api/v2/cron_jobs/{cron_job}/update") => {
            json!({"schedule": "5 * * * *", "running": false})
        }
        ("POST", "/api/v2/users/{user}") => json!({"password": "carol-pw"}),
        ("PUT" | "PATCH", "/api/v2/users/{user}/update") => json!({"token": "new-token"}),
        ("POST", "/api/v2/user_groups/{user_group}")
        | ("PUT" | "PATCH", "/api/v2/user_groups/{user_group}/update") => {
            json!({"group_members": ["nobody"], "admin": false, "pruning_allowed": true,
                "device_groups": {"dg": "rw"}, "cron_jobs": {"cj": "ro"}})
        }
        ("POST", "/api/v2/reports") => report(),
        _ => return None,
    })
}

/// Bodies a route must refuse (or take) with a documented reply.
fn bad_bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        "not json",
        "[1]",
        "{}",
        r#"{"bogus": 1}"#,
        r#"{"docker_image": 5, "schedule": 7, "running": "yes"}"#,
        r#"{"docker_image": "nginx", "schedule": "not cron"}"#,
        r#"{"docker_image": "nginx", "starting_ports": [0, {"a": "b"}], "containers_per": {"x": 1}}"#,
        r#"{"docker_image": "nginx", "networks": ["host", "nebula"], "env_vars": []}"#,
        r#"{"apps": "site", "cron_jobs": ["ghost"]}"#,
        r#"{"apps": ["ghost"]}"#,
        r#"{"apps": [], "cron_jobs": 5}"#,
        r#"{"password": "", "token": 5}"#,
        r#"{"admin": "yes", "apps": {"site": "rx"}, "group_members": [5]}"#,
        r#"{"app_id": 9, "device_group_id": 3, "cron_job_id": 1, "user_name": "x"}"#,
        r#"{"hostname": "", "report_creation_time": 1}"#,
        r#"{"hostname": "h", "report_creation_time": -1}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    bodies.push(vec![b' '; nebula_http::MAX_BODY_BYTES + 1]);
    bodies
}

/// One request: path, `Authorization`, other headers, body.
type Call<'a> = (
    String,
    Option<String>,
    Vec<(&'a str, &'a str)>,
    Option<Vec<u8>>,
);

/// A store that is down.
#[derive(Debug)]
struct DownStore;

#[async_trait]
impl Store for DownStore {
    async fn get(&self, _: Collection, _: &str) -> Result<Option<Stored>, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn list(&self, _: Collection) -> Result<Vec<(String, Stored)>, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn put(&self, _: Collection, _: &str, _: &Value, _: Expect) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
    async fn delete(&self, _: Collection, _: &str, _: u64) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }
}

// A JSON Schema check of the keywords the document uses.

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => panic!("unknown type {t}"),
    }
}

fn validate(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap();
        let target = &doc["components"]["schemas"][name];
        assert!(target.is_object(), "$ref {r} resolves to nothing");
        return validate(doc, target, v, at);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let errors: Vec<String> = any
            .iter()
            .filter_map(|s| validate(doc, s, v, at).err())
            .collect();
        if errors.len() == any.len() {
            return Err(format!("{at}: no anyOf matches: {}", errors.join(" | ")));
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(doc, s, v, at)?;
        }
    }
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(t) => is_type(v, t),
            Value::Array(ts) => ts.iter().any(|t| is_type(v, t.as_str().unwrap())),
            _ => panic!("bad type {t}"),
        };
        if !ok {
            return Err(format!("{at}: {v} is not of type {t}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {e:?}"));
    }
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    let len_bound = |key: &str| {
        schema
            .get(key)
            .and_then(Value::as_u64)
            .map(|n| usize::try_from(n).unwrap())
    };
    match v {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !map.contains_key(r.as_str().unwrap()) {
                    return Err(format!("{at}: required {r} is absent from {v}"));
                }
            }
            for (k, item) in map {
                let here = format!("{at}.{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(s) => validate(doc, s, item, &here)?,
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            return Err(format!("{at}: property {k} is not allowed"));
                        }
                        Some(s @ Value::Object(_)) => validate(doc, s, item, &here)?,
                        _ => {}
                    },
                }
            }
            if len_bound("minProperties").is_some_and(|n| map.len() < n)
                || len_bound("maxProperties").is_some_and(|n| map.len() > n)
            {
                return Err(format!("{at}: {v} has a wrong number of properties"));
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(doc, s, item, &format!("{at}[{i}]"))?;
                }
            }
            if len_bound("minItems").is_some_and(|n| items.len() < n)
                || len_bound("maxItems").is_some_and(|n| items.len() > n)
            {
                return Err(format!("{at}: {v} has a wrong number of items"));
            }
        }
        Value::Number(n) => {
            let n = n.as_f64().unwrap();
            if bound("minimum").is_some_and(|m| n < m) || bound("maximum").is_some_and(|m| n > m) {
                return Err(format!("{at}: {n} is out of bounds"));
            }
        }
        Value::String(s) => {
            let chars = s.chars().count();
            if len_bound("minLength").is_some_and(|n| chars < n)
                || len_bound("maxLength").is_some_and(|n| chars > n)
            {
                return Err(format!("{at}: {s:?} has a wrong length"));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Checks one reply of `method route` against the document; returns the problem, if any.
fn conforms(doc: &Value, method: &str, route: &str, reply: &Reply) -> Result<(), String> {
    let op = &doc["paths"][route][method.to_ascii_lowercase()];
    let code = reply.status.as_u16().to_string();
    let response = &op["responses"][&code];
    if !response.is_object() {
        return Err(format!(
            "status {code} is not documented; body {}",
            String::from_utf8_lossy(&reply.body)
        ));
    }
    let content = &response["content"];
    if content.is_null() {
        return if reply.body.is_empty() {
            Ok(())
        } else {
            Err(format!("{code} is documented without a body"))
        };
    }
    let schema = &content["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {route} {code}: no JSON schema"
    );
    let ct = reply
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(format!("{code}: content type {ct:?}, not JSON"));
    }
    let body: Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("{code}: the body is not JSON: {e}"))?;
    validate(doc, schema, &body, "$").map_err(|e| format!("{code} {body}: {e}"))
}

async fn document(api: &Api) -> Value {
    let v2 = api.admin("GET", "/api/v2/openapi.json", None).await;
    assert_eq!(v2.status, StatusCode::OK);
    let v1 = api.admin("GET", "/api/openapi.json", None).await;
    assert_eq!(v1.body, v2.body, "both URLs serve the same document");
    let doc: Value = serde_json::from_slice(&v2.body).unwrap();
    assert_eq!(
        doc,
        serde_json::to_value(nebula_http::catalogue::document()).unwrap()
    );
    doc
}

fn documented(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    out
}

/// Every documented operation is a route of the router, and every route is documented.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let api = fixture().await;
    let doc = document(&api).await;
    let ops = documented(&doc);
    assert_eq!(ops.len(), ROUTE_RULES.len());
    for rule in ROUTE_RULES {
        assert!(
            ops.contains(&(rule.method.to_owned(), rule.path.to_owned())),
            "{} {} is not documented",
            rule.method,
            rule.path
        );
    }
    for (method, route) in &ops {
        let api = fixture().await;
        let reply = api
            .admin(method, &fill(method, route), good_body(method, route))
            .await;
        assert!(
            !matches!(
                reply.status,
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ),
            "{method} {route} is documented but not routed: {}",
            reply.status
        );
        assert!(
            reply.status.is_success(),
            "{method} {route} with a good body: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
}

/// Every route's replies, good and bad, have documented statuses and conforming bodies.
#[tokio::test]
async fn every_reply_conforms_to_the_document() {
    let doc = document(&fixture().await).await;
    let mut problems = Vec::new();
    let mut checked = 0;
    let mut seen = std::collections::BTreeSet::new();
    for rule in ROUTE_RULES {
        let (method, route) = (rule.method, rule.path);
        let api = fixture().await;
        let takes_body =
            doc["paths"][route][method.to_ascii_lowercase()]["requestBody"].is_object();
        let mut calls: Vec<Call> = vec![
            // No credentials, a wrong password, a user without rights.
            (fill(method, route), None, vec![], None),
            (
                fill(method, route),
                Some(basic("admin:wrong")),
                vec![],
                None,
            ),
            (
                fill(method, route),
                Some("Bearer nobody-token".into()),
                vec![],
                None,
            ),
        ];
        let admin = Some(basic(ADMIN));
        let good = good_body(method, route).map(|b| serde_json::to_vec(&b).unwrap());
        // Missing objects and names no object can have.
        if route.contains('{') {
            for name in ["ghost", "-bad", "a%20b", "x.y_z-1", &"n".repeat(64)] {
                calls.push((fill_with(route, name), admin.clone(), vec![], good.clone()));
            }
            if !creates(method, route) {
                calls.push((
                    fill_with(route, "stopped"),
                    admin.clone(),
                    vec![],
                    good.clone(),
                ));
            }
        }
        if takes_body {
            for body in bad_bodies() {
                calls.push((fill(method, route), admin.clone(), vec![], Some(body)));
            }
        }
        if route == "/api/v2/reports" && method == "GET" {
            for query in [
                "?page_size=1",
                "?page_size=0",
                "?page_size=x&updated=maybe",
                "?hostname=h1&device_group=dg&report_creation_time=5&report_creation_time_filter=gt&updated=True",
                "?report_creation_time_filter=between&report_creation_time=1",
                "?last_id=zz",
                "?last_id=ffffffffffffffffffffffff",
            ] {
                calls.push((format!("{route}{query}"), admin.clone(), vec![], None));
            }
        }
        // Success last, as it may delete the fixture's object; then the same call again.
        calls.push((fill(method, route), admin.clone(), vec![], good.clone()));
        calls.push((fill(method, route), admin.clone(), vec![], good.clone()));
        for (path, auth, headers, body) in calls {
            let reply = api
                .call(method, &path, auth.as_deref(), &headers, body)
                .await;
            if let Err(e) = conforms(&doc, method, route, &reply) {
                problems.push(format!("{method} {path}: {e}"));
            }
            seen.insert((method, route, reply.status.as_u16()));
            checked += 1;
        }
        // The info route's 304.
        if route.ends_with("/info") {
            let first = api.admin(method, &fill(method, route), None).await;
            let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();
            let again = api
                .call(
                    method,
                    &fill(method, route),
                    admin.as_deref(),
                    &[("if-none-match", &etag)],
                    None,
                )
                .await;
            assert_eq!(again.status, StatusCode::NOT_MODIFIED);
            if let Err(e) = conforms(&doc, method, route, &again) {
                problems.push(format!("{method} {route} (If-None-Match): {e}"));
            }
        }
        // The store down.
        let down = Api::over(Arc::new(DownStore));
        let reply = down
            .admin(method, &fill(method, route), good_body(method, route))
            .await;
        if let Err(e) = conforms(&doc, method, route, &reply) {
            problems.push(format!("{method} {route} (store down): {e}"));
        }
        if !route.ends_with("openapi.json") {
            assert_eq!(
                reply.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{method} {route} with the store down"
            );
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {checked} replies do not conform:\n{}",
        problems.len(),
        problems.join("\n")
    );
    // The checks reached the interesting replies.
    for code in [200, 202, 400, 401, 403, 413] {
        assert!(
            seen.iter().any(|(_, _, c)| *c == code),
            "no reply had status {code}"
        );
    }
}

/// The schemas hold the real documents: v1 flags are strings, v2 flags booleans, and the
/// document names the request fields the handlers read.
#[tokio::test]
async fn flags_and_fields_match_the_handlers() {
    let api = fixture().await;
    let doc = document(&api).await;
    let r = api.admin("POST", "/api/apps/stopped/restart", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"running_before_restart": "False"})
    );
    conforms(&doc, "POST", "/api/apps/{app}/restart", &r).unwrap();
    let r = api
        .admin("POST", "/api/v2/apps/stopped/restart", None)
        .await;
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        json!({"running_before_restart": false})
    );
    conforms(&doc, "POST", "/api/v2/apps/{app}/restart", &r).unwrap();
    // A v1 flag where a v2 one is documented does not conform, and the reverse.
    let v1_reply = Reply {
        status: StatusCode::FORBIDDEN,
        headers: r.headers.clone(),
        body: br#"{"running_before_restart": "False"}"#.to_vec(),
    };
    assert!(conforms(&doc, "POST", "/api/v2/apps/{app}/restart", &v1_reply).is_err());
    let schemas = &doc["components"]["schemas"];
    let fields = |name: &str| -> Vec<String> {
        let s = &schemas[name];
        let props = s["properties"]
            .as_object()
            .or_else(|| s["allOf"][0]["properties"].as_object())
            .unwrap_or_else(|| panic!("{name} has no properties"));
        props.keys().cloned().collect()
    };
    let mut app_fields = fields("AppBody");
    app_fields.sort();
    assert_eq!(
        app_fields,
        [
            "containers_per",
            "cpu_limit",
            "devices",
            "docker_image",
            "entrypoint",
            "env_vars",
            "healthcheck",
            "memory_limit_mb",
            "network_mode",
            "networks",
            "privileged",
            "pull_policy",
            "rolling_restart",
            "rollout",
            "run_command",
            "running",
            "starting_ports",
            "volumes"
        ]
    );
    assert_eq!(fields("AppBodyV1"), app_fields);
    assert_eq!(fields("AppPatch"), app_fields);
    // Every field the document offers is one a handler takes: a body of each field alone is
    // never refused as unknown.
    for (route, schema) in [
        ("/api/v2/apps/site/update", "AppPatch"),
        ("/api/v2/cron_jobs/cj/update", "CronJobPatch"),
        ("/api/v2/device_groups/dg/update", "DeviceGroupPatch"),
        ("/api/v2/users/nobody/update", "UserPatch"),
        ("/api/v2/user_groups/readers/update", "UserGroupPatch"),
    ] {
        for field in fields(schema) {
            let r = api.admin("PATCH", route, Some(json!({ &field: 1 }))).await;
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let unknown = body[&field]
                .as_str()
                .is_some_and(|rule| rule.starts_with("is not a"));
            assert!(
                !unknown,
                "{route}: {field} is documented but refused: {body}"
            );
        }
    }
}
