//! The change path never waits for a registry that cannot serve: images that exist only in the
//! engine's cache (built or loaded on the host, an air-gapped site), a registry stopped in the
//! middle of a series of updates, and the original documentation's v1 bodies, byte for byte.
//! HTTP calls to `nebula standalone` -> containers on the real engine answering HTTP.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nebula_tests::{
    Api, Process, Seen, binary, cleanup, containers, docker_ok, docker_rm, engine_cpus,
    engine_ready, free_port, free_port_range, http_get, image_id, running, unique, wait_for,
};
use serde_json::{Value, json};

/// How long a step may take: "within seconds".
const WITHIN: Duration = Duration::from_secs(15);

struct Standalone {
    _nebula: Process,
    api: Api,
    port: u16,
    dir: PathBuf,
}

impl Standalone {
    async fn start(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let nebula = Process::start(
            binary("nebula"),
            &[
                "standalone",
                "--bind",
                &bind,
                "--data-dir",
                dir.join("data").to_str().unwrap(),
            ],
            &[
                ("BASIC_AUTH_USER", "admin"),
                ("BASIC_AUTH_PASSWORD", "pw"),
                ("NEBULA_MANAGER_CHECK_IN_TIME", "1"),
                ("NEBULA_RECONCILE_INTERVAL", "1"),
                ("NEBULA_STOP_GRACE", "1"),
            ],
            dir.join("nebula.log"),
        );
        let api = Api::new(port, "admin", "pw");
        api.wait_ready().await;
        Self {
            _nebula: nebula,
            api,
            port,
            dir,
        }
    }

    /// The newest report's status of `app`, once one holds version `app_id`.
    async fn status_of(&self, app: &str, app_id: u64) -> Value {
        let deadline = Instant::now() + WITHIN;
        loop {
            let reports = self.api.all_reports("").await;
            let found = reports
                .iter()
                .rev()
                .find_map(|r| r["apps_status"].get(app).cloned())
                .unwrap_or(Value::Null);
            if found["app_id"] == json!(app_id) && found["converged"] == json!(true) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no report on {app} converged at version {app_id} within {WITHIN:?}: {found}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes the apps' containers when the test ends, passed or not.
struct Apps(Vec<String>);

impl Drop for Apps {
    fn drop(&mut self) {
        for app in &self.0 {
            cleanup(app);
        }
    }
}

/// Every port answers with a page starting with `message`.
async fn all_serve(ports: &[u16], message: &str) -> bool {
    for &port in ports {
        match http_get(port).await {
            Some(body) if body.starts_with(&format!("{message} ")) => {}
            _ => return false,
        }
    }
    true
}

fn ids(app: &str) -> Vec<String> {
    containers(app).into_iter().map(|c| c.id).collect()
}

/// Waits until `app` runs `count` containers, each serving `message`, and returns them.
async fn serving(app: &str, ports: &[u16], message: &str, what: &str) -> Vec<Seen> {
    let started = Instant::now();
    wait_for(what, WITHIN, || async {
        running(app).len() == ports.len() && all_serve(ports, message).await
    })
    .await;
    eprintln!("{what}: {} ms", started.elapsed().as_millis());
    containers(app)
}

/// A second registry, on a port of its own, that the test can stop and start again.
struct Registry {
    port: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl Registry {
    fn start(dir: &std::path::Path) -> Self {
        let port = free_port();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.join("registry").display()
            ),
        )
        .unwrap();
        let mut registry = Self {
            port,
            config,
            child: None,
        };
        registry.up();
        registry
    }

    fn up(&mut self) {
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "docker-registry (Debian's docker-registry package; .ci/images.sh installs it)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.down();
    }
}

/// A tag of the test image that no registry has: `docker.io` cannot be reached from here, as
/// on an air-gapped site, and the name exists on no registry anyway.
struct LocalImage(String);

impl LocalImage {
    fn new() -> Self {
        let reference = format!("{}/site:1", unique("built-here"));
        docker_ok(&["tag", "nebula-test/busybox:latest", &reference]);
        Self(reference)
    }
}

impl Drop for LocalImage {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rmi", &self.0]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_with_an_image_built_on_the_host() {
    if !engine_ready("the_readme_walkthrough_with_an_image_built_on_the_host") {
        return;
    }
    let image = LocalImage::new();
    let nebula = Standalone::start("nebula-local-image-").await;
    let api = &nebula.api;
    let app = unique("site");
    let _apps = Apps(vec![app.clone()]);
    let path = format!("/api/v2/apps/{app}");
    let count = engine_cpus() * 3;
    let base = free_port_range(u16::try_from(count).unwrap());
    let ports: Vec<u16> = (0..u16::try_from(count).unwrap())
        .map(|i| base + i)
        .collect();

    // Create, exactly as the README does but with the local image.
    api.expect(
        "POST",
        &path,
        Some(json!({
            "docker_image": image.0,
            "starting_ports": [{base.to_string(): "80"}],
            "containers_per": {"cpu": 3},
            "env_vars": {"MESSAGE": "hello"},
            "running": true
        })),
        200,
    )
    .await;
    serving(&app, &ports, "hello", "create from the local image").await;

    // Change one env var: the pull fails (no registry), the local image is used.
    let reply = api
        .expect(
            "PUT",
            &format!("{path}/update"),
            Some(json!({"env_vars": {"MESSAGE": "hi"}})),
            202,
        )
        .await;
    let before = ids(&app);
    let after = serving(&app, &ports, "hi", "env update without a registry").await;
    assert!(after.iter().all(|c| !before.contains(&c.id)), "replaced");
    let app_id = reply["app_id"].as_u64().unwrap();
    let status = nebula.status_of(&app, app_id).await;
    let fallback = &status["pull_fallback"];
    assert_eq!(fallback["image"], json!(image.0), "{status}");
    assert_eq!(fallback["image_id"], json!(image_id(&image.0)), "{status}");
    assert_eq!(fallback["failure"], json!("unreachable"), "{status}");
    assert_eq!(fallback["app_id"], json!(app_id), "{status}");
    let log = std::fs::read_to_string(nebula.dir.join("nebula.log")).unwrap();
    assert_eq!(
        log.matches("pull failed; running the image the engine holds")
            .count(),
        1,
        "one warning for the change"
    );

    // Rolling restart: every container replaced, one at a time, from the local image.
    api.expect(
        "PUT",
        &format!("{path}/update"),
        Some(
            json!({"rolling_restart": true, "rollout": {"wave_size": 2, "min_healthy_seconds": 0}}),
        ),
        202,
    )
    .await;
    let before = ids(&app);
    api.expect("POST", &format!("{path}/restart"), None, 202)
        .await;
    wait_for("restart replaced every container", WITHIN * 2, || async {
        let now = running(&app);
        now.len() == ports.len() && now.iter().all(|c| !before.contains(&c.id))
    })
    .await;
    serving(&app, &ports, "hi", "serving after the restart").await;

    // A container removed by hand comes back, without a registry.
    let victim = format!("{app}-1");
    docker_rm(&victim);
    serving(&app, &ports, "hi", "container removed by hand is back").await;

    // Stop, start, delete.
    api.expect("POST", &format!("{path}/stop"), None, 202).await;
    wait_for("stopped", WITHIN, || async { containers(&app).is_empty() }).await;
    api.expect("POST", &format!("{path}/start"), None, 202)
        .await;
    serving(&app, &ports, "hi", "started again").await;
    api.expect("DELETE", &path, None, 200).await;
    wait_for("deleted", WITHIN, || async { containers(&app).is_empty() }).await;
    cleanup(&app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_policies_if_missing_and_never() {
    if !engine_ready("pull_policies_if_missing_and_never") {
        return;
    }
    let image = LocalImage::new();
    let nebula = Standalone::start("nebula-pull-policy-").await;
    let api = &nebula.api;
    let app = unique("policy");
    let _apps = Apps(vec![app.clone()]);
    let path = format!("/api/v2/apps/{app}");
    let port = free_port_range(1);
    let ports = [port];
    api.expect(
        "POST",
        &path,
        Some(json!({
            "docker_image": image.0,
            "starting_ports": [{port.to_string(): "80"}],
            "env_vars": {"MESSAGE": "one"},
            "pull_policy": "never"
        })),
        200,
    )
    .await;
    serving(&app, &ports, "one", "create with pull_policy never").await;
    let doc = api.expect("GET", &path, None, 200).await;
    assert_eq!(doc["pull_policy"], json!("never"));

    // if_missing: a change with the image held never asks the registry, so no fallback.
    let reply = api
        .expect(
            "PUT",
            &format!("{path}/update"),
            Some(json!({"pull_policy": "if_missing", "env_vars": {"MESSAGE": "two"}})),
            202,
        )
        .await;
    serving(&app, &ports, "two", "update with pull_policy if_missing").await;
    let status = nebula
        .status_of(&app, reply["app_id"].as_u64().unwrap())
        .await;
    assert!(status.get("pull_fallback").is_none(), "{status}");

    // never, with an image the host does not hold: nothing is replaced, and the log says why.
    let before = containers(&app);
    let absent = format!("{}/absent:1", unique("nowhere"));
    api.expect(
        "PUT",
        &format!("{path}/update"),
        Some(json!({"pull_policy": "never", "docker_image": absent})),
        202,
    )
    .await;
    let log_path = nebula.dir.join("nebula.log");
    wait_for("the worker says why", WITHIN, || async {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .contains(&format!(
                "image {absent} is not on this host and the app's pull_policy is never"
            ))
    })
    .await;
    assert_eq!(containers(&app), before, "the running container stays");
    assert!(all_serve(&ports, "two").await);

    // A bad policy is refused with the field named, and nothing changes.
    let (code, body) = api
        .call(
            "PUT",
            &format!("{path}/update"),
            Some(json!({"pull_policy": "sometimes"})),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(
        body["pull_policy"],
        json!("must be one of always, if_missing, never")
    );
    let _ = nebula.port;
    api.expect("DELETE", &path, None, 200).await;
    wait_for("deleted", WITHIN, || async { containers(&app).is_empty() }).await;
    cleanup(&app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_stopped_in_the_middle_of_a_series_of_updates() {
    if !engine_ready("a_registry_stopped_in_the_middle_of_a_series_of_updates") {
        return;
    }
    let nebula = Standalone::start("nebula-registry-outage-").await;
    let mut registry = Registry::start(&nebula.dir);
    let repo = format!("127.0.0.1:{}/{}/site:1", registry.port, unique("outage"));
    docker_ok(&["tag", "nebula-test/busybox:latest", &repo]);
    docker_ok(&["push", "-q", &repo]);
    // Only a pull can bring the reference to the engine.
    docker_ok(&["rmi", &repo]);

    let api = &nebula.api;
    let app = unique("outage");
    let _apps = Apps(vec![app.clone()]);
    let path = format!("/api/v2/apps/{app}");
    let base = free_port_range(2);
    let ports = [base, base + 1];
    api.expect(
        "POST",
        &path,
        Some(json!({
            "docker_image": repo,
            "starting_ports": [{base.to_string(): "80"}],
            "containers_per": {"server": 2},
            "env_vars": {"MESSAGE": "u0"}
        })),
        200,
    )
    .await;
    serving(&app, &ports, "u0", "created, pulled from the registry").await;
    let update_path = format!("{path}/update");
    let update_path = &update_path;
    let update = |message: &'static str| async move {
        api.expect(
            "PUT",
            update_path,
            Some(json!({"env_vars": {"MESSAGE": message}})),
            202,
        )
        .await["app_id"]
            .as_u64()
            .unwrap()
    };
    for message in ["u1", "u2"] {
        update(message).await;
        serving(
            &app,
            &ports,
            message,
            &format!("{message} with the registry up"),
        )
        .await;
    }
    let status = nebula.status_of(&app, 3).await;
    assert!(status.get("pull_fallback").is_none(), "{status}");

    registry.down();
    for message in ["u3", "u4"] {
        update(message).await;
        serving(
            &app,
            &ports,
            message,
            &format!("{message} with the registry down"),
        )
        .await;
    }
    let status = nebula.status_of(&app, 5).await;
    assert_eq!(
        status["pull_fallback"]["failure"],
        json!("unreachable"),
        "{status}"
    );
    assert!(
        status["pull_fallback"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("connection refused")),
        "{status}"
    );

    // The registry is back: the next restart pulls again, and the report no longer says so.
    registry.up();
    let restarted = api
        .expect("POST", &format!("{path}/restart"), None, 202)
        .await;
    let before = ids(&app);
    wait_for("restart with the registry back", WITHIN, || async {
        let now = running(&app);
        now.len() == 2 && now.iter().all(|c| !before.contains(&c.id))
    })
    .await;
    let app_id = restarted["app_id"].as_u64().unwrap_or(6);
    let status = nebula.status_of(&app, app_id).await;
    assert!(status.get("pull_fallback").is_none(), "{status}");

    api.expect("DELETE", &path, None, 200).await;
    wait_for("deleted", WITHIN, || async { containers(&app).is_empty() }).await;
    cleanup(&app);
    let _ = Command::new("docker").args(["rmi", &repo]).output();
}

/// The original documentation's app bodies, byte for byte but for the image placeholders.
const SITE_BODY: &str = r#"{"starting_ports": [{"81": "80"}], "containers_per": {"cpu": 3}, "env_vars": {"test": "test123"}, "docker_image": "<your-site-container-image>", "running": true, "network_mode": "bridge"}"#;
const LB_BODY: &str = r#"{"starting_ports": [80], "containers_per": {"server": 1}, "env_vars": {}, "docker_image": "<your-lb-container-image>", "running": true, "network_mode": "host"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documentations_site_and_lb_bodies_byte_for_byte() {
    if !engine_ready("the_documentations_site_and_lb_bodies_byte_for_byte") {
        return;
    }
    let nebula = Standalone::start("nebula-v1-docs-").await;
    let (site, lb) = (unique("site"), unique("lb"));
    let _apps = Apps(vec![site.clone(), lb.clone()]);
    let client = nebula_http::client::client_builder(None)
        .unwrap()
        .build()
        .unwrap();
    for (app, body, placeholder) in [
        (&site, SITE_BODY, "<your-site-container-image>"),
        (&lb, LB_BODY, "<your-lb-container-image>"),
    ] {
        let body = body.replace(placeholder, "nebula-test/busybox:latest");
        let reply = client
            .post(format!("http://127.0.0.1:{}/api/apps/{app}", nebula.port))
            .basic_auth("admin", Some("pw"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let code = reply.status().as_u16();
        let text = reply.text().await.unwrap();
        assert_eq!(code, 202, "POST /api/apps/{app}: {text}");
    }
    let count = u16::try_from(engine_cpus() * 3).unwrap();
    let ports: Vec<u16> = (81..81 + count).collect();
    serving(&site, &ports, "hello from nebula", "the site on ports 81..").await;
    // The lb runs on the host's network: busybox httpd on the host's port 80.
    serving(
        &lb,
        &[80],
        "hello from nebula",
        "the lb on the host's port 80",
    )
    .await;
    let doc = nebula
        .api
        .expect("GET", &format!("/api/apps/{site}"), None, 200)
        .await;
    assert_eq!(
        (&doc["volumes"], &doc["devices"], &doc["privileged"]),
        (&json!([]), &json!([]), &json!(false))
    );
    for app in [&site, &lb] {
        nebula
            .api
            .expect("DELETE", &format!("/api/apps/{app}"), None, 202)
            .await;
        wait_for("deleted", WITHIN, || async { containers(app).is_empty() }).await;
        cleanup(app);
    }
}
