//! Device groups end to end: `nebula-api-manager` + a `nebula-worker-manager` with
//! `DEVICE_GROUP`, on a real engine; over HTTP check-ins, and over RabbitMQ with a check-in
//! of an hour, so that only the bus can explain a change applied within seconds.
//!
//! Membership changes run on the shared engine (every name is unique to the run). Pruning
//! removes *every* unused image of an engine, and other tests pull and tag images on the shared
//! one in parallel, so the prune test runs its worker against a private `dockerd` in a network
//! namespace of its own (root only; skipped otherwise, failed with `NEBULA_REQUIRE_ENGINE=1`),
//! loaded with copies of the test images: the shared engine is never pruned.
//!
//! The RabbitMQ tests use the broker on 127.0.0.1:5672 (guest/guest, default vhost; every
//! app and group name is unique to the run). Without it they print `SKIPPED`, and fail with
//! `NEBULA_REQUIRE_BROKER=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nebula_tests::procs::{ApiManager, Worker, broker_ready};
use nebula_tests::{
    Api, IMAGE, IMAGE_V2, Process, cleanup, containers, docker_ok, engine_ready, free_port_range,
    running, scratch_dir, unique, wait_for,
};
use serde_json::{Value, json};

const USER: &str = "admin";
const PASSWORD: &str = "dg-pw";

fn app_doc(port: u16) -> Value {
    json!({"docker_image": IMAGE, "starting_ports": [{port.to_string(): "80"}],
        "containers_per": {"server": 1}, "env_vars": {"MESSAGE": "device group"}})
}

/// Creates `apps`, one container each, on consecutive free host ports; returns the first.
async fn create_apps(api: &Api, apps: &[&String]) -> u16 {
    let ports = free_port_range(u16::try_from(apps.len()).unwrap());
    for (i, app) in apps.iter().enumerate() {
        let port = ports + u16::try_from(i).unwrap();
        let path = format!("/api/v2/apps/{app}");
        api.expect("POST", &path, Some(app_doc(port)), 200).await;
    }
    ports
}

/// An API manager on its own data dir, with `env` added, ready; with its base URL.
async fn api_manager(dir: &Path, env: &[(&str, &str)]) -> (Process, Api, String) {
    ApiManager::new(USER, PASSWORD).envs(env).ready(dir).await
}

/// A worker of `group`, checking in every second, on the engine at `docker_host` (None: the
/// default).
fn worker(dir: &Path, manager_uri: &str, group: &str, docker_host: Option<&str>) -> Process {
    group_worker(manager_uri, group, docker_host).start(dir.join("worker.log"))
}

/// A worker of `group` on RabbitMQ whose HTTP check-in comes once an hour, with `worker_id`
/// naming its queue.
fn bus_worker(
    dir: &Path,
    manager_uri: &str,
    group: &str,
    docker_host: Option<&str>,
    worker_id: &str,
) -> Process {
    group_worker(manager_uri, group, docker_host)
        .envs(&[
            ("NEBULA_MANAGER_CHECK_IN_TIME", "3600"),
            ("RABBIT_HOST", "127.0.0.1"),
            ("NEBULA_WORKER_ID", worker_id),
            ("NEBULA_RABBIT_QUEUE_EXPIRY", "60"),
        ])
        .start(dir.join("worker.log"))
}

fn group_worker<'a>(
    manager_uri: &'a str,
    group: &'a str,
    docker_host: Option<&'a str>,
) -> Worker<'a> {
    let worker = Worker::of(manager_uri, USER, PASSWORD).env("DEVICE_GROUP", group);
    match docker_host {
        Some(host) => worker.env("DOCKER_HOST", host),
        None => worker,
    }
}

/// Creates `app` with no network (a private engine has no `bridge`, and the app needs no
/// port) and the device group `group` of it.
async fn portless_app_in_group(api: &Api, app: &str, group: &str) {
    let doc = json!({"docker_image": IMAGE, "networks": ["none"]});
    api.expect("POST", &format!("/api/v2/apps/{app}"), Some(doc), 200)
        .await;
    create_group(api, group, json!([app])).await;
}

/// Creates the device group `group` of `apps`.
async fn create_group(api: &Api, group: &str, apps: Value) {
    let path = format!("/api/v2/device_groups/{group}");
    api.expect("POST", &path, Some(json!({ "apps": apps })), 200)
        .await;
}

/// Replaces (`PUT`) or patches (`PATCH`) the apps of the device group `group`.
async fn change_group(api: &Api, method: &str, group: &str, apps: Value) {
    let path = format!("/api/v2/device_groups/{group}/update");
    api.expect(method, &path, Some(json!({ "apps": apps })), 202)
        .await;
}

/// Asks the hosts of the device group `group` to prune unused images; the reply.
async fn prune_group(api: &Api, group: &str) -> Value {
    let path = format!("/api/v2/device_groups/{group}/prune");
    api.expect("POST", &path, None, 202).await
}

/// Deletes the device group `group`.
async fn delete_group(api: &Api, group: &str) {
    let path = format!("/api/v2/device_groups/{group}");
    api.expect("DELETE", &path, None, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_group_worker_runs_its_group() {
    if !engine_ready("a_device_group_worker_runs_its_group") {
        return;
    }
    let dir = scratch_dir("nebula-dg-");
    let (manager, api, uri) = api_manager(&dir, &[]).await;
    let (a, b, c) = (unique("dga"), unique("dgb"), unique("dgc"));
    let group = unique("edge");
    create_apps(&api, &[&a, &b, &c]).await;
    create_group(&api, &group, json!([a, b])).await;
    let worker = worker(&dir, &uri, &group, None);

    wait_for(
        "both apps of the group run",
        Duration::from_secs(60),
        || async { running(&a).len() == 1 && running(&b).len() == 1 },
    )
    .await;
    assert!(
        containers(&c).is_empty(),
        "an app outside the group never runs here"
    );

    change_group(&api, "PUT", &group, json!([a, b, c])).await;
    wait_for(
        "an app added to the group starts",
        Duration::from_secs(30),
        || async { running(&c).len() == 1 },
    )
    .await;

    change_group(&api, "PATCH", &group, json!([b, c])).await;
    wait_for(
        "an app removed from the group stops",
        Duration::from_secs(30),
        || async { containers(&a).is_empty() },
    )
    .await;

    api.expect("DELETE", &format!("/api/v2/apps/{b}"), None, 200)
        .await;
    wait_for(
        "a deleted app leaves its group and stops",
        Duration::from_secs(30),
        || async { containers(&b).is_empty() },
    )
    .await;
    let reply = api
        .expect("GET", &format!("/api/v2/device_groups/{group}"), None, 200)
        .await;
    assert_eq!(reply["apps"], json!([c]));

    delete_group(&api, &group).await;
    wait_for(
        "a deleted group's apps stop",
        Duration::from_secs(30),
        || async { containers(&c).is_empty() },
    )
    .await;
    assert!(
        worker.log().contains("device group deleted"),
        "{}",
        worker.log()
    );

    drop(worker);
    drop(manager);
    for app in [&a, &b, &c] {
        cleanup(app);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `dockerd` of our own in a network namespace of its own, storing under a temp dir.
struct PrivateEngine {
    netns: String,
    dir: PathBuf,
    cli: Cli,
    child: std::process::Child,
}

/// The docker CLI on one engine.
#[derive(Clone, Debug)]
struct Cli {
    socket: String,
}

impl PrivateEngine {
    fn start(name: &str) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let added = Command::new("ip").args(["netns", "add", name]).status();
        if !added.as_ref().is_ok_and(std::process::ExitStatus::success) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!(
                "cannot create a network namespace (needs root and iproute2): {added:?}"
            ));
        }
        let _ = Command::new("ip")
            .args(["-n", name, "link", "set", "lo", "up"])
            .status();
        // An empty daemon config: the system's /etc/docker/daemon.json must not apply.
        std::fs::write(dir.join("daemon.json"), "{}").map_err(|e| e.to_string())?;
        let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
        let socket = format!("unix://{}", path("docker.sock"));
        let log = std::fs::File::create(dir.join("dockerd.log")).map_err(|e| e.to_string())?;
        // nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup mounts.
        let spawned = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{name}"))
            .arg("dockerd")
            .args(["--config-file", &path("daemon.json")])
            .args(["--data-root", &path("data"), "--exec-root", &path("exec")])
            .args(["--pidfile", &path("dockerd.pid"), "-H", &socket])
            .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"])
            .args(["--storage-driver", "vfs"])
            .args(["--containerd-namespace", name])
            .args(["--containerd-plugins-namespace", &format!("{name}-plugins")])
            .args(["--shutdown-timeout", "2"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = Command::new("ip").args(["netns", "delete", name]).status();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("cannot start dockerd: {e}"));
            }
        };
        let engine = Self {
            netns: name.to_owned(),
            dir,
            cli: Cli { socket },
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !engine.cli.docker(&["version"]).status.success() {
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(engine.dir.join("dockerd.log")).unwrap_or_default();
                engine.stop();
                return Err(format!("the private dockerd did not answer: {log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(engine)
    }

    /// Stops the engine (SIGTERM to the dockerd we started, by pid) and removes its files.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
        if std::fs::remove_dir_all(&self.dir).is_err() {
            // Mounts the engine left behind keep files busy: detach them, then retry.
            for sub in ["exec", "data"] {
                let _ = Command::new("umount")
                    .args(["-R", "-l"])
                    .arg(self.dir.join(sub))
                    .status();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cli {
    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(["-H", &self.socket])
            .args(args)
            .output()
            .expect("docker CLI")
    }

    fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker -H {} {args:?}: {}",
            self.socket,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn has_image(&self, reference: &str) -> bool {
        self.docker(&["image", "inspect", reference])
            .status
            .success()
    }

    fn running(&self, app: &str) -> usize {
        self.docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=app_name={app}"),
            "--filter",
            "status=running",
        ])
        .split_whitespace()
        .count()
    }

    /// Copies images from the shared engine (`docker save | docker load`).
    fn load(&self, images: &[&str]) {
        let mut save = Command::new("docker")
            .arg("save")
            .args(images)
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker save");
        let stdout = save.stdout.take().expect("piped");
        let load = Command::new("docker")
            .args(["-H", &self.socket, "load", "-q"])
            .stdin(stdout)
            .output()
            .expect("docker load");
        assert!(
            save.wait().is_ok_and(|s| s.success()),
            "docker save {images:?}"
        );
        assert!(
            load.status.success(),
            "docker load: {}",
            String::from_utf8_lossy(&load.stderr)
        );
    }
}

/// Runs `scenario` against a private engine named `<prefix><random>` loaded with nothing yet,
/// with a fresh directory: on a task of its own, so that a failure still lets the engine stop.
/// Afterwards removes the scenario's containers, stops the engine and removes the directory,
/// then passes on the scenario's panic, if any. Without a private engine (not root, no
/// `dockerd`) prints `SKIPPED <test>`, or fails when `NEBULA_REQUIRE_ENGINE` is set.
async fn on_private_engine<F, Fut>(test: &str, prefix: &str, scenario: F)
where
    F: FnOnce(PathBuf, Cli, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    docker_ok(&["pull", "-q", IMAGE]);
    docker_ok(&["pull", "-q", IMAGE_V2]);
    let name = unique(prefix);
    let engine = match PrivateEngine::start(&name) {
        Ok(engine) => engine,
        Err(reason) => {
            assert!(
                std::env::var_os("NEBULA_REQUIRE_ENGINE").is_none(),
                "NEBULA_REQUIRE_ENGINE is set but: {reason}"
            );
            println!("SKIPPED {test}: {reason}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("{name}-run"));
    std::fs::create_dir_all(&dir).unwrap();
    let cli = engine.cli.clone();
    let result = tokio::spawn(scenario(dir.clone(), cli.clone(), name.clone())).await;
    let ids = cli.docker_ok(&["ps", "-aq", "--filter", "label=orchestrator=nebula"]);
    for id in ids.split_whitespace() {
        let _ = cli.docker(&["rm", "-f", id]);
    }
    engine.stop();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_unused_images_on_the_groups_hosts() {
    if !engine_ready("prune_removes_unused_images_on_the_groups_hosts") {
        return;
    }
    on_private_engine(
        "prune_removes_unused_images_on_the_groups_hosts",
        "nebula-dgp-",
        prune_scenario,
    )
    .await;
}

/// The prune scenario against the private engine (a task of its own, so a failure still lets
/// the caller stop the engine).
async fn prune_scenario(dir: PathBuf, engine: Cli, name: String) {
    engine.load(&[IMAGE, IMAGE_V2]);
    let unused = |n: u32| format!("nebula-prune-{name}:unused{n}");
    engine.docker_ok(&["tag", IMAGE_V2, &unused(1)]);

    let (_manager, api, uri) = api_manager(&dir, &[]).await;
    let app = unique("dgp");
    let group = unique("pruned");
    portless_app_in_group(&api, &app, &group).await;
    // A prune requested before the worker ever saw the group is not replayed at its start.
    prune_group(&api, &group).await;
    let worker = worker(&dir, &uri, &group, Some(&engine.socket));
    wait_for(
        "the group's app runs on the private engine",
        Duration::from_secs(60),
        || async { engine.running(&app) == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        engine.has_image(&unused(1)),
        "no prune at first sight:\n{}",
        worker.log()
    );

    let reply = prune_group(&api, &group).await;
    assert_eq!(reply["prune_id"], 3);
    wait_for(
        "a device group prune removes the unused image",
        Duration::from_secs(30),
        || async { !engine.has_image(&unused(1)) },
    )
    .await;
    assert!(engine.has_image(IMAGE), "the image in use stays");
    assert_eq!(engine.running(&app), 1);

    // POST /api/v2/prune reaches every group.
    engine.load(&[IMAGE_V2]);
    engine.docker_ok(&["tag", IMAGE_V2, &unused(2)]);
    let reply = api.expect("POST", "/api/v2/prune", None, 202).await;
    assert_eq!(reply, json!({"prune_ids": {group.clone(): 4}}));
    wait_for(
        "a prune of every group removes the unused image",
        Duration::from_secs(30),
        || async { !engine.has_image(&unused(2)) },
    )
    .await;
    assert!(engine.has_image(IMAGE));
    assert!(
        worker.log().contains("pruned unused images"),
        "{}",
        worker.log()
    );
}

/// The keys worker `id`'s queues are bound with to the exchange of changes on the default
/// vhost, or `None` when `rabbitmqctl` cannot tell.
fn worker_bindings(id: &str) -> Option<Vec<String>> {
    let out = Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_bindings",
            "source_name",
            "destination_name",
            "routing_key",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let queue = format!("nebula.worker.{id}.");
    let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut columns = l.split('\t');
            Some((columns.next()?, columns.next()?, columns.next()?))
        })
        .filter(|(source, destination, _)| {
            *source == nebula_rabbit::DEFAULT_EXCHANGE && destination.starts_with(&queue)
        })
        .map(|(_, _, key)| key.to_owned())
        .collect();
    keys.sort();
    Some(keys)
}

/// Within this, only a bus message can explain a change: the worker checks in once an hour.
const PUSHED: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_group_worker_hears_its_group_over_rabbitmq_at_once() {
    const TEST: &str = "a_device_group_worker_hears_its_group_over_rabbitmq_at_once";
    if !engine_ready(TEST) || !broker_ready(TEST) {
        return;
    }
    let dir = scratch_dir("nebula-dgbus-");
    let (manager, api, uri) = api_manager(&dir, &[("RABBIT_HOST", "127.0.0.1")]).await;
    let (a, b, out) = (unique("dgba"), unique("dgbb"), unique("dgbo"));
    let ports = create_apps(&api, &[&a, &b, &out]).await;
    let group = unique("busedge");
    create_group(&api, &group, json!([a])).await;
    let worker_id = unique("dgw");
    let worker = bus_worker(&dir, &uri, &group, None, &worker_id);
    // The worker subscribes before its first sync, so once the group's app runs, the queue
    // is bound.
    wait_for(
        "the group's app runs after the sync at start",
        Duration::from_secs(60),
        || async { running(&a).len() == 1 },
    )
    .await;
    match worker_bindings(&worker_id) {
        Some(keys) => assert_eq!(
            keys,
            [format!("dg.{group}")],
            "the worker's queue is bound to its group only, not to every app"
        ),
        None => println!("{TEST}: rabbitmqctl unavailable; the queue's bindings are not checked"),
    }

    change_group(&api, "PUT", &group, json!([a, b])).await;
    wait_for("an app added to the group runs", PUSHED, || async {
        running(&b).len() == 1
    })
    .await;

    // An app outside the group changes, then an app of the group: once the second is
    // applied, the first had every chance, and nothing of it is here.
    let a_before = containers(&a);
    for (app, message) in [(&out, "outside"), (&b, "pushed")] {
        api.expect(
            "PUT",
            &format!("/api/v2/apps/{app}/update"),
            Some(json!({"env_vars": {"MESSAGE": message}})),
            202,
        )
        .await;
    }
    let b_port = ports + 1;
    wait_for("a member's change is applied", PUSHED, || async {
        nebula_tests::http_get(b_port)
            .await
            .is_some_and(|body| body.starts_with("pushed"))
    })
    .await;
    assert!(containers(&out).is_empty(), "an app outside the group");
    assert_eq!(containers(&a), a_before, "an unchanged member is untouched");

    change_group(&api, "PATCH", &group, json!([b])).await;
    wait_for("an app removed from the group goes", PUSHED, || async {
        containers(&a).is_empty()
    })
    .await;

    delete_group(&api, &group).await;
    wait_for("a deleted group's apps go", PUSHED, || async {
        containers(&b).is_empty()
    })
    .await;
    create_group(&api, &group, json!([a])).await;
    wait_for("a re-created group runs", PUSHED, || async {
        running(&a).len() == 1
    })
    .await;

    drop(worker);
    drop(manager);
    for app in [&a, &b, &out] {
        cleanup(app);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_request_reaches_the_groups_hosts_over_rabbitmq_at_once() {
    const TEST: &str = "a_prune_request_reaches_the_groups_hosts_over_rabbitmq_at_once";
    if !engine_ready(TEST) || !broker_ready(TEST) {
        return;
    }
    on_private_engine(TEST, "nebula-dgbp-", bus_prune_scenario).await;
}

/// A group prune, and a prune of every group, reach a worker on the private engine over the
/// bus long before its check-in.
async fn bus_prune_scenario(dir: PathBuf, engine: Cli, name: String) {
    engine.load(&[IMAGE, IMAGE_V2]);
    let unused = |n: u32| format!("nebula-prune-{name}:unused{n}");
    engine.docker_ok(&["tag", IMAGE_V2, &unused(1)]);
    let (_manager, api, uri) = api_manager(&dir, &[("RABBIT_HOST", "127.0.0.1")]).await;
    let app = unique("dgbp");
    let group = unique("buspruned");
    portless_app_in_group(&api, &app, &group).await;
    let worker = bus_worker(&dir, &uri, &group, Some(&engine.socket), &unique("dgpw"));
    wait_for(
        "the group's app runs on the private engine",
        Duration::from_secs(60),
        || async { engine.running(&app) == 1 },
    )
    .await;
    assert!(engine.has_image(&unused(1)), "no prune at first sight");

    prune_group(&api, &group).await;
    wait_for(
        "a device group prune removes the unused image",
        PUSHED,
        || async { !engine.has_image(&unused(1)) },
    )
    .await;
    assert!(engine.has_image(IMAGE), "the image in use stays");

    engine.load(&[IMAGE_V2]);
    engine.docker_ok(&["tag", IMAGE_V2, &unused(2)]);
    api.expect("POST", "/api/v2/prune", None, 202).await;
    wait_for(
        "a prune of every group removes the unused image",
        PUSHED,
        || async { !engine.has_image(&unused(2)) },
    )
    .await;
    assert_eq!(engine.running(&app), 1);
    assert!(
        worker.log().contains("pruned unused images"),
        "{}",
        worker.log()
    );
}
