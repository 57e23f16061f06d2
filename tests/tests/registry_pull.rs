//! Images come from the local registry: the first start pulls, a restart force-pulls a re-pushed
//! tag ("deploy by re-tag"), and a failed pull never takes running containers down.

use std::time::Duration;

use nebula_tests::{
    Api, Process, binary, cleanup, containers, docker_ok, engine_ready, free_port, free_port_range,
    http_get, image_id, running, unique, wait_for,
};
use serde_json::json;

fn push_as(source: &str, target: &str) {
    docker_ok(&["tag", source, target]);
    docker_ok(&["push", "-q", target]);
    // Drop the local tag, so only a pull can bring the reference back.
    docker_ok(&["rmi", target]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_force_pull_and_failed_pull() {
    if !engine_ready("pull_force_pull_and_failed_pull") {
        return;
    }
    let repo = format!("127.0.0.1:5000/{}/site:latest", unique("it"));
    push_as("nebula-test/busybox:latest", &repo);
    let (v1_id, v2_id) = (
        image_id("nebula-test/busybox:latest"),
        image_id("nebula-test/busybox:v2"),
    );
    assert_ne!(v1_id, v2_id);

    let dir = std::env::temp_dir().join(unique("nebula-pull-"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let _nebula = Process::start(
        binary("nebula"),
        &[
            "standalone",
            "--bind",
            &bind,
            "--data-dir",
            dir.join("data").to_str().unwrap(),
        ],
        &[
            ("AUTH_TOKEN", "pull-token"),
            ("BASIC_AUTH_USER", "admin"),
            ("BASIC_AUTH_PASSWORD", "pw"),
            ("NEBULA_MANAGER_CHECK_IN_TIME", "2"),
            ("NEBULA_RECONCILE_INTERVAL", "1"),
            ("NEBULA_STOP_GRACE", "1"),
        ],
        dir.join("nebula.log"),
    );
    let api = Api::new(port, "admin", "pw");
    api.wait_ready().await;
    let app = unique("pull");
    let host_port = free_port_range(1);
    let body = json!({"docker_image": repo, "starting_ports": [{host_port.to_string(): "80"}], "env_vars": {"MESSAGE": "pulled"}});
    assert_eq!(
        api.call("POST", &format!("/api/v2/apps/{app}"), Some(body))
            .await
            .0,
        200
    );

    wait_for(
        "first container pulled and serving",
        Duration::from_secs(60),
        || async {
            http_get(host_port)
                .await
                .is_some_and(|b| b.starts_with("pulled "))
        },
    )
    .await;
    assert_eq!(running(&app)[0].image_id, v1_id);

    // Re-push the tag with another image; a restart pulls it.
    push_as("nebula-test/busybox:v2", &repo);
    assert_eq!(
        api.call("POST", &format!("/api/v2/apps/{app}/restart"), None)
            .await
            .0,
        202
    );
    wait_for(
        "restart runs the re-pushed image",
        Duration::from_secs(60),
        || async { running(&app).first().is_some_and(|c| c.image_id == v2_id) },
    )
    .await;
    wait_for("serving after restart", Duration::from_secs(30), || async {
        http_get(host_port).await.is_some()
    })
    .await;

    // An image that cannot be pulled: the running container stays.
    let before = containers(&app);
    let missing = format!("127.0.0.1:5000/{}/none:latest", unique("it"));
    let (code, _) = api
        .call(
            "PUT",
            &format!("/api/v2/apps/{app}/update"),
            Some(json!({"docker_image": missing})),
        )
        .await;
    assert_eq!(code, 202);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(containers(&app), before, "a failed pull takes nothing down");
    assert!(http_get(host_port).await.is_some());

    assert_eq!(
        api.call("DELETE", &format!("/api/v2/apps/{app}"), None)
            .await
            .0,
        200
    );
    wait_for("removed after delete", Duration::from_secs(30), || async {
        containers(&app).is_empty()
    })
    .await;
    cleanup(&app);
    let _ = std::fs::remove_dir_all(&dir);
}
