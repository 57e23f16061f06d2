//! The API as a client sees it: status codes and bodies of every route, in both dialects,
//! against the in-memory store.

mod common;

use axum::http::StatusCode;
use common::{Api, basic};
use serde_json::{Value, json};

fn v1_site() -> Value {
    json!({"starting_ports": [{"8081": "80"}], "containers_per": {"server": 2}, "env_vars": {"MESSAGE": "hi"},
        "docker_image": "nginx", "running": true, "networks": ["nebula", "bridge"], "volumes": [],
        "devices": [], "privileged": false})
}

#[tokio::test]
async fn v2_app_lifecycle_codes_and_bodies() {
    let api = Api::new();
    assert_eq!(
        api.call("GET", "/api/v2/status", None).await,
        (StatusCode::OK, json!({"api_available": true}))
    );
    let (code, doc) = api
        .call(
            "POST",
            "/api/v2/apps/site",
            Some(json!({"docker_image": "nginx"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(doc["app_id"], 1);
    assert_eq!(doc["containers_per"], json!({"server": 1}));
    assert_eq!(doc["networks"], json!(["nebula", "bridge"]));
    assert_eq!(doc["env_vars"], json!({}));
    assert_eq!(doc["running"], true);
    assert_eq!(
        api.call(
            "POST",
            "/api/v2/apps/site",
            Some(json!({"docker_image": "nginx"}))
        )
        .await,
        (StatusCode::FORBIDDEN, json!({"app_exists": true}))
    );
    assert_eq!(
        api.call("GET", "/api/v2/apps", None).await,
        (StatusCode::OK, json!({"apps": ["site"]}))
    );
    assert_eq!(
        api.call("GET", "/api/v2/apps/site", None).await.1["docker_image"],
        "nginx"
    );

    let (code, doc) = api.call("POST", "/api/v2/apps/site/stop", None).await;
    assert_eq!(
        (code, doc["running"].clone(), doc["app_id"].clone()),
        (StatusCode::ACCEPTED, json!(false), json!(2))
    );
    assert_eq!(
        api.call("POST", "/api/v2/apps/site/restart", None).await,
        (
            StatusCode::FORBIDDEN,
            json!({"running_before_restart": false})
        )
    );
    let (code, doc) = api.call("POST", "/api/v2/apps/site/start", None).await;
    assert_eq!(
        (code, doc["running"].clone(), doc["app_id"].clone()),
        (StatusCode::ACCEPTED, json!(true), json!(3))
    );
    let (code, doc) = api.call("POST", "/api/v2/apps/site/restart", None).await;
    assert_eq!(
        (
            code,
            doc["app_id"].clone(),
            doc["restart_generation"].clone()
        ),
        (StatusCode::ACCEPTED, json!(4), json!(1))
    );
    assert!(doc.get("command").is_none(), "v2 replies carry no command");

    let (code, doc) = api
        .call(
            "PUT",
            "/api/v2/apps/site/update",
            Some(json!({"env_vars": {"A": "1"}})),
        )
        .await;
    assert_eq!(
        (code, doc["env_vars"].clone(), doc["docker_image"].clone()),
        (StatusCode::ACCEPTED, json!({"A": "1"}), json!("nginx"))
    );
    let (code, doc) = api
        .call(
            "PATCH",
            "/api/v2/apps/site/update",
            Some(json!({"rolling_restart": true})),
        )
        .await;
    assert_eq!(
        (code, doc["rolling_restart"].clone(), doc["app_id"].clone()),
        (StatusCode::ACCEPTED, json!(true), json!(6))
    );
    assert_eq!(
        api.call("PUT", "/api/v2/apps/site/update", Some(json!({})))
            .await,
        (StatusCode::BAD_REQUEST, json!({"missing_parameters": true}))
    );
    let (code, doc) = api
        .call(
            "POST",
            "/api/v2/apps/site/update",
            Some(json!({"docker_image": "nginx:2"})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(
        (doc["env_vars"].clone(), doc["rolling_restart"].clone()),
        (json!({}), json!(false)),
        "full update resets to defaults"
    );

    assert_eq!(
        api.call("DELETE", "/api/v2/apps/site", None).await,
        (StatusCode::OK, json!({}))
    );
    for (method, path) in [
        ("GET", "/api/v2/apps/site"),
        ("DELETE", "/api/v2/apps/site"),
        ("POST", "/api/v2/apps/site/stop"),
        ("POST", "/api/v2/apps/site/start"),
        ("POST", "/api/v2/apps/site/restart"),
    ] {
        assert_eq!(
            api.call(method, path, None).await,
            (StatusCode::FORBIDDEN, json!({"app_exists": false})),
            "{method} {path}"
        );
    }
    assert_eq!(
        api.call(
            "PUT",
            "/api/v2/apps/site/update",
            Some(json!({"running": true}))
        )
        .await,
        (StatusCode::FORBIDDEN, json!({"app_exists": false}))
    );
}

#[tokio::test]
async fn v1_app_lifecycle_codes_and_bodies() {
    let api = Api::new();
    assert_eq!(
        api.call("GET", "/api/status", None).await,
        (StatusCode::OK, json!({"api_available": "True"}))
    );
    let (code, body) = api
        .call(
            "POST",
            "/api/apps/site",
            Some(json!({"docker_image": "nginx"})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["missing_parameters"],
        json!([
            "starting_ports",
            "containers_per",
            "env_vars",
            "running",
            "networks"
        ])
    );
    let (code, doc) = api.call("POST", "/api/apps/site", Some(v1_site())).await;
    assert_eq!(
        (code, doc["app_id"].clone()),
        (StatusCode::ACCEPTED, json!(1))
    );
    assert_eq!(
        api.call("POST", "/api/apps/site", Some(v1_site())).await,
        (StatusCode::FORBIDDEN, json!({"app_exists": "True"}))
    );
    for (cmd, app_id) in [
        ("stop", 2),
        ("start", 3),
        ("restart", 4),
        ("roll", 5),
        ("release", 6),
        ("prune", 7),
    ] {
        let (code, doc) = api
            .call("POST", &format!("/api/apps/site/{cmd}"), None)
            .await;
        assert_eq!(
            (code, doc["command"].clone(), doc["app_id"].clone()),
            (StatusCode::ACCEPTED, json!(cmd), json!(app_id)),
            "{cmd}"
        );
    }
    let (_, doc) = api.call("GET", "/api/apps/site", None).await;
    assert_eq!(
        doc["restart_mode"], "as_configured",
        "release after roll is a plain restart"
    );
    api.call("POST", "/api/apps/site/stop", None).await;
    assert_eq!(
        api.call("POST", "/api/apps/site/roll", None).await,
        (
            StatusCode::FORBIDDEN,
            json!({"running_before_restart": "False"})
        )
    );
    let (code, doc) = api.call("POST", "/api/apps/site/release", None).await;
    assert_eq!(
        (code, doc["running"].clone()),
        (StatusCode::ACCEPTED, json!(true)),
        "release has no running check"
    );
    let (code, doc) = api
        .call(
            "PATCH",
            "/api/apps/site/update",
            Some(json!({"network_mode": "host"})),
        )
        .await;
    assert_eq!(
        (code, doc["networks"].clone(), doc["command"].clone()),
        (StatusCode::ACCEPTED, json!(["host"]), json!("update"))
    );
    assert_eq!(
        api.call("DELETE", "/api/apps/site", None).await,
        (StatusCode::ACCEPTED, json!({}))
    );
    assert_eq!(
        api.call("GET", "/api/apps/site", None).await,
        (StatusCode::FORBIDDEN, json!({"app_exists": "False"}))
    );
    assert_eq!(
        api.call("GET", "/api/apps", None).await,
        (StatusCode::OK, json!({"apps": []}))
    );
}

/// Every validation rule answers 400 naming its field, and nothing is stored.
#[tokio::test]
async fn bad_input_is_400_naming_the_field_and_stores_nothing() {
    let api = Api::new();
    let cases: Vec<(Value, &str)> = vec![
        (json!({"docker_image": "Bad Image"}), "docker_image"),
        (json!({"docker_image": 7}), "docker_image"),
        (json!({"docker_image": "nginx@sha256:abc"}), "docker_image"),
        (
            json!({"docker_image": "nginx", "starting_ports": [0]}),
            "starting_ports",
        ),
        (
            json!({"docker_image": "nginx", "starting_ports": [70000]}),
            "starting_ports",
        ),
        (
            json!({"docker_image": "nginx", "starting_ports": [{"x": "80"}]}),
            "starting_ports",
        ),
        (
            json!({"docker_image": "nginx", "starting_ports": "80"}),
            "starting_ports",
        ),
        (
            json!({"docker_image": "nginx", "starting_ports": [80, {"81": "80"}]}),
            "starting_ports",
        ),
        (
            json!({"docker_image": "nginx", "starting_ports": [65535], "containers_per": {"server": 2}}),
            "starting_ports",
        ),
        (
            json!({"docker_image": "nginx", "containers_per": {"cpu": 1, "server": 1}}),
            "containers_per",
        ),
        (
            json!({"docker_image": "nginx", "containers_per": {"cores": 1}}),
            "containers_per",
        ),
        (
            json!({"docker_image": "nginx", "containers_per": {"server": 0}}),
            "containers_per",
        ),
        (
            json!({"docker_image": "nginx", "containers_per": {"server": 1.5}}),
            "containers_per",
        ),
        (
            json!({"docker_image": "nginx", "containers_per": {"cpu": -2}}),
            "containers_per",
        ),
        (
            json!({"docker_image": "nginx", "env_vars": {"A=B": "x"}}),
            "env_vars",
        ),
        (
            json!({"docker_image": "nginx", "env_vars": {"A": {"nested": 1}}}),
            "env_vars",
        ),
        (
            json!({"docker_image": "nginx", "env_vars": "A=B"}),
            "env_vars",
        ),
        (
            json!({"docker_image": "nginx", "volumes": ["relative"]}),
            "volumes[0]",
        ),
        (
            json!({"docker_image": "nginx", "volumes": "/a:/b"}),
            "volumes",
        ),
        (
            json!({"docker_image": "nginx", "devices": ["/dev/x:/dev/x:q"]}),
            "devices[0]",
        ),
        (
            json!({"docker_image": "nginx", "networks": ["host", "bridge"]}),
            "networks",
        ),
        (
            json!({"docker_image": "nginx", "networks": ["none", "nebula"]}),
            "networks",
        ),
        (json!({"docker_image": "nginx", "networks": []}), "networks"),
        (
            json!({"docker_image": "nginx", "networks": ["bad name"]}),
            "networks",
        ),
        (
            json!({"docker_image": "nginx", "running": "yes"}),
            "running",
        ),
        (
            json!({"docker_image": "nginx", "privileged": 1}),
            "privileged",
        ),
        (
            json!({"docker_image": "nginx", "rollout": {"wave_size": 0}}),
            "rollout.wave_size",
        ),
        (
            json!({"docker_image": "nginx", "memory_limit_mb": 0}),
            "memory_limit_mb",
        ),
        (
            json!({"docker_image": "nginx", "app_owner": "me"}),
            "app_owner",
        ),
    ];
    for (body, field) in cases {
        let (code, reply) = api
            .call("POST", "/api/v2/apps/site", Some(body.clone()))
            .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        let fields: Vec<&str> = reply["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{body}: {reply}");
        assert!(
            reply[field].is_string(),
            "{body}: top-level key names the field: {reply}"
        );
    }
    assert_eq!(
        api.call("GET", "/api/v2/apps", None).await.1,
        json!({"apps": []}),
        "nothing stored"
    );

    // Bad names in the path.
    for name in ["-x", "a%20b", &"a".repeat(64)] {
        let (code, reply) = api
            .call(
                "POST",
                &format!("/api/v2/apps/{name}"),
                Some(json!({"docker_image": "nginx"})),
            )
            .await;
        assert_eq!(
            (code, reply["errors"][0]["field"].clone()),
            (StatusCode::BAD_REQUEST, json!("app_name")),
            "{name}"
        );
    }

    // Updates are validated the same way and change nothing.
    api.call(
        "POST",
        "/api/v2/apps/site",
        Some(json!({"docker_image": "nginx"})),
    )
    .await;
    let (code, _) = api
        .call(
            "PATCH",
            "/api/v2/apps/site/update",
            Some(json!({"networks": ["host", "x"]})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = api
        .call(
            "PUT",
            "/api/v2/apps/site/update",
            Some(json!({"app_name": "other", "privileged": true})),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::ACCEPTED,
        "read-only fields are ignored, not applied"
    );
    let doc = api.call("GET", "/api/v2/apps/site", None).await.1;
    assert_eq!(
        (doc["app_name"].clone(), doc["networks"].clone()),
        (json!("site"), json!(["nebula", "bridge"]))
    );
}

#[tokio::test]
async fn healthcheck_in_v1_and_v2_bodies_updates_and_documents() {
    let api = Api::new();
    // v1 create: the nine fields plus a healthcheck, normalized in the stored document.
    let mut v1 = v1_site();
    v1["healthcheck"] = json!({"test": "wget -q -O- http://127.0.0.1/", "interval": "1m",
        "timeout": 3, "retries": 2, "start_period": "5s"});
    let (code, doc) = api.call("POST", "/api/apps/site", Some(v1)).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{doc}");
    let want = json!({"test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1/"], "interval": 60,
        "timeout": 3, "retries": 2, "start_period": 5});
    assert_eq!(doc["healthcheck"], want);
    assert_eq!(
        api.call("GET", "/api/v2/apps/site", None).await.1["healthcheck"],
        want
    );

    // A bad part: 400 naming it, nothing stored.
    for (body, field) in [
        (
            json!({"healthcheck": {"interval": 0}}),
            "healthcheck.interval",
        ),
        (
            json!({"healthcheck": {"disable": true, "retries": 3}}),
            "healthcheck",
        ),
        (
            json!({"healthcheck": {"test": ["true"]}}),
            "healthcheck.test",
        ),
        (
            json!({"healthcheck": {"retries": 1000}}),
            "healthcheck.retries",
        ),
    ] {
        let (code, reply) = api
            .call("PATCH", "/api/v2/apps/site/update", Some(body.clone()))
            .await;
        assert_eq!(
            (code, reply["errors"][0]["field"].clone()),
            (StatusCode::BAD_REQUEST, json!(field)),
            "{body}: {reply}"
        );
        assert!(reply[field].is_string(), "{reply}");
    }
    let doc = api.call("GET", "/api/v2/apps/site", None).await.1;
    assert_eq!(
        (doc["app_id"].clone(), doc["healthcheck"].clone()),
        (json!(1), want)
    );

    // PUT changes it, PATCH null removes it; a v2 create without it has none.
    let (code, doc) = api
        .call(
            "PUT",
            "/api/v2/apps/site/update",
            Some(json!({"healthcheck": {"disable": true}})),
        )
        .await;
    assert_eq!(
        (code, doc["healthcheck"].clone()),
        (StatusCode::ACCEPTED, json!({"disable": true}))
    );
    let (_, doc) = api
        .call(
            "PATCH",
            "/api/v2/apps/site/update",
            Some(json!({"healthcheck": null})),
        )
        .await;
    assert!(doc.get("healthcheck").is_none(), "{doc}");
    let (_, doc) = api
        .call(
            "POST",
            "/api/v2/apps/plain",
            Some(json!({"docker_image": "nginx"})),
        )
        .await;
    assert!(doc.get("healthcheck").is_none(), "{doc}");
}

#[tokio::test]
async fn malformed_oversized_and_unauthenticated_requests() {
    let api = Api::new();
    let (code, body) = api
        .raw(
            "POST",
            "/api/v2/apps/site",
            Some(&basic()),
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(
        (code, body["errors"][0]["field"].clone()),
        (StatusCode::BAD_REQUEST, json!("body"))
    );
    let (code, _) = api
        .raw(
            "POST",
            "/api/v2/apps/site",
            Some(&basic()),
            b"[1,2]".to_vec(),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let huge = format!("{{\"docker_image\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let (code, _) = api
        .raw(
            "POST",
            "/api/v2/apps/site",
            Some(&basic()),
            huge.into_bytes(),
        )
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    for auth in [
        None,
        Some("Basic YWRtaW46d3Jvbmc="),
        Some("Bearer nope"),
        Some("Digest x"),
    ] {
        for path in [
            "/api/v2/status",
            "/api/status",
            "/api/v2/apps",
            "/api/apps/site",
        ] {
            let (code, _) = api.raw("GET", path, auth, Vec::new()).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{path} with {auth:?}");
        }
    }
    let (code, _) = api
        .raw("GET", "/api/v2/apps", Some("Bearer tok"), Vec::new())
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        api.call("GET", "/api/v3/apps", None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.call("DELETE", "/api/v2/apps", None).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        api.call("GET", "/api/v2/apps", None).await.1,
        json!({"apps": []}),
        "nothing stored"
    );
}
