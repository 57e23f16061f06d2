//! The server never panics or answers 5xx on any input: arbitrary JSON bodies and names on every
//! app route, in both dialects.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use nebula_core::manager::Manager;
use nebula_core::testing::InMemoryStore;
use nebula_http::auth::AuthConfig;
use nebula_http::{ApiState, router};
use proptest::prelude::*;
use serde_json::{Map, Value};
use tower::ServiceExt;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        Just(Value::String("80".into())),
        Just(Value::from(80)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("docker_image".to_owned()),
                    Just("starting_ports".to_owned()),
                    Just("containers_per".to_owned()),
                    Just("env_vars".to_owned()),
                    Just("networks".to_owned()),
                    Just("volumes".to_owned()),
                    Just("devices".to_owned()),
                    Just("running".to_owned()),
                    Just("rollout".to_owned()),
                    Just("cpu".to_owned()),
                    Just("server".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

const ROUTES: [(&str, &str); 12] = [
    ("POST", "/api/v2/apps/{}"),
    ("GET", "/api/v2/apps/{}"),
    ("DELETE", "/api/v2/apps/{}"),
    ("POST", "/api/v2/apps/{}/update"),
    ("PUT", "/api/v2/apps/{}/update"),
    ("PATCH", "/api/v2/apps/{}/update"),
    ("POST", "/api/v2/apps/{}/restart"),
    ("POST", "/api/apps/{}"),
    ("POST", "/api/apps/{}/update"),
    ("PUT", "/api/apps/{}/update"),
    ("POST", "/api/apps/{}/roll"),
    ("POST", "/api/apps/{}/start"),
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn no_input_gives_a_5xx(route in 0..ROUTES.len(), name in prop_oneof!["[a-z]{1,5}", "[ -~]{0,70}"], body in arb_json(), raw in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let app = router(ApiState {
            manager: Manager::new(Arc::new(InMemoryStore::new()), None),
            auth: Arc::new(AuthConfig::default()),
        });
        let (method, path) = ROUTES[route];
        let encoded: String = name.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect();
        let uri = path.replace("{}", &encoded);
        let bytes = raw.unwrap_or_else(|| serde_json::to_vec(&body).unwrap());
        // Seed an app so that updates reach validation of the merged document.
        let seed = Request::builder().method("POST").uri(format!("/api/v2/apps/{encoded}"))
            .body(Body::from(r#"{"docker_image": "nginx"}"#)).unwrap();
        let status = rt.block_on(async {
            let _ = app.clone().oneshot(seed).await.unwrap();
            let req = Request::builder().method(method).uri(&uri).body(Body::from(bytes)).unwrap();
            app.oneshot(req).await.unwrap().status()
        });
        prop_assert!(status.as_u16() < 500, "{} {} -> {}", method, uri, status);
    }
}
