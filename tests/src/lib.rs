//! Harness for the end-to-end tests: the real binaries, the real engine (through the `docker`
//! CLI, for setup and inspection only) and the local registry on 127.0.0.1:5000.
//!
//! The binaries must be built first (`cargo build --workspace --bins`, part of the README's test
//! command). A test that needs an engine or the registry prints `SKIPPED: ...` with the reason
//! and how to provide it, and returns.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod netns;
pub mod procs;

/// The test image in the local registry: serves "$MESSAGE <hostname>" over HTTP on port 80.
pub const IMAGE: &str = "127.0.0.1:5000/nebula-test/busybox:latest";
/// A second image, with another ID.
pub const IMAGE_V2: &str = "127.0.0.1:5000/nebula-test/busybox:v2";

/// Whether a Docker engine answers, and the test images exist in the registry; prints
/// `SKIPPED` with the reason otherwise (or fails, when `NEBULA_REQUIRE_ENGINE=1`, as in CI).
///
/// # Panics
/// When the engine is required and missing.
#[must_use]
pub fn engine_ready(test: &str) -> bool {
    let ready = engine_and_images(test);
    assert!(
        ready || std::env::var_os("NEBULA_REQUIRE_ENGINE").is_none(),
        "{test}: NEBULA_REQUIRE_ENGINE is set"
    );
    ready
}

fn engine_and_images(test: &str) -> bool {
    let engine = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output();
    if !engine.is_ok_and(|o| o.status.success()) {
        println!("SKIPPED {test}: no Docker engine answers; start dockerd (see .ci/run) to run it");
        return false;
    }
    let in_registry = Command::new("curl")
        .args([
            "-sf",
            "http://127.0.0.1:5000/v2/nebula-test/busybox/tags/list",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !in_registry {
        println!(
            "SKIPPED {test}: the local registry on 127.0.0.1:5000 has no test images; run .ci/images.sh"
        );
        return false;
    }
    true
}

/// A name no other test run uses.
#[must_use]
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

/// Whole seconds since the Unix epoch.
#[must_use]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new directory of its own under the system's temp dir, named `<prefix><random>`.
///
/// # Panics
/// When it cannot be created.
#[must_use]
pub fn scratch_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// A free TCP port on 127.0.0.1.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// A base for `count` consecutive host ports that are free now.
#[must_use]
pub fn free_port_range(count: u16) -> u16 {
    for _ in 0..200 {
        let base = 20_000 + rand::random::<u16>() % 30_000;
        if (base..base + count).all(|p| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free port range of {count}");
}

/// Path of a workspace binary.
///
/// # Panics
/// When it has not been built.
#[must_use]
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A running Nebula process (standalone, API manager or worker manager).
#[derive(Debug)]
pub struct Process {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `binary` with `args` and `env`; output goes to `log`.
    ///
    /// # Panics
    /// When the process cannot be started.
    #[must_use]
    pub fn start(binary: PathBuf, args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Self {
        let mut p = Self {
            binary,
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            log,
            child: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.binary)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same command again.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// The process log so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// An HTTP client for the API with the admin's credentials.
#[derive(Clone, Debug)]
pub struct Api {
    base: String,
    user: String,
    password: String,
    client: reqwest::Client,
}

impl Api {
    /// A client for `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn new(port: u16, user: &str, password: &str) -> Self {
        let client = nebula_http::client::client_builder(None)
            .expect("the TLS settings")
            .timeout(Duration::from_secs(30))
            .build()
            .expect("an HTTP client");
        Self {
            base: format!("http://127.0.0.1:{port}"),
            user: user.into(),
            password: password.into(),
            client,
        }
    }

    /// Calls the API; returns the status code and the JSON body (Null if none).
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("API reachable");
        let code = resp.status().as_u16();
        let value = resp.json().await.unwrap_or(Value::Null);
        (code, value)
    }

    /// Calls the API and asserts the status code is `code`; returns the JSON body.
    ///
    /// # Panics
    /// When the server cannot be reached or answers another code.
    pub async fn expect(&self, method: &str, path: &str, body: Option<Value>, code: u16) -> Value {
        let (got, reply) = self.call(method, path, body).await;
        assert_eq!(got, code, "{method} {path}: {reply}");
        reply
    }

    /// The reports of one `GET /api/v2/reports?<query>` page (none when it has no `data`).
    ///
    /// # Panics
    /// When the server cannot be reached or does not answer 200.
    pub async fn reports_page(&self, query: &str) -> Vec<Value> {
        let (code, page) = self
            .call("GET", &format!("/api/v2/reports?{query}"), None)
            .await;
        assert_eq!(code, 200, "{page}");
        page["data"].as_array().cloned().unwrap_or_default()
    }

    /// Every report of `GET /api/v2/reports?<query>`, oldest first, in pages of 5 following
    /// `last_id` to the end; checks the paging on the way (each page has 1 to 5 reports and
    /// `last_id` is its last one's id, the end has neither `data` nor `last_id`).
    ///
    /// # Panics
    /// When the server cannot be reached, or a page is not as said.
    pub async fn all_reports(&self, query: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let path = match &last {
                Some(id) => format!("/api/v2/reports?page_size=5&{query}&last_id={id}"),
                None => format!("/api/v2/reports?page_size=5&{query}"),
            };
            let page = self.expect("GET", &path, None, 200).await;
            if page["data"].is_null() {
                assert!(page["last_id"].is_null(), "{page}");
                return out;
            }
            let data = page["data"].as_array().unwrap();
            assert!(!data.is_empty() && data.len() <= 5);
            last = Some(page["last_id"]["$oid"].as_str().unwrap().to_owned());
            assert_eq!(
                data.last().unwrap()["_id"]["$oid"].as_str(),
                last.as_deref()
            );
            out.extend(data.iter().cloned());
        }
    }

    /// The newest report of `GET /api/v2/reports?<query>` (see [`Api::all_reports`]).
    pub async fn latest_report(&self, query: &str) -> Option<Value> {
        self.all_reports(query).await.pop()
    }

    /// Waits until `/api/v2/status` answers 200.
    ///
    /// # Panics
    /// After 30 s.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .client
                .get(format!("{}/api/v2/status", self.base))
                .basic_auth(&self.user, Some(&self.password))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "API at {} not ready in 30 s",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A container as `docker ps -a` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Name.
    pub name: String,
    /// Full id.
    pub id: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// Image id.
    pub image_id: String,
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The containers labelled `app_name=<app>` (any state), sorted by name, with the engine
/// given by `docker_host` (None: the default).
#[must_use]
pub fn containers(app: &str) -> Vec<Seen> {
    let ids = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=app_name={app}"),
    ]);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let mut args = vec![
        "inspect",
        "--format",
        "{{.Name}} {{.Id}} {{.State.Status}} {{.Image}}",
    ];
    args.extend(ids);
    let mut seen: Vec<Seen> = docker(&args)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some(Seen {
                name: parts.next()?.trim_start_matches('/').to_owned(),
                id: parts.next()?.to_owned(),
                state: parts.next()?.to_owned(),
                image_id: parts.next()?.to_owned(),
            })
        })
        .collect();
    seen.sort_by(|a, b| a.name.cmp(&b.name));
    seen
}

/// Running containers of `app`.
#[must_use]
pub fn running(app: &str) -> Vec<Seen> {
    containers(app)
        .into_iter()
        .filter(|c| c.state == "running")
        .collect()
}

/// Force-removes a container by name.
pub fn docker_rm(name: &str) {
    docker(&["rm", "-f", name]);
}

/// Removes every container of `app` (test cleanup).
pub fn cleanup(app: &str) {
    for c in containers(app) {
        docker_rm(&c.id);
    }
}

/// Runs a docker CLI command; panics on failure.
///
/// # Panics
/// When the command fails.
pub fn docker_ok(args: &[&str]) {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image id of a local image reference.
#[must_use]
pub fn image_id(reference: &str) -> String {
    docker(&["image", "inspect", "--format", "{{.Id}}", reference])
        .trim()
        .to_owned()
}

/// GET `http://127.0.0.1:<port>/` with a short timeout.
pub async fn http_get(port: u16) -> Option<String> {
    let client = nebula_http::client::client_builder(None)
        .ok()?
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let resp = client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.text().await.ok()
}

/// Polls `check` every 100 ms until it is true.
///
/// # Panics
/// After `timeout`, with `what`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The number of logical CPUs the engine reports.
#[must_use]
pub fn engine_cpus() -> u32 {
    docker(&["info", "--format", "{{.NCPU}}"])
        .trim()
        .parse()
        .unwrap_or(1)
}
