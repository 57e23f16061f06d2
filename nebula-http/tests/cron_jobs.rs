//! Cron jobs as a client sees them: status codes and bodies of every route, success and error
//! paths, against the in-memory store.

mod common;

use axum::http::StatusCode;
use common::{Api, basic};
use serde_json::{Value, json};

const JOB: &str = "/api/v2/cron_jobs/backup";

fn backup() -> Value {
    json!({"docker_image": "127.0.0.1:5000/tools/backup", "schedule": "*/5 * * * *"})
}

fn exists(b: bool) -> Value {
    json!({ "cron_job_exists": b })
}

#[tokio::test]
async fn create_fills_the_defaults_and_refuses_a_second_create() {
    let api = Api::new();
    assert_eq!(
        api.call("GET", "/api/v2/cron_jobs", None).await,
        (StatusCode::OK, json!({"cron_jobs": []}))
    );
    let (code, doc) = api.call("POST", JOB, Some(backup())).await;
    assert_eq!(code, StatusCode::OK);
    let incarnation = doc["incarnation"].as_u64().unwrap();
    assert!(incarnation > 0);
    assert_eq!(
        doc,
        json!({"cron_job_name": "backup", "cron_job_id": 1, "incarnation": incarnation,
            "schedule": "*/5 * * * *", "docker_image": "127.0.0.1:5000/tools/backup",
            "env_vars": {}, "running": true, "networks": ["nebula", "bridge"], "volumes": [],
            "devices": [], "privileged": false})
    );
    // Exists is checked before the body, as the original.
    assert_eq!(
        api.call("POST", JOB, Some(json!({}))).await,
        (StatusCode::FORBIDDEN, exists(true))
    );
    assert_eq!(
        api.call("GET", "/api/v2/cron_jobs", None).await,
        (StatusCode::OK, json!({"cron_jobs": ["backup"]}))
    );
    assert_eq!(api.call("GET", JOB, None).await, (StatusCode::OK, doc));
}

#[tokio::test]
async fn create_takes_every_field() {
    let api = Api::new();
    let body = json!({"docker_image": "busybox", "schedule": "0 3 * * MON", "env_vars": {"A": 1},
        "running": false, "networks": ["host"], "volumes": ["/data:/data:ro"],
        "devices": ["/dev/null"], "privileged": true, "memory_limit_mb": 64, "cpu_limit": 0.5,
        "run_command": ["sh", "-c", "echo ran"], "entrypoint": null, "cron_job_id": 99,
        "healthcheck": {"test": "true", "timeout": "10s"}});
    let (code, doc) = api.call("POST", JOB, Some(body)).await;
    assert_eq!(code, StatusCode::OK, "{doc}");
    assert_eq!(doc["cron_job_id"], 1, "read-only fields are ignored");
    assert_eq!(doc["env_vars"], json!({"A": "1"}));
    assert_eq!(doc["running"], false);
    assert_eq!(doc["networks"], json!(["host"]));
    assert_eq!(doc["privileged"], true);
    assert_eq!(doc["memory_limit_mb"], 64);
    assert_eq!(doc["run_command"], json!(["sh", "-c", "echo ran"]));
    assert!(doc.get("entrypoint").is_none());
    assert_eq!(
        doc["healthcheck"],
        json!({"test": ["CMD-SHELL", "true"], "timeout": 10})
    );
}

#[tokio::test]
async fn create_errors() {
    let api = Api::new();
    assert_eq!(
        api.call("POST", JOB, Some(json!({}))).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"missing_parameters": ["docker_image", "schedule"]})
        )
    );
    assert_eq!(
        api.call(
            "POST",
            JOB,
            Some(json!({"docker_image": "x", "schedule": null}))
        )
        .await,
        (
            StatusCode::BAD_REQUEST,
            json!({"missing_parameters": ["schedule"]})
        )
    );
    assert_eq!(
        api.call("POST", JOB, None).await,
        (
            StatusCode::BAD_REQUEST,
            json!({"missing_parameters": ["docker_image", "schedule"]})
        )
    );
    for schedule in [
        json!("61 * * * *"),
        json!("* * * *"),
        json!("* * * * * *"),
        json!("0 0 30 2 *"),
        json!("every minute"),
        json!(5),
    ] {
        let (code, body) = api
            .call(
                "POST",
                JOB,
                Some(json!({"docker_image": "x", "schedule": schedule})),
            )
            .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{schedule}");
        assert_eq!(body["schedule_valid"], false, "{schedule}: {body}");
        assert_eq!(body["errors"][0]["field"], "schedule");
    }
    // Other fields are named; nothing was stored by any of these.
    let (code, body) = api
        .call(
            "POST",
            JOB,
            Some(json!({"docker_image": "x", "schedule": "* * * * *", "networks": []})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(body.get("schedule_valid").is_none());
    assert_eq!(body["errors"][0]["field"], "networks");
    let (code, body) = api
        .call(
            "POST",
            JOB,
            Some(
                json!({"docker_image": "x", "schedule": "* * * * *", "bogus": 1, "running": "no"}),
            ),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "bogus");
    let (code, body) = api
        .call(
            "POST",
            JOB,
            Some(json!({"docker_image": "x", "schedule": "* * * * *", "running": "no"})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "running");
    let (code, _) = api.raw("POST", JOB, Some(&basic()), b"[1]".to_vec()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, body) = api
        .call("POST", "/api/v2/cron_jobs/bad%20name", Some(backup()))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "cron_job_name");
    assert_eq!(
        api.call("GET", JOB, None).await,
        (StatusCode::FORBIDDEN, exists(false))
    );
}

#[tokio::test]
async fn partial_updates_change_only_the_fields_given() {
    let api = Api::new();
    let (_, created) = api.call("POST", JOB, Some(backup())).await;
    let (code, doc) = api
        .call(
            "PUT",
            &format!("{JOB}/update"),
            Some(json!({"schedule": "0 * * * *"})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(doc["cron_job_id"], 2);
    assert_eq!(doc["schedule"], "0 * * * *");
    assert_eq!(doc["docker_image"], created["docker_image"]);
    assert_eq!(doc["incarnation"], created["incarnation"]);
    let (code, doc) = api
        .call(
            "PATCH",
            &format!("{JOB}/update"),
            Some(json!({"running": false, "env_vars": {"K": "v"}})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(doc["cron_job_id"], 3);
    assert_eq!(doc["running"], false);
    assert_eq!(doc["schedule"], "0 * * * *");
    assert_eq!(api.call("GET", JOB, None).await, (StatusCode::OK, doc));
}

#[tokio::test]
async fn partial_update_errors() {
    let api = Api::new();
    let path = format!("{JOB}/update");
    assert_eq!(
        api.call("PUT", &path, Some(json!({"schedule": "* * * * *"})))
            .await,
        (StatusCode::FORBIDDEN, exists(false))
    );
    api.call("POST", JOB, Some(backup())).await;
    for empty in [json!({}), json!({"cron_job_id": 7})] {
        assert_eq!(
            api.call("PATCH", &path, Some(empty)).await,
            (StatusCode::BAD_REQUEST, json!({"missing_parameters": true}))
        );
    }
    assert_eq!(
        api.call("PUT", &path, None).await,
        (StatusCode::BAD_REQUEST, json!({"missing_parameters": true}))
    );
    let (code, body) = api
        .call("PUT", &path, Some(json!({"schedule": "* * *"})))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["schedule_valid"], false);
    let (code, body) = api
        .call("PUT", &path, Some(json!({"docker_image": "BAD IMAGE"})))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "docker_image");
    let (code, body) = api
        .call(
            "PATCH",
            &path,
            Some(json!({"healthcheck": {"disable": true, "test": "true"}})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "healthcheck");
    let (code, body) = api
        .call("PATCH", &path, Some(json!({"healthcheck": {"retries": 0}})))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["errors"][0]["field"], "healthcheck.retries");
    let (_, doc) = api.call("GET", JOB, None).await;
    assert_eq!(doc["cron_job_id"], 1, "nothing stored");
}

#[tokio::test]
async fn full_update_resets_what_it_does_not_give() {
    let api = Api::new();
    let path = format!("{JOB}/update");
    assert_eq!(
        api.call("POST", &path, Some(backup())).await,
        (StatusCode::FORBIDDEN, exists(false))
    );
    let mut body = backup();
    body["env_vars"] = json!({"A": "1"});
    body["networks"] = json!(["bridge"]);
    api.call("POST", JOB, Some(body)).await;
    let (code, doc) = api
        .call(
            "POST",
            &path,
            Some(json!({"docker_image": "busybox", "schedule": "@hourly"})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(doc["cron_job_id"], 2);
    assert_eq!(doc["docker_image"], "busybox");
    assert_eq!(doc["schedule"], "@hourly");
    assert_eq!(doc["env_vars"], json!({}));
    assert_eq!(doc["networks"], json!(["nebula", "bridge"]));
    assert_eq!(
        api.call("POST", &path, Some(json!({"docker_image": "busybox"})))
            .await,
        (
            StatusCode::BAD_REQUEST,
            json!({"missing_parameters": ["schedule"]})
        )
    );
    let (code, body) = api
        .call(
            "POST",
            &path,
            Some(json!({"docker_image": "busybox", "schedule": "0 0 31 4 *"})),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(body["schedule_valid"], false);
    let (_, doc) = api.call("GET", JOB, None).await;
    assert_eq!(doc["cron_job_id"], 2);
}

#[tokio::test]
async fn delete_then_recreate_gets_a_new_incarnation() {
    let api = Api::new();
    assert_eq!(
        api.call("DELETE", JOB, None).await,
        (StatusCode::FORBIDDEN, exists(false))
    );
    let (_, first) = api.call("POST", JOB, Some(backup())).await;
    assert_eq!(
        api.call("DELETE", JOB, None).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(
        api.call("GET", JOB, None).await,
        (StatusCode::FORBIDDEN, exists(false))
    );
    assert_eq!(
        api.call("GET", "/api/v2/cron_jobs", None).await,
        (StatusCode::OK, json!({"cron_jobs": []}))
    );
    let (code, second) = api.call("POST", JOB, Some(backup())).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(second["cron_job_id"], 1);
    assert!(second["incarnation"].as_u64() > first["incarnation"].as_u64());
}

#[tokio::test]
async fn every_route_needs_credentials() {
    let api = Api::new();
    api.call("POST", JOB, Some(backup())).await;
    let update = format!("{JOB}/update");
    for (method, path) in [
        ("GET", "/api/v2/cron_jobs"),
        ("GET", JOB),
        ("POST", JOB),
        ("DELETE", JOB),
        ("POST", update.as_str()),
        ("PUT", update.as_str()),
        ("PATCH", update.as_str()),
    ] {
        let body = serde_json::to_vec(&backup()).unwrap();
        let (code, _) = api.raw(method, path, None, body.clone()).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}");
        let (code, _) = api.raw(method, path, Some("Bearer nope"), body).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let (code, _) = api.raw("GET", JOB, Some("Bearer tok"), Vec::new()).await;
    assert_eq!(code, StatusCode::OK);
    // v1 has no cron jobs.
    let (code, _) = api.call("GET", "/api/cron_jobs", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn device_groups_name_existing_jobs_and_info_carries_their_current_documents() {
    let api = Api::new();
    let dg = "/api/v2/device_groups/edge";
    assert_eq!(
        api.call("POST", dg, Some(json!({"cron_jobs": ["backup"]})))
            .await,
        (StatusCode::FORBIDDEN, exists(false))
    );
    api.call("POST", JOB, Some(backup())).await;
    let (code, _) = api
        .call("POST", dg, Some(json!({"cron_jobs": ["backup"]})))
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        api.call(
            "PUT",
            &format!("{dg}/update"),
            Some(json!({"cron_jobs": ["backup", "other"]}))
        )
        .await,
        (StatusCode::FORBIDDEN, exists(false))
    );
    let (code, info) = api.call("GET", &format!("{dg}/info"), None).await;
    assert_eq!(code, StatusCode::OK);
    let (_, doc) = api.call("GET", JOB, None).await;
    assert_eq!(info["cron_jobs"], json!([doc]));
    assert_eq!(info["cron_jobs_list"], json!(["backup"]));

    // A change through this process is in the next /info at once (the cache is cleared).
    let (_, changed) = api
        .call(
            "PATCH",
            &format!("{JOB}/update"),
            Some(json!({"running": false})),
        )
        .await;
    let (_, info) = api.call("GET", &format!("{dg}/info"), None).await;
    assert_eq!(info["cron_jobs"], json!([changed]));

    // Delete takes the job out of the group, with a new device_group_id.
    api.call("DELETE", JOB, None).await;
    let (_, group) = api.call("GET", dg, None).await;
    assert_eq!(group["cron_jobs"], json!([]));
    assert_eq!(group["device_group_id"], 2);
    let (_, info) = api.call("GET", &format!("{dg}/info"), None).await;
    assert_eq!(
        (info["cron_jobs"].clone(), info["device_group_id"].clone()),
        (json!([]), json!(2))
    );
}

mod no_5xx {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Map;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::String),
            Just(Value::String("* * * * *".into())),
            Just(Value::String("0/5 1-3 * JAN-MAR MON#2".into())),
            Just(Value::String("0 0 30 2 *".into())),
            Just(Value::String("busybox".into())),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("schedule".to_owned()),
                        Just("docker_image".to_owned()),
                        Just("env_vars".to_owned()),
                        Just("networks".to_owned()),
                        Just("volumes".to_owned()),
                        Just("devices".to_owned()),
                        Just("running".to_owned()),
                        Just("privileged".to_owned()),
                        Just("run_command".to_owned()),
                        Just("entrypoint".to_owned()),
                        Just("memory_limit_mb".to_owned()),
                        Just("cpu_limit".to_owned()),
                        "[a-z_]{1,8}",
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
            ]
        })
    }

    const ROUTES: [(&str, &str); 7] = [
        ("POST", "/api/v2/cron_jobs/{}"),
        ("GET", "/api/v2/cron_jobs/{}"),
        ("DELETE", "/api/v2/cron_jobs/{}"),
        ("POST", "/api/v2/cron_jobs/{}/update"),
        ("PUT", "/api/v2/cron_jobs/{}/update"),
        ("PATCH", "/api/v2/cron_jobs/{}/update"),
        ("POST", "/api/v2/device_groups/{}"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn no_input_on_a_cron_job_route_gives_a_5xx(
            route in 0..ROUTES.len(),
            name in prop_oneof!["[a-z]{1,5}", "[ -~]{0,70}"],
            body in arb_json(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let api = Api::new();
            let (method, path) = ROUTES[route];
            let encoded: String = name
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
                .collect();
            let uri = path.replace("{}", &encoded);
            let body = if route == 6 { serde_json::json!({"cron_jobs": [name.clone()]}) } else { body };
            let (status, reply) = rt.block_on(async {
                // Seed a job so that updates reach validation of the merged document.
                api.call("POST", &format!("/api/v2/cron_jobs/{encoded}"), Some(backup())).await;
                api.call(method, &uri, Some(body)).await
            });
            prop_assert!(status.as_u16() < 500, "{} {} -> {} {}", method, uri, status, reply);
        }
    }
}
