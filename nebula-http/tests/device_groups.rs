//! Device groups, `/info` with its cache and ETag, and prune, as a client sees them: status
//! codes and bodies of every route against the in-memory store.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use common::{Api, Reply};
use nebula_http::{InfoCacheConfig, RouterOptions};
use serde_json::{Value, json};

impl Api {
    fn with_cache(info_cache: InfoCacheConfig) -> Self {
        let mut options = RouterOptions::default();
        options.info_cache = info_cache;
        Self::with_options(options)
    }

    async fn info(&self, dg: &str, if_none_match: Option<&str>) -> Reply {
        let auth = common::basic();
        let mut headers = vec![(header::AUTHORIZATION, auth.as_str())];
        if let Some(tag) = if_none_match {
            headers.push((header::IF_NONE_MATCH, tag));
        }
        self.request(
            "GET",
            &format!("/api/v2/device_groups/{dg}/info"),
            None,
            &headers,
        )
        .await
    }

    async fn app(&self, name: &str) {
        let (code, _) = self
            .call(
                "POST",
                &format!("/api/v2/apps/{name}"),
                Some(json!({"docker_image": "nginx"})),
            )
            .await;
        assert_eq!(code, StatusCode::OK);
    }

    async fn cron_job(&self, name: &str) {
        let (code, _) = self
            .call(
                "POST",
                &format!("/api/v2/cron_jobs/{name}"),
                Some(json!({"docker_image": "backup", "schedule": "0 3 * * *"})),
            )
            .await;
        assert_eq!(code, StatusCode::OK);
    }
}

fn etag(r: &Reply) -> String {
    r.headers[header::ETAG].to_str().unwrap().to_owned()
}

fn without_incarnation(mut doc: Value) -> Value {
    assert!(doc["incarnation"].as_u64().unwrap() > 0, "{doc}");
    doc.as_object_mut().unwrap().remove("incarnation");
    doc
}

#[tokio::test]
async fn create_get_list_and_their_errors() {
    let api = Api::new();
    api.app("a").await;
    api.app("b").await;
    assert_eq!(
        api.call("GET", "/api/v2/device_groups", None).await,
        (StatusCode::OK, json!({"device_groups": []}))
    );
    let (code, doc) = api
        .call(
            "POST",
            "/api/v2/device_groups/edge",
            Some(json!({"apps": ["a", "b"]})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        without_incarnation(doc.clone()),
        json!({"device_group": "edge", "apps": ["a", "b"], "cron_jobs": [], "device_group_id": 1, "prune_id": 1})
    );
    assert_eq!(
        api.call("GET", "/api/v2/device_groups/edge", None).await,
        (StatusCode::OK, doc)
    );
    let (code, empty) = api.call("POST", "/api/v2/device_groups/empty", None).await;
    assert_eq!(code, StatusCode::OK, "both lists default to []");
    assert_eq!(
        (empty["apps"].clone(), empty["cron_jobs"].clone()),
        (json!([]), json!([]))
    );
    assert_eq!(
        api.call("GET", "/api/v2/device_groups", None).await,
        (StatusCode::OK, json!({"device_groups": ["edge", "empty"]}))
    );

    let cases = [
        (
            json!({}),
            "edge",
            StatusCode::FORBIDDEN,
            json!({"device_group_exists": true}),
        ),
        (
            json!({"apps": "a"}),
            "x",
            StatusCode::BAD_REQUEST,
            json!({"apps_is_list": false}),
        ),
        (
            json!({"cron_jobs": {}}),
            "x",
            StatusCode::BAD_REQUEST,
            json!({"cron_jobs_is_list": false}),
        ),
        (
            json!({"apps": ["a", "nope"]}),
            "x",
            StatusCode::FORBIDDEN,
            json!({"app_exists": false}),
        ),
        (
            json!({"apps": ["not a name"]}),
            "x",
            StatusCode::FORBIDDEN,
            json!({"app_exists": false}),
        ),
    ];
    for (body, dg, status, expected) in cases {
        assert_eq!(
            api.call(
                "POST",
                &format!("/api/v2/device_groups/{dg}"),
                Some(body.clone())
            )
            .await,
            (status, expected),
            "{body}"
        );
    }
    let (code, body) = api
        .call(
            "POST",
            "/api/v2/device_groups/x",
            Some(json!({"apps": [1]})),
        )
        .await;
    assert_eq!(
        (code, body["apps"].is_string()),
        (StatusCode::BAD_REQUEST, true)
    );
    let (code, body) = api
        .call(
            "POST",
            "/api/v2/device_groups/x",
            Some(json!({"cron_jobs": ["bad name"]})),
        )
        .await;
    assert_eq!(
        (code, body["cron_jobs"].is_string()),
        (StatusCode::BAD_REQUEST, true)
    );
    let (code, body) = api
        .call("POST", "/api/v2/device_groups/x", Some(json!({"bogus": 1})))
        .await;
    assert_eq!(
        (code, body["bogus"].is_string()),
        (StatusCode::BAD_REQUEST, true)
    );
    let (code, body) = api.call("POST", "/api/v2/device_groups/x%20y", None).await;
    assert_eq!(
        (code, body["device_group"].is_string()),
        (StatusCode::BAD_REQUEST, true)
    );
    assert_eq!(
        api.call("GET", "/api/v2/device_groups/x", None).await,
        (StatusCode::FORBIDDEN, json!({"device_group_exists": false})),
        "nothing was stored by the failed creates"
    );
    // Echoed read-only fields are ignored.
    let (code, _) = api
        .call(
            "POST",
            "/api/v2/device_groups/x",
            Some(json!({"device_group": "x", "device_group_id": 9, "prune_id": 9, "apps": []})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test]
async fn updates_delete_and_their_errors() {
    let api = Api::new();
    api.app("a").await;
    api.app("b").await;
    api.cron_job("nightly").await;
    api.cron_job("c").await;
    api.call(
        "POST",
        "/api/v2/device_groups/edge",
        Some(json!({"apps": ["a"], "cron_jobs": ["nightly"]})),
    )
    .await;

    let (code, doc) = api
        .call(
            "POST",
            "/api/v2/device_groups/edge/update",
            Some(json!({"apps": ["b"]})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(
        (
            doc["apps"].clone(),
            doc["cron_jobs"].clone(),
            doc["device_group_id"].clone()
        ),
        (json!(["b"]), json!([]), json!(2)),
        "POST replaces both lists"
    );
    for method in ["PUT", "PATCH"] {
        let (code, doc) = api
            .call(
                method,
                "/api/v2/device_groups/edge/update",
                Some(json!({"cron_jobs": ["c"]})),
            )
            .await;
        assert_eq!(code, StatusCode::ACCEPTED);
        assert_eq!(
            (doc["apps"].clone(), doc["cron_jobs"].clone()),
            (json!(["b"]), json!(["c"]))
        );
    }
    let (_, doc) = api.call("GET", "/api/v2/device_groups/edge", None).await;
    assert_eq!(doc["device_group_id"], 4);

    let missing = (StatusCode::FORBIDDEN, json!({"device_group_exists": false}));
    assert_eq!(
        api.call(
            "POST",
            "/api/v2/device_groups/nope/update",
            Some(json!({"apps": []}))
        )
        .await,
        missing
    );
    assert_eq!(
        api.call(
            "PUT",
            "/api/v2/device_groups/nope/update",
            Some(json!({"apps": []}))
        )
        .await,
        missing
    );
    assert_eq!(
        api.call(
            "POST",
            "/api/v2/device_groups/edge/update",
            Some(json!({"apps": ["zz"]}))
        )
        .await,
        (StatusCode::FORBIDDEN, json!({"app_exists": false}))
    );
    assert_eq!(
        api.call(
            "PATCH",
            "/api/v2/device_groups/edge/update",
            Some(json!({"apps": 3}))
        )
        .await,
        (StatusCode::BAD_REQUEST, json!({"apps_is_list": false}))
    );
    for body in [None, Some(json!({})), Some(json!({"device_group_id": 7}))] {
        assert_eq!(
            api.call("PUT", "/api/v2/device_groups/edge/update", body)
                .await,
            (StatusCode::BAD_REQUEST, json!({"missing_parameters": true}))
        );
    }
    let (_, doc) = api.call("GET", "/api/v2/device_groups/edge", None).await;
    assert_eq!(doc["device_group_id"], 4, "failed updates store nothing");

    assert_eq!(
        api.call("DELETE", "/api/v2/device_groups/edge", None).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(
        api.call("DELETE", "/api/v2/device_groups/edge", None).await,
        missing
    );
    assert_eq!(
        api.call("GET", "/api/v2/device_groups/edge", None).await,
        missing
    );
    let (code, doc) = api.call("POST", "/api/v2/device_groups/edge", None).await;
    assert_eq!(
        (code, doc["device_group_id"].clone()),
        (StatusCode::OK, json!(1))
    );
}

#[tokio::test]
async fn prune_one_group_and_all_groups() {
    let api = Api::new();
    assert_eq!(
        api.call("POST", "/api/v2/prune", None).await,
        (StatusCode::ACCEPTED, json!({"prune_ids": {}}))
    );
    api.call("POST", "/api/v2/device_groups/x", None).await;
    api.call("POST", "/api/v2/device_groups/y", None).await;
    let (code, doc) = api
        .call("POST", "/api/v2/device_groups/x/prune", None)
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(
        (doc["prune_id"].clone(), doc["device_group_id"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(
        api.call("POST", "/api/v2/device_groups/nope/prune", None)
            .await,
        (StatusCode::FORBIDDEN, json!({"device_group_exists": false}))
    );
    assert_eq!(
        api.call("POST", "/api/v2/prune", None).await,
        (StatusCode::ACCEPTED, json!({"prune_ids": {"x": 3, "y": 2}}))
    );
    let (_, info) = api.call("GET", "/api/v2/device_groups/x/info", None).await;
    assert_eq!(
        info["prune_id"], 3,
        "a prune through this process is seen at once"
    );
}

#[tokio::test]
async fn info_is_the_whole_desired_state_and_follows_app_deletes() {
    let api = Api::new();
    api.app("a").await;
    api.app("b").await;
    api.cron_job("nightly").await;
    api.call(
        "POST",
        "/api/v2/device_groups/edge",
        Some(json!({"apps": ["b", "a"], "cron_jobs": ["nightly"]})),
    )
    .await;
    let r = api.info("edge", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    let info = r.body;
    assert_eq!(info["apps_list"], json!(["b", "a"]));
    assert_eq!(info["cron_jobs_list"], json!(["nightly"]));
    let (_, nightly) = api.call("GET", "/api/v2/cron_jobs/nightly", None).await;
    assert_eq!(
        info["cron_jobs"],
        json!([nightly]),
        "full cron job documents"
    );
    assert_eq!(
        (info["device_group_id"].clone(), info["prune_id"].clone()),
        (json!(1), json!(1))
    );
    let (_, a) = api.call("GET", "/api/v2/apps/a", None).await;
    assert_eq!(info["apps"][1], a, "full app documents");
    assert_eq!(info["apps"][0]["app_name"], "b");
    assert_eq!(
        api.info("nope", None).await.body,
        json!({"device_group_exists": false})
    );
    assert_eq!(api.info("nope", None).await.status, StatusCode::FORBIDDEN);

    // Deleting an app takes it out of its groups, with device_group_id + 1 (fix 6.4.2).
    assert_eq!(
        api.call("DELETE", "/api/v2/apps/a", None).await.0,
        StatusCode::OK
    );
    let (_, group) = api.call("GET", "/api/v2/device_groups/edge", None).await;
    assert_eq!(
        (group["apps"].clone(), group["device_group_id"].clone()),
        (json!(["b"]), json!(2))
    );
    let info = api.info("edge", None).await.body;
    assert_eq!(
        (
            info["apps_list"].clone(),
            info["apps"].as_array().unwrap().len(),
            info["device_group_id"].clone()
        ),
        (json!(["b"]), 1, json!(2))
    );
}

#[tokio::test]
async fn info_etag_answers_304_and_changes_with_the_state() {
    let api = Api::new();
    api.app("a").await;
    api.call(
        "POST",
        "/api/v2/device_groups/edge",
        Some(json!({"apps": ["a"]})),
    )
    .await;
    let first = api.info("edge", None).await;
    let tag = etag(&first);
    assert!(
        tag.starts_with('"') && tag.ends_with('"') && tag.len() > 10,
        "{tag}"
    );

    let same = api.info("edge", Some(&tag)).await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert_eq!(same.raw_len, 0, "a 304 has no body");
    assert_eq!(etag(&same), tag);
    assert_eq!(
        api.info("edge", Some("\"stale\"")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api.info("edge", Some(&format!("\"x\", W/{tag}")))
            .await
            .status,
        StatusCode::NOT_MODIFIED
    );

    // Every kind of write through this process shows at once, with a new tag.
    let mut seen = vec![tag.clone()];
    let writes: [(&str, &str, Option<Value>); 4] = [
        ("POST", "/api/v2/apps/a/stop", None),
        (
            "PUT",
            "/api/v2/apps/a/update",
            Some(json!({"env_vars": {"A": "1"}})),
        ),
        ("POST", "/api/v2/device_groups/edge/prune", None),
        (
            "POST",
            "/api/v2/device_groups/edge/update",
            Some(json!({"apps": ["a"]})),
        ),
    ];
    for (method, path, body) in writes {
        let (code, _) = api.call(method, path, body).await;
        assert!(code.is_success(), "{method} {path}: {code}");
        let r = api.info("edge", Some(seen.last().unwrap())).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{method} {path} changes /info at once"
        );
        let tag = etag(&r);
        assert!(!seen.contains(&tag), "{method} {path} gives a new tag");
        seen.push(tag);
    }
    let info = api.info("edge", None).await.body;
    assert_eq!(info["apps"][0]["running"], false);
    assert_eq!(info["apps"][0]["env_vars"], json!({"A": "1"}));
    assert_eq!(
        (info["prune_id"].clone(), info["device_group_id"].clone()),
        (json!(2), json!(2))
    );

    // The same state gives the same tag (a deterministic body), also on a cold cache.
    let other = Api::new();
    other.app("z").await;
    other.call("POST", "/api/v2/device_groups/g", None).await;
    let cold = etag(&other.info("g", None).await);
    other.call("POST", "/api/v2/apps/z/stop", None).await; // clears the cache
    assert_eq!(etag(&other.info("g", None).await), cold);

    // A deleted group: 403, and nothing cached for it.
    api.call("DELETE", "/api/v2/device_groups/edge", None).await;
    assert_eq!(
        api.info("edge", Some(seen.last().unwrap())).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn info_is_cached_for_cache_time_against_writes_elsewhere() {
    let api = Api::with_cache(InfoCacheConfig {
        ttl: Duration::from_millis(400),
        max_size: 16,
    });
    api.app("a").await;
    api.call(
        "POST",
        "/api/v2/device_groups/edge",
        Some(json!({"apps": ["a"]})),
    )
    .await;
    let first = api.info("edge", None).await;
    // Another manager process on the same store changes the group: this one does not know.
    let dg = nebula_core::device_group::DeviceGroupName::parse("edge").unwrap();
    api.elsewhere.prune_device_group(&dg).await.unwrap();
    let cached = api.info("edge", None).await;
    assert_eq!(
        (cached.body["prune_id"].clone(), etag(&cached)),
        (json!(1), etag(&first))
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = api.info("edge", Some(&etag(&first))).await;
    assert_eq!(fresh.status, StatusCode::OK, "expired after CACHE_TIME");
    assert_eq!(fresh.body["prune_id"], 2);

    // CACHE_TIME 0: every call reads the store.
    let uncached = Api::with_cache(InfoCacheConfig {
        ttl: Duration::ZERO,
        max_size: 16,
    });
    uncached
        .call("POST", "/api/v2/device_groups/edge", None)
        .await;
    uncached.info("edge", None).await;
    uncached.elsewhere.prune_device_group(&dg).await.unwrap();
    assert_eq!(uncached.info("edge", None).await.body["prune_id"], 2);
}

#[tokio::test]
async fn auth_comes_before_the_cache() {
    let api = Api::new();
    api.call("POST", "/api/v2/device_groups/edge", None).await;
    let warm = api.info("edge", None).await;
    assert_eq!(warm.status, StatusCode::OK);
    for headers in [vec![], vec![(header::AUTHORIZATION, "Bearer wrong")]] {
        let mut with_tag = headers.clone();
        let tag = etag(&warm);
        with_tag.push((header::IF_NONE_MATCH, tag.as_str()));
        for h in [headers, with_tag] {
            let r = api
                .request("GET", "/api/v2/device_groups/edge/info", None, &h)
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "a cached reply is not served without credentials"
            );
        }
    }
    for (method, path) in [
        ("GET", "/api/v2/device_groups"),
        ("GET", "/api/v2/device_groups/edge"),
        ("POST", "/api/v2/device_groups/new"),
        ("POST", "/api/v2/device_groups/edge/update"),
        ("PUT", "/api/v2/device_groups/edge/update"),
        ("DELETE", "/api/v2/device_groups/edge"),
        ("POST", "/api/v2/device_groups/edge/prune"),
        ("POST", "/api/v2/prune"),
    ] {
        let r = api.request(method, path, None, &[]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let r = api
        .request(
            "GET",
            "/api/v2/device_groups/edge/info",
            None,
            &[(header::AUTHORIZATION, "Bearer tok")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_source_uses_the_etag() {
    use std::sync::Mutex;

    use nebula_core::device_group::DeviceGroupName;
    use nebula_core::worker::{DesiredSource, DesiredState, Selection, SourceError};
    use nebula_http::client::{ClientAuth, HttpSource};

    let api = Api::new();
    let statuses: Arc<Mutex<Vec<u16>>> = Arc::default();
    let seen = statuses.clone();
    let app = api.app.clone().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let seen = seen.clone();
            async move {
                let resp = next.run(req).await;
                seen.lock().unwrap().push(resp.status().as_u16());
                resp
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let auth = Some(ClientAuth::Basic {
        user: "admin".into(),
        password: "pw".into(),
    });
    let source = HttpSource::new(&base, auth, Duration::from_secs(5)).unwrap();
    let edge = Selection::DeviceGroup(DeviceGroupName::parse("edge").unwrap());
    let last = || *statuses.lock().unwrap().last().unwrap();

    assert_eq!(source.fetch(&edge).await.unwrap(), DesiredState::NoGroup);
    api.app("a").await;
    api.call(
        "POST",
        "/api/v2/device_groups/edge",
        Some(json!({"apps": ["a"]})),
    )
    .await;
    let DesiredState::Group(first) = source.fetch(&edge).await.unwrap() else {
        panic!("the group exists")
    };
    assert_eq!((last(), first.apps.len()), (200, 1));
    assert_eq!(
        source.fetch(&edge).await.unwrap(),
        DesiredState::Group(first.clone())
    );
    assert_eq!(last(), 304, "the second fetch is conditional");
    api.call("POST", "/api/v2/device_groups/edge/prune", None)
        .await;
    let DesiredState::Group(pruned) = source.fetch(&edge).await.unwrap() else {
        panic!("the group exists")
    };
    assert_eq!((last(), pruned.prune_id), (200, 2));
    api.call("DELETE", "/api/v2/device_groups/edge", None).await;
    assert_eq!(source.fetch(&edge).await.unwrap(), DesiredState::NoGroup);
    api.call("POST", "/api/v2/device_groups/edge", None).await;
    assert!(
        matches!(source.fetch(&edge).await.unwrap(), DesiredState::Group(g) if g.device_group_id == 1)
    );
    assert_eq!(last(), 200, "a re-created group is read in full");

    let wrong = HttpSource::new(
        &base,
        Some(ClientAuth::Bearer("nope".into())),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(matches!(
        wrong.fetch(&edge).await,
        Err(SourceError::Unauthorized(_))
    ));
    server.abort();
}

#[tokio::test]
async fn an_app_or_cron_job_write_clears_only_the_groups_listing_it() {
    let api = Api::new();
    api.app("a").await;
    api.app("b").await;
    api.cron_job("nightly").await;
    for (group, body) in [
        ("ga", json!({"apps": ["a"]})),
        ("gb", json!({"apps": ["b"]})),
        ("gc", json!({"cron_jobs": ["nightly"]})),
    ] {
        let (code, _) = api
            .call(
                "POST",
                &format!("/api/v2/device_groups/{group}"),
                Some(body),
            )
            .await;
        assert_eq!(code, StatusCode::OK);
    }
    let prune_id = |r: &Reply| r.body["prune_id"].clone();
    for group in ["ga", "gb", "gc"] {
        assert_eq!(prune_id(&api.info(group, None).await), json!(1));
    }
    // Another manager changes every group: only a cleared reply shows it.
    for group in ["ga", "gb", "gc"] {
        let name = nebula_core::device_group::DeviceGroupName::parse(group).unwrap();
        api.elsewhere.prune_device_group(&name).await.unwrap();
    }

    let (code, _) = api.call("POST", "/api/v2/apps/a/stop", None).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let ga = api.info("ga", None).await;
    assert_eq!(prune_id(&ga), json!(2), "ga lists a: cleared");
    assert_eq!(ga.body["apps"][0]["running"], false);
    assert_eq!(prune_id(&api.info("gb", None).await), json!(1), "gb kept");
    assert_eq!(prune_id(&api.info("gc", None).await), json!(1), "gc kept");

    let (code, _) = api
        .call(
            "PATCH",
            "/api/v2/cron_jobs/nightly/update",
            Some(json!({"running": false})),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(
        prune_id(&api.info("gc", None).await),
        json!(2),
        "gc lists it"
    );
    assert_eq!(prune_id(&api.info("gb", None).await), json!(1), "gb kept");

    // Deleting b clears the group it was taken out of.
    let (code, _) = api.call("DELETE", "/api/v2/apps/b", None).await;
    assert_eq!(code, StatusCode::OK);
    let gb = api.info("gb", None).await;
    assert_eq!(prune_id(&gb), json!(2));
    assert_eq!(gb.body["apps"], json!([]));
}
