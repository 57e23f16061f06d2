//! Several hosts: an API manager (embedded store) on RabbitMQ and three `nebula-worker-manager`
//! processes, each driving its own `dockerd` in its own network namespace
//! (`nebula_tests::netns`). One API call converges all three; with the broker stopped a change
//! still converges by polling, and once it returns a further change is pushed and nothing is
//! lost; a worker killed during two changes ends on the latest after it restarts.
//!
//! Needs root, `ip`, `nsenter`, `dockerd`, the shared engine with the test image (for
//! `docker save`), RabbitMQ on 127.0.0.1:5672 and `rabbitmqctl`; prints `SKIPPED` otherwise
//! (and fails for a missing engine when `NEBULA_REQUIRE_ENGINE=1`).

use std::process::Command;
use std::time::{Duration, Instant};

use nebula_tests::netns::{NetnsEngine, unsupported};
use nebula_tests::procs::{ApiManager, Worker, broker_answers};
use nebula_tests::{Api, IMAGE, Process, engine_ready, scratch_dir, unique, wait_for};
use serde_json::json;

/// Restarts the broker's app on drop, so a failing test never leaves it stopped.
struct BrokerGuard;

impl BrokerGuard {
    fn stop() -> Self {
        rabbitmqctl("stop_app");
        Self
    }
}

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        rabbitmqctl("start_app");
    }
}

fn rabbitmqctl(cmd: &str) {
    let out = Command::new("rabbitmqctl").arg(cmd).output();
    assert!(
        out.as_ref().is_ok_and(|o| o.status.success()),
        "rabbitmqctl {cmd}: {out:?}"
    );
}

async fn app_id(api: &Api, app: &str) -> String {
    let (code, body) = api.call("GET", &format!("/api/apps/{app}"), None).await;
    assert_eq!(code, 200, "{body}");
    body["app_id"].to_string()
}

/// Every engine in `hosts` runs exactly one container of `app`, labelled with `id`.
fn on(hosts: &[&NetnsEngine], app: &str, id: &str) -> bool {
    hosts.iter().all(|h| {
        let seen = h.app_containers(app);
        seen.len() == 1 && seen[0].1 == "running" && seen[0].2 == id
    })
}

async fn converge(what: &str, timeout: Duration, hosts: &[&NetnsEngine], app: &str, id: &str) {
    let started = Instant::now();
    wait_for(what, timeout, || async { on(hosts, app, id) }).await;
    println!("{what}: {:?}", started.elapsed());
}

async fn change(api: &Api, app: &str, message: &str) -> String {
    let (code, body) = api
        .call(
            "PUT",
            &format!("/api/apps/{app}/update"),
            Some(json!({"env_vars": {"MESSAGE": message}})),
        )
        .await;
    assert_eq!(code, 202, "{body}");
    app_id(api, app).await
}

fn skip(reason: &str) {
    println!("SKIPPED multi_host: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn one_call_converges_three_hosts_with_and_without_the_broker() {
    if !engine_ready("multi_host") {
        return;
    }
    if let Some(reason) = unsupported() {
        skip(&reason);
        return;
    }
    if !broker_answers() {
        assert!(
            std::env::var_os("NEBULA_REQUIRE_BROKER").is_none(),
            "NEBULA_REQUIRE_BROKER is set"
        );
        skip("no RabbitMQ on 127.0.0.1:5672; run .ci/rabbitmq.sh");
        return;
    }
    if Command::new("rabbitmqctl").arg("status").output().is_err() {
        skip("no rabbitmqctl to stop and restart the broker");
        return;
    }
    let dir = scratch_dir("nebula-multi-");
    // The test image, saved once from the shared engine and loaded into every host's engine.
    let pulled = Command::new("docker").args(["pull", IMAGE]).output();
    assert!(pulled.is_ok_and(|o| o.status.success()), "pull {IMAGE}");
    let archive = dir.join("image.tar");
    let saved = Command::new("docker")
        .args(["save", "-o"])
        .arg(&archive)
        .arg(IMAGE)
        .output();
    assert!(saved.is_ok_and(|o| o.status.success()), "docker save");

    let mut hosts = Vec::new();
    for _ in 0..3 {
        match NetnsEngine::start(&unique("nbh")) {
            Ok(h) => hosts.push(h),
            Err(e) => {
                drop(hosts);
                let _ = std::fs::remove_dir_all(&dir);
                skip(&format!(
                    "cannot start a dockerd in a network namespace: {e}"
                ));
                return;
            }
        }
    }
    for h in &mut hosts {
        h.load(&archive).unwrap();
        // Workers pull before they replace a container: the registry must answer inside too.
        if let Err(e) = h.forward_registry(5000) {
            drop(hosts);
            let _ = std::fs::remove_dir_all(&dir);
            skip(&format!(
                "cannot relay the registry into the namespace: {e}"
            ));
            return;
        }
    }
    let all: Vec<&NetnsEngine> = hosts.iter().collect();

    let (_manager, api, uri) = ApiManager::new("admin", "pw")
        .env("RABBIT_HOST", "127.0.0.1")
        .ready(&dir)
        .await;
    let app = unique("multi");
    let mut workers: Vec<Process> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let id = unique(&format!("mh{i}-"));
            Worker::of(&uri, "admin", "pw")
                .envs(&[
                    ("APP_NAME", &app),
                    ("DOCKER_HOST", &h.socket),
                    ("NEBULA_MANAGER_CHECK_IN_TIME", "2"),
                    ("RABBIT_HOST", "127.0.0.1"),
                    ("NEBULA_WORKER_ID", &id),
                ])
                .start(dir.join(format!("worker{i}.log")))
        })
        .collect();
    wait_for("workers started", Duration::from_secs(30), || async {
        workers.iter().all(|w| w.log().contains("worker starting"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // One API call converges all three hosts.
    let spec = json!({"starting_ports": [], "containers_per": {"server": 1},
        "env_vars": {"MESSAGE": "v1"}, "docker_image": IMAGE, "running": true,
        "networks": ["nebula"], "volumes": [], "devices": [], "privileged": false});
    let (code, body) = api
        .call("POST", &format!("/api/apps/{app}"), Some(spec))
        .await;
    assert_eq!(code, 202, "{body}");
    let id = app_id(&api, &app).await;
    converge(
        "create on 3 hosts",
        Duration::from_secs(60),
        &all,
        &app,
        &id,
    )
    .await;
    let id = change(&api, &app, "v2").await;
    converge(
        "update on 3 hosts",
        Duration::from_secs(30),
        &all,
        &app,
        &id,
    )
    .await;

    // Broker stopped: a change still converges by polling (check-in every 2 s).
    {
        let _broker = BrokerGuard::stop();
        let id = change(&api, &app, "v3").await;
        converge(
            "update with the broker stopped (polling)",
            Duration::from_secs(40),
            &all,
            &app,
            &id,
        )
        .await;
    }
    wait_for("broker back", Duration::from_secs(30), || async {
        broker_answers()
    })
    .await;
    // Give the workers time to reconnect and resync.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let id = change(&api, &app, "v4").await;
    converge(
        "update after the broker returned",
        Duration::from_secs(30),
        &all,
        &app,
        &id,
    )
    .await;

    // A worker killed during two changes ends on the latest.
    workers[0].kill9();
    let _ = change(&api, &app, "v5").await;
    let latest = change(&api, &app, "v6").await;
    converge(
        "two changes on the live hosts",
        Duration::from_secs(30),
        &all[1..],
        &app,
        &latest,
    )
    .await;
    assert!(
        on(&all[..1], &app, &id),
        "the killed worker's host kept its containers: {:?}",
        hosts[0].app_containers(&app)
    );
    workers[0].restart();
    converge(
        "the restarted worker catches up",
        Duration::from_secs(30),
        &all,
        &app,
        &latest,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(on(&all, &app, &latest), "stable on the latest");
    for (i, w) in workers.iter().enumerate() {
        let log = w.log();
        assert!(!log.contains("panicked"), "worker {i} panicked:\n{log}");
    }

    drop(workers);
    drop(all);
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
}
