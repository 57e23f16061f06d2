//! Authentication and authorization as a client sees them: the matrix of every route against
//! every kind of caller, the users and user-groups endpoints, and token lookup that does not
//! scan.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use nebula_core::manager::Manager;
use nebula_core::model::{AppName, AppSpec};
use nebula_core::store::Store;
use nebula_core::testing::InMemoryStore;
use nebula_core::users::{Access, token_index};
use nebula_http::auth::{AuthConfig, Authenticator, MIN_BCRYPT_COST, Rule};
use nebula_http::catalogue::ROUTES as ROUTE_RULES;
use nebula_http::{ApiState, RouterOptions, router_with};
use serde_json::{Value, json};
use tower::ServiceExt;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn admin() -> String {
    basic("admin", "pw")
}

struct Api {
    app: axum::Router,
    manager: Manager,
    authn: Arc<Authenticator>,
}

impl Api {
    /// An API over `store` with the local admin `admin:pw` / `Bearer admin-token`, hashing at
    /// the minimum bcrypt cost.
    fn over(store: Arc<dyn Store>) -> Self {
        let auth = AuthConfig {
            enabled: true,
            user: Some("admin".into()),
            password: Some("pw".into()),
            token: Some("admin-token".into()),
        };
        Self::with(store, auth)
    }

    fn with(store: Arc<dyn Store>, auth: AuthConfig) -> Self {
        let manager = Manager::new(store, None);
        let authn = Arc::new(Authenticator::new(MIN_BCRYPT_COST));
        let mut options = RouterOptions::default();
        options.authenticator = authn.clone();
        let app = router_with(
            ApiState {
                manager: manager.clone(),
                auth: Arc::new(auth),
            },
            options,
        );
        Self {
            app,
            manager,
            authn,
        }
    }

    fn new() -> Self {
        Self::over(Arc::new(InMemoryStore::new()))
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let resp = self
            .app
            .clone()
            .oneshot(req.body(Body::from(bytes)).unwrap())
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

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.raw(method, path, Some(&admin()), body.as_ref()).await
    }

    /// Creates a user through the API and returns nothing; the password is `<name>-pw`.
    async fn user(&self, name: &str, token: &str) {
        let (code, _) = self
            .admin(
                "POST",
                &format!("/api/v2/users/{name}"),
                Some(json!({"password": format!("{name}-pw"), "token": token})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "create user {name}");
    }

    async fn group(&self, name: &str, body: Value) {
        let (code, _) = self
            .admin("POST", &format!("/api/v2/user_groups/{name}"), Some(body))
            .await;
        assert_eq!(code, StatusCode::OK, "create group {name}");
    }
}

/// The objects the matrix fixture grants: `site` exists (running), `fresh` does not.
const APPS: [&str; 2] = ["site", "fresh"];
/// Device groups and cron jobs the fixture grants (whether or not those routes exist yet).
const DEVICE_GROUPS: [&str; 2] = ["dg", "fresh-dg"];
const CRON_JOBS: [&str; 2] = ["cj", "fresh-cj"];

/// The callers of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    /// The local admin (Basic).
    Admin,
    /// A user with `rw` on every fixture object (Bearer).
    Writer,
    /// A user with `ro` on every fixture object (Basic).
    Reader,
    /// A user in no group (Bearer).
    Nobody,
    /// A token nobody has.
    BadToken,
    /// No `Authorization` header.
    Anonymous,
}

const CALLERS: [Caller; 6] = [
    Caller::Admin,
    Caller::Writer,
    Caller::Reader,
    Caller::Nobody,
    Caller::BadToken,
    Caller::Anonymous,
];

impl Caller {
    fn header(self) -> Option<String> {
        match self {
            Self::Admin => Some(admin()),
            Self::Writer => Some(bearer("writer-token")),
            Self::Reader => Some(basic("reader", "reader-pw")),
            Self::Nobody => Some(bearer("nobody-token")),
            Self::BadToken => Some(bearer("not-a-token")),
            Self::Anonymous => None,
        }
    }

    /// Whether the rule lets this (authenticated) caller through.
    fn allowed(self, rule: Rule) -> bool {
        let access = match self {
            Self::Admin => return true,
            Self::Writer => Some(Access::Rw),
            Self::Reader => Some(Access::Ro),
            Self::Nobody | Self::BadToken | Self::Anonymous => None,
        };
        match rule {
            Rule::Authenticated => true,
            Rule::Admin | Rule::Pruning => false,
            Rule::Object { access: needed, .. } => access.is_some_and(|a| a.satisfies(needed)),
        }
    }
}

fn grants(names: &[&str], access: Access) -> Value {
    names
        .iter()
        .map(|n| ((*n).to_owned(), json!(access)))
        .collect()
}

/// A fresh API with the matrix fixture: app `site`, users `writer`, `reader`, `nobody`, and
/// groups `writers` (rw on every fixture object) and `readers` (ro).
async fn fixture() -> Api {
    let api = Api::new();
    api.manager
        .create_app(
            AppName::parse("site").unwrap(),
            AppSpec::with_image("nginx"),
        )
        .await
        .unwrap();
    let (code, _) = api
        .admin(
            "POST",
            "/api/v2/device_groups/dg",
            Some(json!({"apps": ["site"]})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = api
        .admin(
            "POST",
            "/api/v2/cron_jobs/cj",
            Some(json!({"schedule": "0 * * * *", "docker_image": "nginx"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    api.user("writer", "writer-token").await;
    api.user("reader", "reader-token").await;
    api.user("nobody", "nobody-token").await;
    for (group, member, access) in [
        ("writers", "writer", Access::Rw),
        ("readers", "reader", Access::Ro),
    ] {
        api.group(
            group,
            json!({"group_members": [member], "apps": grants(&APPS, access),
                "device_groups": grants(&DEVICE_GROUPS, access), "cron_jobs": grants(&CRON_JOBS, access)}),
        )
        .await;
    }
    api
}

fn v1_site() -> Value {
    json!({"starting_ports": [], "containers_per": {"server": 1}, "env_vars": {},
        "docker_image": "nginx", "running": true, "networks": ["nebula", "bridge"], "volumes": [],
        "devices": [], "privileged": false})
}

/// How to call a route of [`ROUTE_RULES`] on the fixture, and what an allowed caller gets:
/// (path with its parameters filled, body, status).
fn call_of(method: &str, route: &str) -> (String, Option<Value>, StatusCode) {
    use StatusCode as S;
    // Creates name an object that does not exist yet; everything else the fixture's objects.
    let creates = method == "POST"
        && route.matches('/').count() == 3 + usize::from(route.starts_with("/api/v2"));
    let fill = |s: &str| {
        s.replace("{app}", if creates { "fresh" } else { "site" })
            .replace("{dg}", if creates { "fresh-dg" } else { "dg" })
            .replace("{cron_job}", if creates { "fresh-cj" } else { "cj" })
            .replace("{user}", if creates { "carol" } else { "nobody" })
            .replace("{user_group}", if creates { "ops" } else { "readers" })
    };
    let path = fill(route);
    let (body, status) = match (method, route) {
        ("GET", _) => (None, S::OK),
        // v1
        ("POST", "/api/apps/{app}") => (Some(v1_site()), S::ACCEPTED),
        ("POST", "/api/apps/{app}/update") => (Some(v1_site()), S::ACCEPTED),
        ("PUT" | "PATCH", "/api/apps/{app}/update") => {
            (Some(json!({"privileged": true})), S::ACCEPTED)
        }
        (_, r) if r.starts_with("/api/apps/") => (None, S::ACCEPTED),
        // v2 apps
        ("POST", "/api/v2/apps/{app}") => (Some(json!({"docker_image": "nginx"})), S::OK),
        ("DELETE", "/api/v2/apps/{app}") => (None, S::OK),
        ("POST", "/api/v2/apps/{app}/update") => {
            (Some(json!({"docker_image": "nginx"})), S::ACCEPTED)
        }
        ("PUT" | "PATCH", "/api/v2/apps/{app}/update") => {
            (Some(json!({"privileged": true})), S::ACCEPTED)
        }
        ("POST", r) if r.starts_with("/api/v2/apps/{app}/") => (None, S::ACCEPTED),
        // device groups and prune
        ("POST", "/api/v2/device_groups/{dg}") => (Some(json!({"apps": ["site"]})), S::OK),
        ("DELETE", "/api/v2/device_groups/{dg}") => (None, S::OK),
        ("POST", "/api/v2/device_groups/{dg}/update") => (Some(json!({"apps": []})), S::ACCEPTED),
        ("PUT" | "PATCH", "/api/v2/device_groups/{dg}/update") => {
            (Some(json!({"apps": []})), S::ACCEPTED)
        }
        ("POST", "/api/v2/device_groups/{dg}/prune" | "/api/v2/prune") => (None, S::ACCEPTED),
        // cron jobs
        ("POST", "/api/v2/cron_jobs/{cron_job}") => (
            Some(json!({"schedule": "0 * * * *", "docker_image": "nginx"})),
            S::OK,
        ),
        ("DELETE", "/api/v2/cron_jobs/{cron_job}") => (None, S::OK),
        ("POST", "/api/v2/cron_jobs/{cron_job}/update") => (
            Some(json!({"schedule": "5 * * * *", "docker_image": "nginx"})),
            S::ACCEPTED,
        ),
        ("PUT" | "PATCH", "/api/v2/cron_jobs/{cron_job}/update") => {
            (Some(json!({"schedule": "5 * * * *"})), S::ACCEPTED)
        }
        // users and user groups
        ("POST", "/api/v2/users/{user}") => (Some(json!({"password": "carol-pw"})), S::OK),
        ("PUT" | "PATCH", "/api/v2/users/{user}/update") => {
            (Some(json!({"password": "new"})), S::OK)
        }
        ("POST", "/api/v2/users/{user}/refresh") => (None, S::OK),
        ("DELETE", "/api/v2/users/{user}") => (None, S::OK),
        ("POST", "/api/v2/user_groups/{user_group}") => (Some(json!({})), S::OK),
        ("PUT" | "PATCH", "/api/v2/user_groups/{user_group}/update") => {
            (Some(json!({"admin": false})), S::OK)
        }
        ("DELETE", "/api/v2/user_groups/{user_group}") => (None, S::OK),
        // reports
        ("POST", "/api/v2/reports") => (
            Some(json!({"hostname": "h1", "report_creation_time": 1})),
            S::OK,
        ),
        _ => panic!("the authorization matrix has no expectation for {method} {route}: add one"),
    };
    (path, body, status)
}

/// Every route x every caller: the exact status, and the exact body of a refusal.
#[tokio::test]
async fn authorization_matrix_over_every_route() {
    let mut cells = 0;
    for route in ROUTE_RULES {
        let (path, body, allowed_status) = call_of(route.method, route.path);
        let v1 = !route.path.starts_with("/api/v2/");
        for caller in CALLERS {
            let api = fixture().await;
            let (code, reply) = api
                .raw(
                    route.method,
                    &path,
                    caller.header().as_deref(),
                    body.as_ref(),
                )
                .await;
            let cell = format!("{} {} as {caller:?}: {reply}", route.method, path);
            match caller {
                Caller::BadToken | Caller::Anonymous => {
                    assert_eq!(code, StatusCode::UNAUTHORIZED, "{cell}");
                }
                _ if caller.allowed(route.rule) => {
                    assert_eq!(code, allowed_status, "{cell}");
                }
                _ => {
                    let denied = if v1 { json!("False") } else { json!(false) };
                    assert_eq!(
                        (code, reply),
                        (StatusCode::FORBIDDEN, json!({ "access_allowed": denied })),
                        "{cell}"
                    );
                }
            }
            cells += 1;
        }
    }
    assert_eq!(cells, ROUTE_RULES.len() * CALLERS.len());
    assert!(ROUTE_RULES.len() >= 55, "every route is in the table");
}

/// An object kind's rules use the object's own grants: rights on an app give nothing on a
/// device group or cron job of the same name.
#[tokio::test]
async fn rights_are_per_object_and_rw_implies_ro() {
    let api = Api::new();
    for name in ["site", "other"] {
        api.manager
            .create_app(AppName::parse(name).unwrap(), AppSpec::with_image("nginx"))
            .await
            .unwrap();
    }
    api.user("u", "u-token").await;
    api.group(
        "g",
        json!({"group_members": ["u"], "apps": {"site": "rw"}, "device_groups": {"other": "rw"}}),
    )
    .await;
    let u = bearer("u-token");
    let get = |path: &'static str| {
        let u = u.clone();
        let api = &api;
        async move { api.raw("GET", path, Some(&u), None).await.0 }
    };
    assert_eq!(
        get("/api/v2/apps/site").await,
        StatusCode::OK,
        "rw implies ro"
    );
    assert_eq!(get("/api/apps/site").await, StatusCode::OK, "v1 too");
    assert_eq!(get("/api/v2/apps/other").await, StatusCode::FORBIDDEN);
    assert_eq!(
        get("/api/v2/device_groups/site").await,
        StatusCode::FORBIDDEN,
        "kinds are separate"
    );
    assert_eq!(
        api.raw("GET", "/api/v2/device_groups/other/info", Some(&u), None)
            .await,
        (StatusCode::FORBIDDEN, json!({"device_group_exists": false})),
        "allowed, so the caller learns it does not exist"
    );
    assert_eq!(
        get("/api/v2/apps").await,
        StatusCode::OK,
        "lists need authentication only"
    );
    assert_eq!(get("/api/v2/users").await, StatusCode::OK);
    assert_eq!(get("/api/v2/user_groups").await, StatusCode::OK);
    assert_eq!(
        get("/api/v2/users/u").await,
        StatusCode::FORBIDDEN,
        "admin only"
    );
    // Authorization comes before existence: no hint whether an object exists.
    assert_eq!(
        api.raw("GET", "/api/v2/apps/ghost", Some(&u), None).await,
        (StatusCode::FORBIDDEN, json!({"access_allowed": false}))
    );
    // Unknown routes and methods stay 404 and 405 for an authenticated caller.
    assert_eq!(
        api.raw("GET", "/api/v3/x", Some(&u), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.raw("DELETE", "/api/v2/users", Some(&u), None).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn group_changes_apply_to_the_next_request() {
    let api = Api::new();
    api.manager
        .create_app(
            AppName::parse("site").unwrap(),
            AppSpec::with_image("nginx"),
        )
        .await
        .unwrap();
    api.user("u", "u-token").await;
    let u = basic("u", "u-pw");
    let stop = || api.raw("POST", "/api/v2/apps/site/stop", Some(&u), None);
    assert_eq!(stop().await.0, StatusCode::FORBIDDEN);
    api.group("g", json!({"group_members": ["u"], "apps": {"site": "ro"}}))
        .await;
    assert_eq!(stop().await.0, StatusCode::FORBIDDEN, "ro cannot write");
    assert_eq!(
        api.admin(
            "PATCH",
            "/api/v2/user_groups/g/update",
            Some(json!({"apps": {"site": "rw"}}))
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(stop().await.0, StatusCode::ACCEPTED);
    // Another group granting only ro does not take rw away (the strongest grant wins).
    api.group("h", json!({"group_members": ["u"], "apps": {"site": "ro"}}))
        .await;
    assert_eq!(stop().await.0, StatusCode::ACCEPTED);
    // Group admin: users management; pruning_allowed: prune only.
    let users = || api.raw("GET", "/api/v2/users/u", Some(&u), None);
    assert_eq!(users().await.0, StatusCode::FORBIDDEN);
    api.admin(
        "PUT",
        "/api/v2/user_groups/h/update",
        Some(json!({"admin": true})),
    )
    .await;
    assert_eq!(users().await.0, StatusCode::OK);
    api.admin("DELETE", "/api/v2/user_groups/h", None).await;
    api.admin("DELETE", "/api/v2/user_groups/g", None).await;
    assert_eq!(users().await.0, StatusCode::FORBIDDEN);
    assert_eq!(stop().await.0, StatusCode::FORBIDDEN);
    api.group(
        "p",
        json!({"group_members": ["u"], "pruning_allowed": true}),
    )
    .await;
    assert_eq!(
        api.raw("POST", "/api/apps/site/prune", Some(&u), None)
            .await
            .0,
        StatusCode::ACCEPTED
    );
    assert_eq!(stop().await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn users_endpoints_codes_and_bodies() {
    let api = Api::new();
    assert_eq!(
        api.admin("GET", "/api/v2/users", None).await,
        (StatusCode::OK, json!({"users": []}))
    );
    let (code, doc) = api
        .admin(
            "POST",
            "/api/v2/users/alice",
            Some(json!({"password": "alice-pw", "token": "alice-token"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    // The key set, not its order: serde_json may keep insertion order when another crate of
    // the workspace turns on its `preserve_order` feature.
    let mut keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["password", "token", "user_name"]);
    assert_eq!(doc["user_name"], "alice");
    for field in ["password", "token"] {
        let hash = doc[field].as_str().unwrap();
        assert!(hash.starts_with("$2"), "{field} is a bcrypt hash: {hash}");
        assert!(!hash.contains("alice-"), "never the plain secret");
    }
    assert_eq!(
        api.admin(
            "POST",
            "/api/v2/users/alice",
            Some(json!({"password": "x"}))
        )
        .await,
        (StatusCode::FORBIDDEN, json!({"user_exists": true}))
    );
    assert_eq!(
        api.admin("GET", "/api/v2/users/alice", None).await,
        (StatusCode::OK, doc.clone()),
        "GET shows the same hashes"
    );
    assert_eq!(
        api.admin("GET", "/api/v2/users", None).await,
        (StatusCode::OK, json!({"users": ["alice"]}))
    );

    // Create: bad input names its field; nothing is stored.
    for (body, field) in [
        (json!({"password": 5}), "password"),
        (json!({"password": ""}), "password"),
        (json!({"password": "x".repeat(73)}), "password"),
        (json!({"password": "ok", "token": ["t"]}), "token"),
        (json!({"password": "ok", "role": "admin"}), "role"),
    ] {
        let (code, reply) = api
            .admin("POST", "/api/v2/users/bob", Some(body.clone()))
            .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.get(field).is_some(), "{body} -> {reply}");
    }
    assert_eq!(
        api.admin("POST", "/api/v2/users/bob", Some(json!({"token": "t"})))
            .await,
        (
            StatusCode::BAD_REQUEST,
            json!({"missing_parameters": ["password"]})
        )
    );
    assert_eq!(
        api.admin("POST", "/api/v2/users/bob", None).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"missing_parameters": ["password"]})
        )
    );
    let (code, reply) = api
        .admin("POST", "/api/v2/users/-bob", Some(json!({"password": "p"})))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(reply.get("user_name").is_some(), "{reply}");
    assert_eq!(
        api.admin("GET", "/api/v2/users", None).await.1,
        json!({"users": ["alice"]})
    );

    // The user authenticates with its password and its token.
    let status = |auth: String| {
        let api = &api;
        async move { api.raw("GET", "/api/v2/status", Some(&auth), None).await.0 }
    };
    assert_eq!(status(basic("alice", "alice-pw")).await, StatusCode::OK);
    assert_eq!(status(bearer("alice-token")).await, StatusCode::OK);
    assert_eq!(
        status(basic("alice", "wrong")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(basic("alice", "alice-token")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(bearer("alice-pw")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(basic("ghost", "alice-pw")).await,
        StatusCode::UNAUTHORIZED
    );

    // Update: password and/or token, re-hashed; the old secret stops working at once.
    let (code, updated) = api
        .admin(
            "PUT",
            "/api/v2/users/alice/update",
            Some(json!({"password": "pw2"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(updated["token"], doc["token"]);
    assert_ne!(updated["password"], doc["password"]);
    assert_eq!(
        status(basic("alice", "alice-pw")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(basic("alice", "pw2")).await, StatusCode::OK);
    let (code, _) = api
        .admin(
            "PATCH",
            "/api/v2/users/alice/update",
            Some(json!({"token": "tok2"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        status(bearer("alice-token")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status(bearer("tok2")).await, StatusCode::OK);
    assert_eq!(
        api.admin(
            "PUT",
            "/api/v2/users/ghost/update",
            Some(json!({"password": "p"}))
        )
        .await,
        (StatusCode::FORBIDDEN, json!({"user_name": false})),
        "the original's body for a missing user on update"
    );
    for body in [None, Some(json!({})), Some(json!({"user_name": "alice"}))] {
        assert_eq!(
            api.admin("PATCH", "/api/v2/users/alice/update", body).await,
            (StatusCode::BAD_REQUEST, json!({"missing_parameters": true}))
        );
    }
    let (code, reply) = api
        .admin(
            "PATCH",
            "/api/v2/users/alice/update",
            Some(json!({"token": 1})),
        )
        .await;
    assert_eq!(
        (code, reply.get("token").is_some()),
        (StatusCode::BAD_REQUEST, true)
    );

    // Refresh: the only time a token is shown in plain.
    let (code, reply) = api.admin("POST", "/api/v2/users/alice/refresh", None).await;
    assert_eq!(code, StatusCode::OK);
    let fresh = reply["token"].as_str().unwrap().to_owned();
    assert_eq!(reply.as_object().unwrap().len(), 1);
    assert!(fresh.len() >= 43);
    assert_eq!(status(bearer("tok2")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(bearer(&fresh)).await, StatusCode::OK);
    let shown = api
        .admin("GET", "/api/v2/users/alice", None)
        .await
        .1
        .to_string();
    assert!(!shown.contains(&fresh));
    assert_eq!(
        api.admin("POST", "/api/v2/users/ghost/refresh", None).await,
        (StatusCode::FORBIDDEN, json!({"user_exists": false}))
    );

    // Delete.
    assert_eq!(
        api.admin("DELETE", "/api/v2/users/alice", None).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(status(bearer(&fresh)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        status(basic("alice", "pw2")).await,
        StatusCode::UNAUTHORIZED
    );
    for (method, path) in [
        ("DELETE", "/api/v2/users/alice"),
        ("GET", "/api/v2/users/alice"),
    ] {
        assert_eq!(
            api.admin(method, path, None).await,
            (StatusCode::FORBIDDEN, json!({"user_exists": false}))
        );
    }
    assert_eq!(
        api.admin("GET", "/api/v2/users", None).await.1,
        json!({"users": []})
    );

    // Without a token, the user gets a random one (see it with /refresh).
    let (code, doc) = api
        .admin(
            "POST",
            "/api/v2/users/bob",
            Some(json!({"password": "bob-pw"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert!(doc["token"].as_str().unwrap().starts_with("$2"));
    assert_eq!(status(basic("bob", "bob-pw")).await, StatusCode::OK);
}

#[tokio::test]
async fn user_groups_endpoints_codes_and_bodies() {
    let api = Api::new();
    assert_eq!(
        api.admin("GET", "/api/v2/user_groups", None).await,
        (StatusCode::OK, json!({"user_groups": []}))
    );
    let defaults = json!({"user_group": "ops", "group_members": [], "pruning_allowed": false,
        "admin": false, "apps": {}, "device_groups": {}, "cron_jobs": {}});
    assert_eq!(
        api.admin("POST", "/api/v2/user_groups/ops", None).await,
        (StatusCode::OK, defaults.clone())
    );
    assert_eq!(
        api.admin("POST", "/api/v2/user_groups/ops", Some(json!({})))
            .await,
        (StatusCode::FORBIDDEN, json!({"user_group_exists": true}))
    );
    let full = json!({"group_members": ["a", "b"], "pruning_allowed": true, "admin": false,
        "apps": {"site": "rw"}, "device_groups": {"dg": "ro"}, "cron_jobs": {"cj": "rw"}});
    let (code, doc) = api
        .admin("POST", "/api/v2/user_groups/devs", Some(full.clone()))
        .await;
    assert_eq!(code, StatusCode::OK);
    let mut expected = full.clone();
    expected["user_group"] = json!("devs");
    assert_eq!(doc, expected);
    assert_eq!(
        api.admin("GET", "/api/v2/user_groups/devs", None).await,
        (StatusCode::OK, expected.clone())
    );
    assert_eq!(
        api.admin("GET", "/api/v2/user_groups", None).await,
        (StatusCode::OK, json!({"user_groups": ["devs", "ops"]}))
    );

    for (body, field) in [
        (json!({"apps": {"site": "rx"}}), "apps.site"),
        (json!({"device_groups": {"dg": true}}), "device_groups.dg"),
        (json!({"cron_jobs": ["cj"]}), "cron_jobs"),
        (json!({"apps": {"bad name": "ro"}}), "apps.bad name"),
        (json!({"group_members": "a"}), "group_members"),
        (json!({"group_members": ["a", 1]}), "group_members[1]"),
        (
            json!({"group_members": ["a", "no way"]}),
            "group_members[1]",
        ),
        (json!({"admin": "yes"}), "admin"),
        (json!({"pruning_allowed": 1}), "pruning_allowed"),
        (json!({"owner": "me"}), "owner"),
    ] {
        for (method, path) in [
            ("POST", "/api/v2/user_groups/new"),
            ("PATCH", "/api/v2/user_groups/devs/update"),
        ] {
            let (code, reply) = api.admin(method, path, Some(body.clone())).await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{method} {body}");
            assert!(reply.get(field).is_some(), "{method} {body} -> {reply}");
        }
    }
    let (code, reply) = api.admin("POST", "/api/v2/user_groups/.x", None).await;
    assert_eq!(
        (code, reply.get("user_group").is_some()),
        (StatusCode::BAD_REQUEST, true)
    );
    assert_eq!(
        api.admin("GET", "/api/v2/user_groups", None).await.1,
        json!({"user_groups": ["devs", "ops"]}),
        "nothing stored"
    );
    assert_eq!(
        api.admin("GET", "/api/v2/user_groups/devs", None).await.1,
        expected,
        "nothing changed"
    );

    let (code, doc) = api
        .admin(
            "PUT",
            "/api/v2/user_groups/devs/update",
            Some(json!({"apps": {"other": "ro"}, "admin": true, "user_group": "ignored"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(doc["apps"], json!({"other": "ro"}));
    assert_eq!(doc["admin"], true);
    assert_eq!(doc["user_group"], "devs");
    assert_eq!(
        doc["group_members"],
        json!(["a", "b"]),
        "untouched fields stay"
    );
    for body in [None, Some(json!({})), Some(json!({"user_group": "x"}))] {
        assert_eq!(
            api.admin("PATCH", "/api/v2/user_groups/devs/update", body)
                .await,
            (StatusCode::BAD_REQUEST, json!({"missing_parameters": true}))
        );
    }
    assert_eq!(
        api.admin(
            "PUT",
            "/api/v2/user_groups/ghost/update",
            Some(json!({"admin": true}))
        )
        .await,
        (StatusCode::FORBIDDEN, json!({"user_group_exists": false})),
        "the original answered null here"
    );
    assert_eq!(
        api.admin("DELETE", "/api/v2/user_groups/devs", None).await,
        (StatusCode::OK, json!({}))
    );
    for (method, path) in [
        ("DELETE", "/api/v2/user_groups/devs"),
        ("GET", "/api/v2/user_groups/devs"),
    ] {
        assert_eq!(
            api.admin(method, path, None).await,
            (StatusCode::FORBIDDEN, json!({"user_group_exists": false}))
        );
    }
}

/// 200 users, each with its own token: authenticating one token verifies only the entries of
/// its bucket (about one), not 200 hashes; a second request verifies none.
#[tokio::test]
async fn token_authentication_does_not_scan_the_users() {
    let api = Api::new();
    const USERS: usize = 200;
    let mut hashes = Vec::new();
    for i in 0..USERS {
        hashes.push((
            api.authn.hash_secret(format!("pw-{i}")).await.unwrap(),
            api.authn.hash_token(&format!("token-{i}")).await.unwrap(),
        ));
    }
    for (i, (password, token)) in hashes.into_iter().enumerate() {
        api.manager
            .create_user(&format!("user-{i}"), password, token)
            .await
            .unwrap();
    }
    api.group(
        "all",
        json!({"group_members": ["user-150"], "apps": {"site": "ro"}}),
    )
    .await;
    let bucket = api
        .manager
        .token_candidates(&token_index("token-150"))
        .await
        .unwrap()
        .len();
    assert!(
        (1..=2).contains(&bucket),
        "{bucket} entries share the index"
    );

    let before = api.authn.bcrypt_verifications();
    let status = api
        .raw("GET", "/api/v2/apps", Some(&bearer("token-150")), None)
        .await
        .0;
    assert_eq!(status, StatusCode::OK);
    let first = api.authn.bcrypt_verifications() - before;
    assert!(
        first >= 1 && first <= bucket as u64,
        "{first} verifications for one token"
    );

    let before = api.authn.bcrypt_verifications();
    for _ in 0..5 {
        let status = api
            .raw("GET", "/api/v2/apps", Some(&bearer("token-150")), None)
            .await
            .0;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(api.authn.bcrypt_verifications() - before, 0, "remembered");

    // A wrong token costs the entries of its own bucket only (usually none).
    let before = api.authn.bcrypt_verifications();
    let status = api
        .raw("GET", "/api/v2/apps", Some(&bearer("token-x")), None)
        .await
        .0;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let wrong_bucket = api
        .manager
        .token_candidates(&token_index("token-x"))
        .await
        .unwrap()
        .len();
    assert_eq!(
        api.authn.bcrypt_verifications() - before,
        wrong_bucket as u64
    );

    // Basic: one document read, one verification, then none.
    let before = api.authn.bcrypt_verifications();
    for _ in 0..3 {
        let status = api
            .raw("GET", "/api/v2/apps", Some(&basic("user-7", "pw-7")), None)
            .await
            .0;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(api.authn.bcrypt_verifications() - before, 1);
}

/// Two managers share a store: a token refreshed on one is refused at once by the other, even
/// though the other remembered verifying it.
#[tokio::test]
async fn a_changed_secret_is_refused_at_once_by_every_manager() {
    let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
    let a = Api::over(store.clone());
    let b = Api::over(store);
    a.user("u", "old-token").await;
    for api in [&a, &b] {
        assert_eq!(
            api.raw("GET", "/api/v2/status", Some(&bearer("old-token")), None)
                .await
                .0,
            StatusCode::OK
        );
    }
    let before = b.authn.bcrypt_verifications();
    let (code, reply) = a.admin("POST", "/api/v2/users/u/refresh", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        b.raw("GET", "/api/v2/status", Some(&bearer("old-token")), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let new = reply["token"].as_str().unwrap();
    assert_eq!(
        b.raw("GET", "/api/v2/status", Some(&bearer(new)), None)
            .await
            .0,
        StatusCode::OK
    );
    assert!(b.authn.bcrypt_verifications() - before <= 3);
}

#[tokio::test]
async fn auth_disabled_allows_everything_and_the_admin_token_works() {
    let open = Api::with(Arc::new(InMemoryStore::new()), AuthConfig::default());
    assert_eq!(
        open.raw("POST", "/api/v2/user_groups/g", None, Some(&json!({})))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        open.raw("POST", "/api/apps/ghost/prune", None, None).await,
        (StatusCode::FORBIDDEN, json!({"app_exists": "False"}))
    );
    let api = Api::new();
    assert_eq!(
        api.raw("GET", "/api/v2/users", Some(&bearer("admin-token")), None)
            .await,
        (StatusCode::OK, json!({"users": []}))
    );
    // A user may take the local admin's name, but not its rights.
    api.user("admin", "t").await;
    assert_eq!(
        api.raw(
            "GET",
            "/api/v2/users/admin",
            Some(&basic("admin", "admin-pw")),
            None
        )
        .await,
        (StatusCode::FORBIDDEN, json!({"access_allowed": false}))
    );
}

/// bcrypt takes at most 72 bytes including its NUL terminator: a 72-byte secret is refused
/// with 400 naming the field, never a 500; 71 bytes work.
#[tokio::test]
async fn secrets_at_the_bcrypt_limit() {
    let api = Api::new();
    let (code, body) = api
        .admin(
            "POST",
            "/api/v2/users/long",
            Some(json!({"password": "p".repeat(72)})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body) = api
        .admin(
            "POST",
            "/api/v2/users/long",
            Some(json!({"password": "p".repeat(71), "token": "t".repeat(72)})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, body) = api
        .admin(
            "POST",
            "/api/v2/users/long",
            Some(json!({"password": "p".repeat(71), "token": "t".repeat(71)})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let (code, body) = api
        .admin(
            "PATCH",
            "/api/v2/users/long/update",
            Some(json!({"password": "é".repeat(36)})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
}
