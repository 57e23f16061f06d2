//! The seed's "site" example, end to end: HTTP calls to `nebula standalone` -> containers on the
//! real engine answering HTTP on their host ports.

use std::collections::BTreeSet;
use std::time::Duration;

use nebula_tests::{
    Api, IMAGE, Process, Seen, binary, cleanup, containers, docker_rm, engine_cpus, engine_ready,
    free_port, free_port_range, http_get, running, unique, wait_for,
};
use serde_json::json;

const CHECK_IN: u64 = 2;

struct Site {
    nebula: Process,
    api: Api,
    app: String,
    base_port: u16,
    count: usize,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Site {
    async fn start(test: &str) -> Self {
        let dir = std::env::temp_dir().join(unique("nebula-e2e-"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let data = dir.join("data");
        let nebula = Process::start(
            binary("nebula"),
            &[
                "standalone",
                "--bind",
                &bind,
                "--data-dir",
                data.to_str().unwrap(),
            ],
            &[
                ("BASIC_AUTH_USER", "admin"),
                ("BASIC_AUTH_PASSWORD", "e2e-secret"),
                ("NEBULA_MANAGER_CHECK_IN_TIME", &CHECK_IN.to_string()),
                ("NEBULA_RECONCILE_INTERVAL", "1"),
                ("NEBULA_STOP_GRACE", "1"),
                ("RUST_LOG", "info"),
            ],
            dir.join("nebula.log"),
        );
        let api = Api::new(port, "admin", "e2e-secret");
        api.wait_ready().await;
        let count = (engine_cpus() * 3) as usize;
        let base_port = free_port_range(u16::try_from(count).unwrap());
        let app = unique(test);
        Self {
            nebula,
            api,
            app,
            base_port,
            count,
            _dir: TempDir(dir),
        }
    }

    fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.count).map(|i| self.base_port + u16::try_from(i).unwrap())
    }

    /// Every container answers on its port with `message`.
    async fn all_serve(&self, message: &str) -> bool {
        for port in self.ports() {
            match http_get(port).await {
                Some(body) if body.starts_with(&format!("{message} ")) => {}
                _ => return false,
            }
        }
        true
    }

    async fn wait_serving(&self, message: &str, what: &str) {
        wait_for(what, Duration::from_secs(60), || self.all_serve(message)).await;
        let names: Vec<String> = running(&self.app).into_iter().map(|c| c.name).collect();
        let want: Vec<String> = {
            let mut w: Vec<String> = (1..=self.count)
                .map(|i| format!("{}-{i}", self.app))
                .collect();
            w.sort();
            w
        };
        assert_eq!(names, want, "{what}: exactly the app's containers run");
    }

    fn ids(&self) -> BTreeSet<String> {
        containers(&self.app).into_iter().map(|c| c.id).collect()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.nebula.kill9();
        cleanup(&self.app);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_example_end_to_end() {
    if !engine_ready("site_example_end_to_end") {
        return;
    }
    let mut site = Site::start("site").await;
    let app = site.app.clone();
    let path = format!("/api/v2/apps/{app}");

    // Create: ports {"H": "80"}, 3 per CPU, an env var, running.
    let body = json!({
        "docker_image": IMAGE,
        "starting_ports": [{ site.base_port.to_string(): "80" }],
        "containers_per": {"cpu": 3},
        "env_vars": {"MESSAGE": "v1"},
        "running": true,
        "rollout": {"wave_size": 1, "min_healthy_seconds": 1},
    });
    let (code, doc) = site.api.call("POST", &path, Some(body)).await;
    assert_eq!(code, 200, "{doc}");
    assert_eq!(doc["app_id"], 1);
    site.wait_serving("v1", "3 x CPUs containers serving v1")
        .await;

    // Bad input through the real server: 400 naming the field, nothing changes.
    let (code, reply) = site
        .api
        .call(
            "PUT",
            &format!("{path}/update"),
            Some(json!({"starting_ports": [0]})),
        )
        .await;
    assert_eq!(
        (code, reply["errors"][0]["field"].clone()),
        (400, json!("starting_ports"))
    );
    assert_eq!(site.api.call("GET", &path, None).await.1["app_id"], 1);

    // Update an env var: every container serves the new value.
    let (code, _) = site
        .api
        .call(
            "PUT",
            &format!("{path}/update"),
            Some(json!({"env_vars": {"MESSAGE": "v2"}})),
        )
        .await;
    assert_eq!(code, 202);
    site.wait_serving("v2", "every container serving v2 after the update")
        .await;

    // Stop: nothing runs. Start: all back.
    assert_eq!(
        site.api.call("POST", &format!("{path}/stop"), None).await.0,
        202
    );
    wait_for(
        "no container after stop",
        Duration::from_secs(60),
        || async { containers(&app).is_empty() },
    )
    .await;
    assert_eq!(
        site.api
            .call("POST", &format!("{path}/start"), None)
            .await
            .0,
        202
    );
    site.wait_serving("v2", "all back after start").await;

    // Restart: every container replaced.
    let before = site.ids();
    assert_eq!(
        site.api
            .call("POST", &format!("{path}/restart"), None)
            .await
            .0,
        202
    );
    wait_for(
        "every container replaced after restart",
        Duration::from_secs(60),
        || async {
            let now = site.ids();
            now.len() == site.count && now.is_disjoint(&before)
        },
    )
    .await;
    site.wait_serving("v2", "serving after restart").await;

    // Roll (v1): one container at a time while the others serve.
    let before = site.ids();
    let (code, doc) = site
        .api
        .call("POST", &format!("/api/apps/{app}/roll"), None)
        .await;
    assert_eq!((code, doc["command"].clone()), (202, json!("roll")));
    let mut fewest_serving = site.count;
    let mut most_new_at_once = 0;
    let mut replaced_so_far = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut serving = 0;
        for port in site.ports() {
            // A loaded machine can miss one answer: a port counts as down only if it fails
            // twice in a row.
            if http_get(port).await.is_some() || http_get(port).await.is_some() {
                serving += 1;
            }
        }
        fewest_serving = fewest_serving.min(serving);
        let now: Vec<Seen> = containers(&app);
        let replaced = now.iter().filter(|c| !before.contains(&c.id)).count();
        most_new_at_once = most_new_at_once.max(replaced.saturating_sub(replaced_so_far));
        replaced_so_far = replaced_so_far.max(replaced);
        if replaced == site.count && site.all_serve("v2").await {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "roll did not finish: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(
        fewest_serving + 1 >= site.count,
        "at most one container down during the roll (fewest serving {fewest_serving})"
    );
    assert!(
        most_new_at_once <= 1,
        "replaced one at a time (saw {most_new_at_once} at once)"
    );

    // SIGKILL and restart nebula: not one container recreated.
    let before = site.ids();
    site.nebula.kill9();
    site.nebula.restart();
    site.api.wait_ready().await;
    // Several reconcile intervals and a check-in pass.
    tokio::time::sleep(Duration::from_secs(CHECK_IN + 3)).await;
    assert_eq!(
        site.ids(),
        before,
        "a restarted nebula adopts the containers it finds"
    );
    assert!(site.all_serve("v2").await);
    assert!(site.nebula.log().contains("API listening"));

    // A container removed by hand comes back within one check-in.
    let victim = format!("{app}-2");
    docker_rm(&victim);
    wait_for(
        "hand-removed container back",
        Duration::from_secs(CHECK_IN + 5),
        || async { running(&app).iter().any(|c| c.name == victim) },
    )
    .await;
    site.wait_serving("v2", "serving after drift correction")
        .await;

    // Delete: everything removed.
    let (code, _) = site.api.call("DELETE", &path, None).await;
    assert_eq!(code, 200);
    wait_for(
        "all containers removed after delete",
        Duration::from_secs(60),
        || async { containers(&app).is_empty() },
    )
    .await;
    assert_eq!(site.api.call("GET", &path, None).await.0, 403);
}
