//! The fleet binaries: `nebula-api-manager` on the embedded store and a polling
//! `nebula-worker-manager` selecting apps by APP_NAME, on the real engine.

use std::process::Command;
use std::time::Duration;

use nebula_tests::procs::{ApiManager, Worker, broker_ready};
use nebula_tests::{
    binary, cleanup, containers, engine_ready, free_port_range, running, scratch_dir, unique,
    wait_for,
};
use serde_json::json;

fn v1_app(port: u16, count: u32) -> serde_json::Value {
    json!({"starting_ports": [{port.to_string(): "80"}], "containers_per": {"server": count},
        "env_vars": {"MESSAGE": "fleet"}, "docker_image": nebula_tests::IMAGE, "running": true,
        "networks": ["nebula", "bridge"], "volumes": [], "devices": [], "privileged": false})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_manager_and_polling_worker() {
    if !engine_ready("api_manager_and_polling_worker") {
        return;
    }
    let dir = scratch_dir("nebula-fleet-");
    let (mut manager, api, uri) = ApiManager::new("admin", "fleet-pw").ready(&dir).await;

    let (a, b, c) = (unique("fa"), unique("fb"), unique("fc"));
    let ports = free_port_range(5);
    let mut worker = Worker::of(&uri, "admin", "fleet-pw")
        .env("APP_NAME", &format!("{a},{b}"))
        .start(dir.join("worker.log"));

    assert_eq!(
        api.call("POST", &format!("/api/apps/{a}"), Some(v1_app(ports, 2)))
            .await
            .0,
        202
    );
    assert_eq!(
        api.call(
            "POST",
            &format!("/api/apps/{c}"),
            Some(v1_app(ports + 4, 1))
        )
        .await
        .0,
        202
    );
    wait_for("the selected app runs", Duration::from_secs(60), || async {
        running(&a).len() == 2
    })
    .await;
    assert_eq!(
        api.call(
            "POST",
            &format!("/api/apps/{b}"),
            Some(v1_app(ports + 2, 2))
        )
        .await
        .0,
        202
    );
    wait_for(
        "an app created later runs within a check-in",
        Duration::from_secs(30),
        || async { running(&b).len() == 2 },
    )
    .await;
    assert!(
        containers(&c).is_empty(),
        "an app not in APP_NAME never runs here"
    );

    assert_eq!(
        api.call("DELETE", &format!("/api/apps/{a}"), None).await.0,
        202
    );
    wait_for(
        "a deleted app is removed",
        Duration::from_secs(30),
        || async { containers(&a).is_empty() },
    )
    .await;

    // Worker SIGKILLed and restarted: adopts b's containers.
    let before = containers(&b);
    worker.kill9();
    worker.restart();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        containers(&b),
        before,
        "a restarted worker recreates nothing"
    );

    // Manager down: the worker keeps what runs.
    manager.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        containers(&b),
        before,
        "a manager outage takes nothing down"
    );
    manager.restart();
    api.wait_ready().await;
    assert_eq!(
        api.call("POST", &format!("/api/apps/{b}/stop"), None)
            .await
            .0,
        202
    );
    wait_for(
        "changes flow again after the manager returns",
        Duration::from_secs(30),
        || async { containers(&b).is_empty() },
    )
    .await;
    assert!(worker.log().contains("sync failed"), "the outage is logged");

    drop(worker);
    drop(manager);
    for app in [&a, &b, &c] {
        cleanup(app);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_configuration_lists_every_problem_and_exits_2() {
    let out = Command::new(binary("nebula-worker-manager"))
        .env_clear()
        .env("APP_NAME", "ok,bad name")
        .env("NEBULA_MANAGER_PORT", "70000")
        .env("MAX_RESTART_WAIT_IN_SECONDS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "APP_NAME \"bad name\"",
        "NEBULA_MANAGER_PORT",
        "MAX_RESTART_WAIT_IN_SECONDS",
        "NEBULA_MANAGER_URI or NEBULA_MANAGER_HOST",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    let out = Command::new(binary("nebula-api-manager"))
        .env_clear()
        .args(["--bind", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "auth on with no credentials refuses to start"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("AUTH_ENABLED"));
}

/// With RABBIT_HOST set, a change reaches the worker at once, not at its next check-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_pushes_changes_to_the_worker_at_once() {
    pushes_at_once("rabbitmq_pushes_changes_to_the_worker_at_once", "queues").await;
}

/// The same with the workers on shared streams (`NEBULA_RABBIT_TOPOLOGY=streams`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_streams_push_changes_to_the_worker_at_once() {
    pushes_at_once(
        "rabbitmq_streams_push_changes_to_the_worker_at_once",
        "streams",
    )
    .await;
}

/// An API manager and an APP_NAME worker on RabbitMQ with a 300 s check-in, the worker on
/// `topology`: a create and a stop are applied within seconds.
async fn pushes_at_once(test: &str, topology: &str) {
    if !engine_ready(test) || !broker_ready(test) {
        return;
    }
    let dir = scratch_dir("nebula-rabbit-");
    let (_manager, api, uri) = ApiManager::new("admin", "pw")
        .env("RABBIT_HOST", "127.0.0.1")
        .ready(&dir)
        .await;
    let app = unique("push");
    let ports = free_port_range(2);
    let worker_id = unique("w");
    let worker = Worker::of(&uri, "admin", "pw")
        .without("NEBULA_RECONCILE_INTERVAL")
        .envs(&[
            ("APP_NAME", &app),
            ("NEBULA_MANAGER_CHECK_IN_TIME", "300"),
            ("RABBIT_HOST", "127.0.0.1"),
            ("NEBULA_WORKER_ID", &worker_id),
            ("NEBULA_RABBIT_TOPOLOGY", topology),
        ])
        .start(dir.join("worker.log"));
    // The worker syncs at start and subscribes; give it a moment to bind its queue.
    wait_for("worker subscribed", Duration::from_secs(30), || async {
        worker.log().contains("worker starting")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        api.call("POST", &format!("/api/apps/{app}"), Some(v1_app(ports, 2)))
            .await
            .0,
        202
    );
    wait_for(
        "pushed create applied long before the 300 s check-in",
        Duration::from_secs(20),
        || async { running(&app).len() == 2 },
    )
    .await;
    assert_eq!(
        api.call("POST", &format!("/api/apps/{app}/stop"), None)
            .await
            .0,
        202
    );
    wait_for("pushed stop applied", Duration::from_secs(20), || async {
        containers(&app).is_empty()
    })
    .await;
    drop(worker);
    if topology == "streams" {
        // Streams outlive their readers (retention by age); this one is the test's own.
        let stream = format!("nebula.stream.app.{app}");
        let deleted = std::process::Command::new("rabbitmqctl")
            .args(["-q", "delete_queue", &stream])
            .status();
        assert!(
            deleted.is_ok_and(|s| s.success()),
            "the worker read its app's changes from {stream}"
        );
    }
    cleanup(&app);
    let _ = std::fs::remove_dir_all(&dir);
}
