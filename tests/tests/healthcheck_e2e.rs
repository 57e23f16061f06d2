//! The `healthcheck` field end to end: HTTP calls to `nebula standalone` -> containers on the
//! real engine, inspected with the docker CLI.
//!
//! - a passing healthcheck gives healthy containers, which carry the configured test;
//! - an update of only the healthcheck replaces every container;
//! - a rolling change to a failing healthcheck halts after the first wave, the other
//!   containers running on untouched;
//! - `{"disable": true}` on an image with a HEALTHCHECK gives containers without health state
//!   (and without the field the image's HEALTHCHECK applies);
//! - a bad healthcheck is a 400 naming the part, and nothing changes.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use nebula_tests::{
    Api, IMAGE, Process, binary, cleanup, containers, docker_ok, engine_ready, free_port,
    scratch_dir, unique, wait_for,
};
use serde_json::{Value, json};

/// The test image plus a HEALTHCHECK of its own (built and pushed by the test).
const HEALTHCHECK_IMAGE: &str = "127.0.0.1:5000/nebula-test/busybox:healthcheck";

/// The passing probe: the container's own httpd answers.
const PROBE: &str = "wget -q -O /dev/null http://127.0.0.1:80/";

/// Builds and pushes [`HEALTHCHECK_IMAGE`]: FROM the test image, with a HEALTHCHECK.
fn healthcheck_image() {
    let dir = scratch_dir("nebula-hc-image-");
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {IMAGE}\nHEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD [\"true\"]\n"
        ),
    )
    .unwrap();
    let out = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args([
            "build",
            "-q",
            "-t",
            HEALTHCHECK_IMAGE,
            dir.to_str().unwrap(),
        ])
        .output()
        .expect("docker CLI");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    docker_ok(&["push", HEALTHCHECK_IMAGE]);
}

/// What the engine says of a container's healthcheck.
#[derive(Debug)]
struct Inspected {
    id: String,
    /// `Config.Healthcheck` as JSON (`null` when none is set on the container or its image).
    config: Value,
    /// `State.Health.Status`, or `None` when the container has no health state.
    status: Option<String>,
}

/// The containers of `app` by name.
fn inspect(app: &str) -> BTreeMap<String, Inspected> {
    containers(app)
        .into_iter()
        .map(|c| {
            let out = Command::new("docker")
                .args([
                    "inspect",
                    "--format",
                    "{{json .Config.Healthcheck}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                    &c.id,
                ])
                .output()
                .expect("docker CLI");
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let (config, status) = text.split_once('|').unwrap_or((&text, ""));
            (
                c.name,
                Inspected {
                    id: c.id,
                    config: serde_json::from_str(config).unwrap_or(Value::Null),
                    status: (!status.is_empty()).then(|| status.to_owned()),
                },
            )
        })
        .collect()
}

fn all_have(app: &str, count: usize, check: impl Fn(&Inspected) -> bool) -> bool {
    let seen = inspect(app);
    seen.len() == count && seen.values().all(check)
}

struct Standalone {
    process: Process,
    api: Api,
    apps: Vec<String>,
    dir: std::path::PathBuf,
}

impl Standalone {
    async fn start() -> Self {
        let dir = scratch_dir("nebula-hc-e2e-");
        let port = free_port();
        let process = Process::start(
            binary("nebula"),
            &[
                "standalone",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
                dir.join("data").to_str().unwrap(),
            ],
            &[
                ("BASIC_AUTH_USER", "admin"),
                ("BASIC_AUTH_PASSWORD", "hc-secret"),
                ("NEBULA_MANAGER_CHECK_IN_TIME", "2"),
                ("NEBULA_RECONCILE_INTERVAL", "1"),
                ("NEBULA_STOP_GRACE", "1"),
            ],
            dir.join("nebula.log"),
        );
        let api = Api::new(port, "admin", "hc-secret");
        api.wait_ready().await;
        Self {
            process,
            api,
            apps: Vec::new(),
            dir,
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.process.kill9();
        for app in &self.apps {
            cleanup(app);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_is_applied_replaces_containers_gates_rollouts_and_disables() {
    if !engine_ready("healthcheck_e2e") {
        return;
    }
    healthcheck_image();
    let mut nebula = Standalone::start().await;
    let app = unique("hc");
    nebula.apps.push(app.clone());
    let path = format!("/api/v2/apps/{app}");
    let update = format!("{path}/update");
    let minute = Duration::from_secs(60);

    // A passing healthcheck: every container healthy, with the configured test.
    let doc = nebula
        .api
        .expect(
            "POST",
            &path,
            Some(json!({
                "docker_image": IMAGE,
                "containers_per": {"server": 3},
                "rolling_restart": true,
                "rollout": {"wave_size": 1, "min_healthy_seconds": 1},
                "healthcheck": {"test": PROBE, "interval": "1s", "timeout": 2, "retries": 2},
            })),
            200,
        )
        .await;
    assert_eq!(doc["healthcheck"]["test"], json!(["CMD-SHELL", PROBE]));
    wait_for("3 healthy containers", minute, || async {
        all_have(&app, 3, |c| c.status.as_deref() == Some("healthy"))
    })
    .await;
    for c in inspect(&app).values() {
        assert_eq!(c.config["Test"], json!(["CMD-SHELL", PROBE]), "{c:?}");
        assert_eq!(c.config["Interval"], json!(1_000_000_000_u64), "{c:?}");
        assert_eq!(c.config["Retries"], json!(2), "{c:?}");
    }

    // A bad healthcheck: 400 naming the part, nothing stored.
    let (code, reply) = nebula
        .api
        .call(
            "PATCH",
            &update,
            Some(json!({"healthcheck": {"test": PROBE, "interval": 0}})),
        )
        .await;
    assert_eq!(
        (code, reply["errors"][0]["field"].clone()),
        (400, json!("healthcheck.interval")),
        "{reply}"
    );
    assert_eq!(
        nebula.api.expect("GET", &path, None, 200).await["app_id"],
        1
    );

    // An update of only the healthcheck replaces every container.
    let before: Vec<String> = inspect(&app).into_values().map(|c| c.id).collect();
    nebula
        .api
        .expect(
            "PATCH",
            &update,
            Some(
                json!({"healthcheck": {"test": ["CMD", "wget", "-q", "-O", "/dev/null",
                "http://127.0.0.1:80/"], "interval": 1, "retries": 3}}),
            ),
            202,
        )
        .await;
    wait_for("every container replaced and healthy", minute, || async {
        all_have(&app, 3, |c| {
            !before.contains(&c.id)
                && c.status.as_deref() == Some("healthy")
                && c.config["Test"][0] == "CMD"
        })
    })
    .await;

    // A rolling change to a failing healthcheck: the first wave never becomes healthy, so
    // the rollout halts there and the other containers run on untouched.
    let before = inspect(&app);
    nebula
        .api
        .expect(
            "PATCH",
            &update,
            Some(json!({"healthcheck": {"test": ["CMD", "false"], "interval": 1, "retries": 1}})),
            202,
        )
        .await;
    let first = format!("{app}-1");
    wait_for("the first wave replaced and unhealthy", minute, || async {
        inspect(&app).get(&first).is_some_and(|c| {
            c.id != before[&first].id
                && c.config["Test"] == json!(["CMD", "false"])
                && c.status.as_deref() == Some("unhealthy")
        })
    })
    .await;
    // Many reconcile passes (1 s) and check-ins (2 s) later, still halted.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let now = inspect(&app);
    assert_eq!(now.len(), 3, "{now:?}");
    assert_ne!(now[&first].status.as_deref(), Some("healthy"), "{now:?}");
    for slot in [2, 3] {
        let name = format!("{app}-{slot}");
        assert_eq!(
            (now[&name].id.as_str(), now[&name].status.as_deref()),
            (before[&name].id.as_str(), Some("healthy")),
            "{name} is not touched by a halted rollout"
        );
    }

    // Without the field, an image's own HEALTHCHECK applies; {"disable": true} turns it off.
    let off = unique("hc-off");
    nebula.apps.push(off.clone());
    let off_path = format!("/api/v2/apps/{off}");
    nebula
        .api
        .expect(
            "POST",
            &off_path,
            Some(json!({"docker_image": HEALTHCHECK_IMAGE, "containers_per": {"server": 2}})),
            200,
        )
        .await;
    wait_for("the image's HEALTHCHECK applies", minute, || async {
        all_have(&off, 2, |c| {
            c.config["Test"] == json!(["CMD", "true"]) && c.status.as_deref() == Some("healthy")
        })
    })
    .await;
    let before: Vec<String> = inspect(&off).into_values().map(|c| c.id).collect();
    let doc = nebula
        .api
        .expect(
            "PUT",
            &format!("{off_path}/update"),
            Some(json!({"healthcheck": {"disable": true}})),
            202,
        )
        .await;
    assert_eq!(doc["healthcheck"], json!({"disable": true}));
    wait_for("containers without health state", minute, || async {
        all_have(&off, 2, |c| {
            !before.contains(&c.id) && c.config["Test"] == json!(["NONE"]) && c.status.is_none()
        })
    })
    .await;
    assert!(
        containers(&off).iter().all(|c| c.state == "running"),
        "{:?}",
        containers(&off)
    );
}
