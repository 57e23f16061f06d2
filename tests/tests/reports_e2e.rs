//! Reports end to end: a `nebula-worker-manager` reports to its `nebula-api-manager` over
//! HTTP at every check-in; its report appears in `GET /api/v2/reports` with its hostname and
//! containers, and `GET /api/v2/apps/<app>/status` shows the host converged, on the real
//! engine.

use std::path::Path;
use std::time::Duration;

use nebula_tests::procs::{ApiManager, Worker};
use nebula_tests::{
    IMAGE, Process, cleanup, engine_ready, free_port_range, running, scratch_dir, unique, unix_now,
    wait_for,
};
use serde_json::{Value, json};

const USER: &str = "admin";
const PASSWORD: &str = "reports-pw";

/// A worker selecting apps by `selection` (`APP_NAME` or `DEVICE_GROUP`), with `extra` added.
fn worker(dir: &Path, uri: &str, selection: (&str, &str), extra: &[(&str, &str)]) -> Process {
    Worker::of(uri, USER, PASSWORD)
        .env(selection.0, selection.1)
        .envs(extra)
        .start(dir.join(format!("worker-{}.log", selection.1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_group_workers_report_and_the_app_status() {
    if !engine_ready("a_device_group_workers_report_and_the_app_status") {
        return;
    }
    let dir = scratch_dir("nebula-reports-");
    let (manager, api, uri) = ApiManager::new(USER, PASSWORD).ready(&dir).await;
    let app = unique("rep");
    let group = unique("repg");
    let host = unique("host-");
    let port = free_port_range(2);
    api.expect(
        "POST",
        &format!("/api/v2/apps/{app}"),
        Some(
            json!({"docker_image": IMAGE, "starting_ports": [{port.to_string(): "80"}],
            "containers_per": {"server": 2}, "env_vars": {"MESSAGE": "reports"}}),
        ),
        200,
    )
    .await;
    api.expect(
        "POST",
        &format!("/api/v2/device_groups/{group}"),
        Some(json!({"apps": [app]})),
        200,
    )
    .await;
    let started = unix_now();
    let w = worker(
        &dir,
        &uri,
        ("DEVICE_GROUP", &group),
        &[("NEBULA_REPORT_HOSTNAME", &host)],
    );
    wait_for("the group's app runs", Duration::from_secs(60), || async {
        running(&app).len() == 2
    })
    .await;

    let query = format!("hostname={host}&device_group={group}");
    let converged = |r: &Value| r["apps_status"][&app]["converged"] == true;
    wait_for(
        "a report of the converged host",
        Duration::from_secs(30),
        || async {
            api.latest_report(&query)
                .await
                .is_some_and(|r| converged(&r))
        },
    )
    .await;
    let report = api.latest_report(&query).await.unwrap();
    assert_eq!(report["hostname"], host.as_str());
    assert_eq!(report["device_group"], group.as_str());
    let names: Vec<&str> = report["apps_containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [format!("{app}-1"), format!("{app}-2")]);
    let c = &report["apps_containers"][0];
    assert_eq!(
        (&c["state"], &c["app_name"], &c["app_id"], &c["image"]),
        (&json!("running"), &json!(app), &json!(1), &json!(IMAGE))
    );
    assert_eq!(c["id"].as_str().unwrap().len(), 64, "{c}");
    let cfg = &report["current_device_group_config"];
    assert_eq!(cfg["apps"][&app]["app_id"], 1);
    assert_eq!(
        (&cfg["device_group_id"], &cfg["prune_id"]),
        (&json!(1), &json!(1))
    );
    assert!(
        report["memory_usage"]["total"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(report["root_disk_usage"]["total"].as_u64().unwrap() > 0);
    assert!(report["cpu_usage"]["cores"].as_u64().unwrap() >= 1);
    let t = report["report_creation_time"].as_u64().unwrap();
    assert!((started..=unix_now()).contains(&t), "{t}");
    assert!(report["report_insert_date"]["$date"].as_u64().is_some());

    let status_path = format!("/api/v2/apps/{app}/status");
    let status = api.expect("GET", &status_path, None, 200).await;
    assert_eq!(
        (
            &status["app_id"],
            &status["hosts"],
            &status["by_app_id"],
            &status["converged"]
        ),
        (&json!(1), &json!(1), &json!({"1": 1}), &json!(1)),
        "{status}"
    );

    // The first report says updated, later unchanged ones do not; the filters find both.
    assert!(
        !api.all_reports(&format!("{query}&updated=True"))
            .await
            .is_empty()
    );
    wait_for("an unchanged report", Duration::from_secs(15), || async {
        !api.all_reports(&format!("{query}&updated=False"))
            .await
            .is_empty()
    })
    .await;
    let first_time = api.all_reports(&query).await[0]["report_creation_time"]
        .as_u64()
        .unwrap();
    let newer = api
        .all_reports(&format!(
            "{query}&report_creation_time={first_time}&report_creation_time_filter=gt"
        ))
        .await;
    assert!(
        newer
            .iter()
            .all(|r| r["report_creation_time"].as_u64().unwrap() > first_time)
    );

    // A new version: the status view follows the host to it.
    api.expect("POST", &format!("/api/v2/apps/{app}/restart"), None, 202)
        .await;
    wait_for(
        "the host converged on version 2",
        Duration::from_secs(60),
        || async {
            let s = api.expect("GET", &status_path, None, 200).await;
            s["app_id"] == 2 && s["by_app_id"] == json!({"2": 1}) && s["converged"] == 1
        },
    )
    .await;

    drop(w);
    drop(manager);
    cleanup(&app);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_name_worker_reporting_on_update_only() {
    if !engine_ready("an_app_name_worker_reporting_on_update_only") {
        return;
    }
    let dir = scratch_dir("nebula-reports-");
    let (manager, api, uri) = ApiManager::new(USER, PASSWORD).ready(&dir).await;
    let app = unique("repn");
    let host = unique("host-");
    let port = free_port_range(1);
    api.expect(
        "POST",
        &format!("/api/v2/apps/{app}"),
        Some(
            json!({"docker_image": IMAGE, "starting_ports": [{port.to_string(): "80"}],
            "containers_per": {"server": 1}}),
        ),
        200,
    )
    .await;
    let w = worker(
        &dir,
        &uri,
        ("APP_NAME", &app),
        &[
            ("NEBULA_REPORT_HOSTNAME", &host),
            ("NEBULA_REPORT_ON_UPDATE_ONLY", "true"),
        ],
    );
    let query = format!("hostname={host}");
    wait_for("a converged report", Duration::from_secs(60), || async {
        api.latest_report(&query)
            .await
            .is_some_and(|r| r["apps_status"][&app]["converged"] == true)
    })
    .await;
    // Three more check-ins with nothing changing send nothing.
    let before = api.all_reports(&query).await.len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let reports = api.all_reports(&query).await;
    assert_eq!(reports.len(), before, "unchanged reports are not sent");
    assert!(reports.iter().all(|r| r["updated"] == true));
    let last = reports.last().unwrap();
    assert_eq!(last["device_group"], Value::Null);
    assert_eq!(last["app_names"], json!([app]));
    assert!(
        api.all_reports("device_group=none-such").await.is_empty(),
        "a worker without a group matches no group filter"
    );
    drop(w);
    drop(manager);
    cleanup(&app);
    let _ = std::fs::remove_dir_all(&dir);
}
