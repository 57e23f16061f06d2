//! Reports as a client sees them: `POST /api/v2/reports` (workers), `GET /api/v2/reports` with
//! the reference's filters and `last_id` paging, and `GET /api/v2/apps/<app>/status`, against
//! the in-memory store.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use common::Api;
use nebula_core::report::WorkerReport;
use nebula_http::{ReportsConfig, RouterOptions};
use serde_json::{Value, json};

impl Api {
    /// Reports kept for 600 s; `elsewhere` stores reports at chosen times.
    fn for_reports() -> Self {
        let mut options = RouterOptions::default();
        options.reports = ReportsConfig {
            ttl: Duration::from_secs(600),
        };
        Self::with_options(options)
    }

    /// Posts a report; returns its id.
    async fn post(&self, report: Value) -> String {
        let (code, body) = self.call("POST", "/api/v2/reports", Some(report)).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        body["_id"]["$oid"].as_str().unwrap().to_owned()
    }

    async fn get(&self, query: &str) -> Value {
        let (code, body) = self
            .call("GET", &format!("/api/v2/reports{query}"), None)
            .await;
        assert_eq!(code, StatusCode::OK, "{query}: {body}");
        body
    }
}

fn report(host: &str, group: Option<&str>, time: u64, updated: bool) -> Value {
    json!({
        "memory_usage": {"total": 8000, "used": 1000, "free": 500, "available": 7000},
        "root_disk_usage": {"total": 100, "used": 10, "free": 90},
        "cpu_usage": {"cores": 4, "used_percent": 3.5},
        "apps_containers": [{"name": "site-1", "id": "abc", "state": "running", "health": "none",
            "image": "nginx:latest", "app_name": "site", "app_id": 1, "created": 5}],
        "cron_jobs_containers": [],
        "current_device_group_config": {"apps": {"site": {"app_id": 1, "incarnation": 9,
            "running": true}}, "apps_list": ["site"], "device_group_id": 2, "prune_id": 1,
            "incarnation": 3},
        "device_group": group,
        "report_creation_time": time,
        "hostname": host,
        "updated": updated,
        "apps_status": {},
    })
}

fn times(page: &Value) -> Vec<u64> {
    page["data"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|r| r["report_creation_time"].as_u64().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn reports_page_by_last_id_and_end_with_nulls() {
    let api = Api::for_reports();
    let mut ids = Vec::new();
    for t in 1..=5 {
        ids.push(
            api.post(report(&format!("h{t}"), Some("edge"), t, true))
                .await,
        );
    }
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids rise with insertion");

    let first = api.get("?page_size=2").await;
    assert_eq!(times(&first), [1, 2]);
    assert_eq!(first["last_id"], json!({"$oid": ids[1]}));
    let item = &first["data"][0];
    assert_eq!(item["_id"], json!({"$oid": ids[0]}));
    assert_eq!(item["hostname"], "h1");
    assert_eq!(item["apps_containers"][0]["name"], "site-1");
    assert_eq!(item["current_device_group_config"]["device_group_id"], 2);
    assert!(item["report_insert_date"]["$date"].as_u64().unwrap() > 0);

    let second = api.get(&format!("?page_size=2&last_id={}", ids[1])).await;
    assert_eq!(times(&second), [3, 4]);
    let third = api.get(&format!("?page_size=2&last_id={}", ids[3])).await;
    assert_eq!(times(&third), [5]);
    let end = api.get(&format!("?page_size=2&last_id={}", ids[4])).await;
    assert_eq!(end, json!({"data": null, "last_id": null}));

    assert_eq!(
        times(&api.get("").await),
        [1, 2, 3, 4, 5],
        "page_size 10 by default"
    );
}

#[tokio::test]
async fn filters_are_the_reference_ones() {
    let api = Api::for_reports();
    api.post(report("a", Some("edge"), 100, true)).await;
    api.post(report("b", Some("edge"), 200, false)).await;
    api.post(report("a", Some("core"), 300, false)).await;
    api.post(report("c", None, 400, true)).await;
    let cases: [(&str, &[u64]); 13] = [
        ("?hostname=a", &[100, 300]),
        ("?device_group=edge", &[100, 200]),
        ("?device_group=edg", &[]),
        ("?hostname=a&device_group=core", &[300]),
        ("?report_creation_time=200", &[200]),
        (
            "?report_creation_time=200&report_creation_time_filter=eq",
            &[200],
        ),
        (
            "?report_creation_time=200&report_creation_time_filter=gt",
            &[300, 400],
        ),
        (
            "?report_creation_time=200&report_creation_time_filter=gte",
            &[200, 300, 400],
        ),
        (
            "?report_creation_time=200&report_creation_time_filter=lt",
            &[100],
        ),
        (
            "?report_creation_time=200&report_creation_time_filter=lte",
            &[100, 200],
        ),
        (
            "?report_creation_time=200&report_creation_time_filter=ne",
            &[100, 300, 400],
        ),
        ("?updated=True", &[100, 400]),
        ("?updated=False&hostname=a", &[300]),
    ];
    for (query, expected) in cases {
        assert_eq!(times(&api.get(query).await), expected, "{query}");
    }
    // The SDK sends the filter without a time when none is asked: no time filter then.
    assert_eq!(
        times(
            &api.get("?report_creation_time_filter=gt&page_size=10")
                .await
        ),
        [100, 200, 300, 400]
    );
    assert_eq!(
        api.get("?hostname=nobody").await,
        json!({"data": null, "last_id": null})
    );
}

#[tokio::test]
async fn bad_query_values_answer_400_naming_the_parameter() {
    let api = Api::for_reports();
    for (query, param) in [
        ("page_size=0", "page_size"),
        ("page_size=abc", "page_size"),
        ("page_size=100000", "page_size"),
        ("report_creation_time=soon", "report_creation_time"),
        (
            "report_creation_time=1&report_creation_time_filter=between",
            "report_creation_time_filter",
        ),
        ("updated=yes", "updated"),
        ("last_id=5c75489a209bde00015570e", "last_id"),
        ("last_id=zz75489a209bde00015570e5", "last_id"),
    ] {
        let (code, body) = api
            .call("GET", &format!("/api/v2/reports?{query}"), None)
            .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(body.get(param).is_some(), "{query}: {body}");
    }
    // An ObjectId of the original is a well-formed id: a page after it.
    assert_eq!(
        api.get("?last_id=5c75489a209bde00015570e5").await,
        json!({"data": null, "last_id": null})
    );
}

#[tokio::test]
async fn bad_reports_are_refused_and_nothing_is_stored() {
    let api = Api::for_reports();
    for (body, field) in [
        (json!({"report_creation_time": 1}), "body"),
        (
            json!({"hostname": "h", "report_creation_time": "now"}),
            "body",
        ),
        (
            json!({"hostname": "", "report_creation_time": 1}),
            "hostname",
        ),
        (
            json!({"hostname": "h", "report_creation_time": 1, "device_group": ""}),
            "device_group",
        ),
    ] {
        let (code, reply) = api.call("POST", "/api/v2/reports", Some(body)).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{reply}");
        assert!(reply.get(field).is_some(), "{reply}");
    }
    assert_eq!(api.get("").await, json!({"data": null, "last_id": null}));
}

#[tokio::test]
async fn every_report_route_needs_authentication() {
    let api = Api::for_reports();
    for (method, path, body) in [
        ("GET", "/api/v2/reports", None),
        (
            "POST",
            "/api/v2/reports",
            Some(json!({"hostname": "h", "report_creation_time": 1})),
        ),
        ("GET", "/api/v2/apps/site/status", None),
    ] {
        let code = api.request(method, path, body, &[]).await.status;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}");
    }
}

fn now_ns() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

#[tokio::test]
async fn expired_reports_are_never_returned() {
    let api = Api::for_reports();
    let old: WorkerReport = serde_json::from_value(report("old", None, 1, true)).unwrap();
    // Stored 601 s ago, with a TTL of 600 s.
    api.elsewhere
        .insert_report(old.clone(), now_ns() - 601 * 1_000_000_000)
        .await
        .unwrap();
    api.elsewhere
        .insert_report(old, now_ns() - 500 * 1_000_000_000)
        .await
        .unwrap();
    api.post(report("new", None, 2, true)).await;
    assert_eq!(times(&api.get("").await), [1, 2]);
    assert_eq!(times(&api.get("?hostname=old").await), [1]);
}

fn with_status(host: &str, app_id: u64, incarnation: u64, converged: bool) -> Value {
    let mut r = report(host, Some("edge"), 1, true);
    r["apps_status"] = json!({"site": {"app_id": app_id, "incarnation": incarnation,
        "running": true, "desired_containers": 1, "running_containers": 1,
        "converged": converged}});
    r
}

#[tokio::test]
async fn the_status_view_counts_hosts_by_version_and_convergence() {
    let api = Api::for_reports();
    let (code, _) = api
        .call(
            "POST",
            "/api/v2/apps/site",
            Some(json!({"docker_image": "nginx"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (_, app) = api.call("POST", "/api/v2/apps/site/restart", None).await;
    let (app_id, inc) = (
        app["app_id"].as_u64().unwrap(),
        app["incarnation"].as_u64().unwrap(),
    );
    assert_eq!(app_id, 2);
    // h1 reported version 1, then converged on 2; h2 is still on 1; h3 is at 2 but not
    // converged; h4 runs other apps only.
    api.post(with_status("h1", 1, inc, true)).await;
    api.post(with_status("h1", 2, inc, true)).await;
    api.post(with_status("h2", 1, inc, true)).await;
    api.post(with_status("h3", 2, inc, false)).await;
    api.post(report("h4", Some("edge"), 1, true)).await;
    let (code, view) = api.call("GET", "/api/v2/apps/site/status", None).await;
    assert_eq!(code, StatusCode::OK, "{view}");
    let since = view["reports_considered_since"].as_u64().unwrap();
    let now_s = now_ns() / 1_000_000_000;
    assert!(
        (now_s - 601..=now_s - 599).contains(&since),
        "{since} vs {now_s}"
    );
    assert_eq!(
        view,
        json!({"app_name": "site", "app_id": 2, "hosts": 3, "by_app_id": {"1": 1, "2": 2},
            "converged": 1, "reports_considered_since": since})
    );

    let (code, body) = api.call("GET", "/api/v2/apps/nothing/status", None).await;
    assert_eq!(
        (code, body),
        (StatusCode::FORBIDDEN, json!({"app_exists": false}))
    );
    let (code, body) = api
        .call("GET", "/api/v2/apps/bad%20name/status", None)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.get("app_name").is_some(), "{body}");
}
