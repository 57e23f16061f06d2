//! `DockerRuntime` against a real Docker engine (DOCKER_HOST or the default socket) and the local
//! registry on 127.0.0.1:5000 that `.ci/images.sh` starts and fills.
//!
//! Without an engine, registry or test image every test prints `SKIPPED: ...` and returns; with
//! `NEBULA_REQUIRE_ENGINE=1` it fails instead. Each test names what it creates
//! `nebula-it-<random>...` and removes it afterwards, also when it fails.
//!
//! The two tests that need an engine to themselves (the `nebula` network must not exist yet;
//! pruning removes *every* unused image) start a private `dockerd` in a network namespace of
//! their own (root only; skipped otherwise), so the shared engine is never pruned.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::models::{ContainerCreateBody, HealthConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ImportImageOptions, ListContainersOptions, ListImagesOptions,
    ListNetworksOptions, PushImageOptions, RemoveContainerOptions, RemoveImageOptions,
    StartContainerOptions, StopContainerOptions, TagImageOptions,
};
use futures::{FutureExt, StreamExt, TryStreamExt};
use nebula_core::container::{
    ContainerSpec, ContainerState, Health, LABEL_ORCHESTRATOR, NetworkMode, ORCHESTRATOR,
};
use nebula_core::runtime::{Runtime, RuntimeError};
use nebula_core::schedule::PortBinding;
use nebula_docker::{DockerConfig, DockerRuntime, NEBULA_NETWORK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REGISTRY: &str = "127.0.0.1:5000";
const IMAGE: &str = "127.0.0.1:5000/nebula-test/busybox:latest";
const IMAGE_V2: &str = "127.0.0.1:5000/nebula-test/busybox:v2";
const MISSING: &str = "127.0.0.1:5000/nebula-missing/none:latest";
/// Label on every container these tests create: the test's unique prefix.
const MARK: &str = "nebula.it";

fn skip(reason: &str) {
    assert!(
        std::env::var_os("NEBULA_REQUIRE_ENGINE").is_none(),
        "NEBULA_REQUIRE_ENGINE is set but: {reason}"
    );
    println!("SKIPPED: {reason}; run .ci/images.sh and start dockerd to run it");
}

fn unique_prefix() -> String {
    format!("nebula-it-{:08x}", rand::random::<u32>())
}

/// One test's handles: the runtime under test, a raw client for checks, and the name prefix.
#[derive(Clone)]
struct Env {
    rt: DockerRuntime,
    docker: Docker,
    prefix: String,
}

impl Env {
    /// A spec carrying the test's mark, running `sleep 300` on the default bridge.
    fn spec(&self, suffix: &str) -> ContainerSpec {
        ContainerSpec {
            name: format!("{}-{suffix}", self.prefix),
            image: IMAGE.to_owned(),
            env: BTreeMap::new(),
            ports: Vec::new(),
            binds: Vec::new(),
            devices: Vec::new(),
            privileged: false,
            network: NetworkMode::Networks(vec!["bridge".into()]),
            restart_unless_stopped: false,
            memory_bytes: None,
            nano_cpus: None,
            command: Some(vec!["sleep".into(), "300".into()]),
            entrypoint: None,
            healthcheck: None,
            labels: BTreeMap::from([
                (LABEL_ORCHESTRATOR.to_owned(), ORCHESTRATOR.to_owned()),
                (MARK.to_owned(), self.prefix.clone()),
            ]),
        }
    }

    async fn inspect(&self, name: &str) -> bollard::models::ContainerInspectResponse {
        self.docker.inspect_container(name, None).await.unwrap()
    }
}

async fn raw_client(host: &str) -> Result<Docker, String> {
    let docker = if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(host, 120, bollard::API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_unix(host, 120, bollard::API_DEFAULT_VERSION)
    }
    .map_err(|e| e.to_string())?;
    docker.negotiate_version().await.map_err(|e| e.to_string())
}

/// Connects to the shared engine and pulls the test image; `None` (after printing why) when
/// either is missing.
async fn shared_env() -> Option<Env> {
    let host = std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty());
    let rt = match DockerRuntime::connect(&DockerConfig::with_host(host)).await {
        Ok(rt) => rt,
        Err(e) => {
            skip(&format!("no Docker engine answers ({e})"));
            return None;
        }
    };
    let docker = match raw_client(rt.host_address()).await {
        Ok(docker) => docker,
        Err(e) => {
            skip(&format!("no Docker engine answers a second client ({e})"));
            return None;
        }
    };
    if let Err(e) = rt.pull(IMAGE, None).await {
        skip(&format!("the test image {IMAGE} cannot be pulled ({e})"));
        return None;
    }
    Some(Env {
        rt,
        docker,
        prefix: unique_prefix(),
    })
}

/// Removes every container, network and image tag whose name starts with the prefix.
async fn cleanup(docker: &Docker, prefix: &str) {
    let filters = std::collections::HashMap::from([("name".to_owned(), vec![prefix.to_owned()])]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters.clone()),
        ..Default::default()
    };
    for c in docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
    {
        let ours = c
            .names
            .unwrap_or_default()
            .iter()
            .any(|n| n.trim_start_matches('/').starts_with(prefix));
        if let (true, Some(id)) = (ours, c.id) {
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            let _ = docker.remove_container(&id, Some(options)).await;
        }
    }
    for n in docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .unwrap_or_default()
    {
        if let (Some(name), Some(id)) = (n.name, n.id)
            && name.starts_with(prefix)
        {
            let _ = docker.remove_network(&id).await;
        }
    }
    for image in docker
        .list_images(Some(ListImagesOptions::default()))
        .await
        .unwrap_or_default()
    {
        for tag in image.repo_tags.iter().filter(|t| t.contains(prefix)) {
            let _ = docker
                .remove_image(tag, None::<RemoveImageOptions>, None)
                .await;
        }
    }
}

/// Runs `body` on the shared engine and cleans up after it, whether it passed or panicked.
async fn on_shared_engine<F, Fut>(body: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(env) = shared_env().await else {
        return;
    };
    let result = AssertUnwindSafe(body(env.clone())).catch_unwind().await;
    cleanup(&env.docker, &env.prefix).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// One HTTP/1.0 exchange over plain TCP; the whole answer (status line, headers, body).
async fn http(addr: SocketAddr, request: &str) -> std::io::Result<String> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::other("connect timed out"))??;
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("read timed out"))??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// GETs `/` until the answer contains `want` or ~5 s pass; the last answer or error.
async fn get_until(addr: SocketAddr, want: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let last = match http(addr, "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await {
            Ok(answer) if answer.contains(want) => return Ok(answer),
            Ok(answer) => answer,
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_runtime_contract() {
    on_shared_engine(|env| async move {
        nebula_core::testing::contract::runtime(&env.rt, IMAGE, MISSING, &env.prefix).await;
        // The contract's container asked for [nebula, bridge]: it was created on the first
        // and connected to the second before it started.
        let spec = ContainerSpec {
            network: NetworkMode::Networks(vec![NEBULA_NETWORK.into(), "bridge".into()]),
            ..env.spec("both")
        };
        env.rt.create(&spec).await.unwrap();
        let c = env.inspect(&spec.name).await;
        let networks = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        let mut names: Vec<&str> = networks.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["bridge", "nebula"]);
        assert_eq!(
            c.host_config.and_then(|h| h.network_mode).as_deref(),
            Some(NEBULA_NETWORK)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_env_on_the_bound_port_and_a_failed_start_leaves_nothing() {
    on_shared_engine(|env| async move {
        let port = free_port();
        let message = format!("hello-{}", env.prefix);
        let spec = ContainerSpec {
            env: BTreeMap::from([("MESSAGE".to_owned(), message.clone())]),
            ports: vec![PortBinding {
                host: port,
                container: 80,
            }],
            command: None, // the image's own CMD: busybox httpd serving $MESSAGE
            restart_unless_stopped: true,
            memory_bytes: Some(32 * 1024 * 1024),
            nano_cpus: Some(500_000_000),
            ..env.spec("web")
        };
        let id = env.rt.create(&spec).await.unwrap();
        let answer = get_until(local(port), &message)
            .await
            .unwrap_or_else(|last| panic!("not served: {last}"));
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "{answer}"
        );
        assert!(
            answer.contains(&id.0[..12]),
            "the page names the container's hostname: {answer}"
        );

        let c = env.inspect(&spec.name).await;
        let host = c.host_config.unwrap();
        assert_eq!(host.memory, Some(32 * 1024 * 1024));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(
            host.restart_policy
                .and_then(|r| r.name)
                .map(|n| n.to_string())
                .as_deref(),
            Some("unless-stopped")
        );
        assert!(
            c.config
                .unwrap()
                .env
                .unwrap_or_default()
                .contains(&format!("MESSAGE={message}"))
        );

        // Same host port again: the engine creates the container, the start fails, and the
        // runtime removes what it created.
        let mark = format!("{}-clash", env.prefix);
        let clash = ContainerSpec {
            ports: spec.ports.clone(),
            labels: BTreeMap::from([(MARK.to_owned(), mark.clone())]),
            ..env.spec("clash")
        };
        let err = env.rt.create(&clash).await.unwrap_err();
        assert!(
            matches!(err, RuntimeError::Refused(_)),
            "port in use: {err:?}"
        );
        assert!(
            env.rt.list(&[(MARK, &mark)]).await.unwrap().is_empty(),
            "a failed start leaves nothing behind"
        );

        env.rt.remove(&id, Duration::from_secs(1)).await.unwrap();
        assert!(
            http(local(port), "GET / HTTP/1.0\r\n\r\n").await.is_err(),
            "the port is released"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_none_networks() {
    on_shared_engine(|env| async move {
        // Host network: httpd listens on a port of the host itself, no binding needed.
        let port = free_port();
        let message = format!("host-{}", env.prefix);
        let spec = ContainerSpec {
            network: NetworkMode::Host,
            command: None,
            env: BTreeMap::from([
                ("MESSAGE".to_owned(), message.clone()),
                ("PORT".to_owned(), port.to_string()),
            ]),
            ..env.spec("host")
        };
        env.rt.create(&spec).await.unwrap();
        get_until(local(port), &message)
            .await
            .unwrap_or_else(|last| panic!("not served on the host network: {last}"));
        let c = env.inspect(&spec.name).await;
        assert_eq!(
            c.host_config.and_then(|h| h.network_mode).as_deref(),
            Some("host")
        );

        let spec = ContainerSpec {
            network: NetworkMode::None,
            ..env.spec("none")
        };
        env.rt.create(&spec).await.unwrap();
        let c = env.inspect(&spec.name).await;
        assert_eq!(
            c.host_config.and_then(|h| h.network_mode).as_deref(),
            Some("none")
        );
        let networks = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        assert_eq!(networks.keys().collect::<Vec<_>>(), ["none"]);

        let err = env
            .rt
            .create(&ContainerSpec {
                network: NetworkMode::Networks(vec![format!("{}-absent", env.prefix)]),
                ..env.spec("absent")
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, RuntimeError::NotFound(_)),
            "a network that does not exist: {err:?}"
        );
        assert!(
            env.rt.list(&[(MARK, &env.prefix)]).await.unwrap().len() == 2,
            "the failed create left nothing"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_maps_state_and_health() {
    on_shared_engine(|env| async move {
        let second = 1_000_000_000_i64;
        let make = |suffix: &str, test: Option<&str>, interval: i64| {
            let name = format!("{}-{suffix}", env.prefix);
            let body = ContainerCreateBody {
                image: Some(IMAGE.to_owned()),
                cmd: Some(vec!["sleep".into(), "300".into()]),
                labels: Some(std::collections::HashMap::from([(
                    MARK.to_owned(),
                    env.prefix.clone(),
                )])),
                healthcheck: test.map(|t| HealthConfig {
                    test: Some(vec!["CMD".into(), t.into()]),
                    interval: Some(interval),
                    timeout: Some(second),
                    retries: Some(1),
                    ..HealthConfig::default()
                }),
                ..ContainerCreateBody::default()
            };
            let docker = env.docker.clone();
            async move {
                let options = CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                };
                docker.create_container(Some(options), body).await.unwrap();
                docker
                    .start_container(&name, None::<StartContainerOptions>)
                    .await
                    .unwrap();
            }
        };
        make("healthy", Some("true"), second / 5).await;
        make("unhealthy", Some("false"), second / 5).await;
        make("starting", Some("true"), 3600 * second).await;
        make("plain", None, 0).await;
        let stopped = env.rt.create(&env.spec("stopped")).await.unwrap();
        env.docker
            .stop_container(
                &stopped.0,
                Some(StopContainerOptions {
                    t: Some(0),
                    signal: None,
                }),
            )
            .await
            .unwrap();

        let want = BTreeMap::from([
            ("healthy", (ContainerState::Running, Health::Healthy)),
            ("unhealthy", (ContainerState::Running, Health::Unhealthy)),
            ("starting", (ContainerState::Running, Health::Starting)),
            ("plain", (ContainerState::Running, Health::None)),
            ("stopped", (ContainerState::Exited, Health::None)),
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = env.rt.list(&[(MARK, &env.prefix)]).await.unwrap();
            let got: BTreeMap<&str, (ContainerState, Health)> = listed
                .iter()
                .map(|c| {
                    (
                        c.name
                            .strip_prefix(&format!("{}-", env.prefix))
                            .unwrap_or(&c.name),
                        (c.state, c.health),
                    )
                })
                .collect();
            if got == want {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                assert!(
                    listed
                        .iter()
                        .all(|c| c.created_at + 120 > now && c.created_at <= now + 5),
                    "created_at: {listed:?}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "list did not reach {want:?}; last {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// A cron job's healthcheck, from the job to the run's container on the engine: the
/// configured test and durations in nanoseconds, and the health the list reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_runs_container_carries_the_jobs_healthcheck() {
    on_shared_engine(|env| async move {
        use nebula_core::cron_job::{CronJob, CronJobName, CronJobSpec};
        use nebula_core::healthcheck::{HealthTest, Healthcheck, Probe};
        let mut job = CronJob {
            cron_job_name: CronJobName::parse("backup").unwrap(),
            cron_job_id: 1,
            incarnation: 1,
            spec: CronJobSpec::new("* * * * *", IMAGE),
        };
        job.spec.run_command = Some(vec!["sleep".into(), "300".into()]);
        job.spec.networks = vec!["bridge".into()];
        job.spec.healthcheck = Some(Healthcheck::Check(Probe {
            test: Some(HealthTest::Shell("test -d /bin".into())),
            interval_secs: Some(1),
            timeout_secs: Some(2),
            retries: Some(1),
            start_period_secs: Some(60),
        }));
        let mut spec = nebula_core::cron_schedule::cron_container(&job, 1_700_000_040);
        spec.name = format!("{}-cron", env.prefix);
        spec.labels.insert(MARK.to_owned(), env.prefix.clone());
        env.rt.create(&spec).await.unwrap();
        let health = env.inspect(&spec.name).await.config.unwrap().healthcheck;
        assert_eq!(
            health,
            Some(HealthConfig {
                test: Some(vec!["CMD-SHELL".into(), "test -d /bin".into()]),
                interval: Some(1_000_000_000),
                timeout: Some(2_000_000_000),
                retries: Some(1),
                start_period: Some(60_000_000_000),
                start_interval: None,
            })
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listed = env.rt.list(&[(MARK, &env.prefix)]).await.unwrap();
            if listed.iter().any(|c| c.health == Health::Healthy) {
                break;
            }
            assert!(Instant::now() < deadline, "never healthy: {listed:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// HEAD (for the digest) or DELETE on a manifest of the local registry.
async fn registry(method: &str, path: &str) -> std::io::Result<String> {
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {REGISTRY}\r\nAccept: application/vnd.docker.distribution.manifest.v2+json\r\n\r\n"
    );
    http(REGISTRY.parse().map_err(std::io::Error::other)?, &request).await
}

async fn push(docker: &Docker, name: &str, tag: &str) {
    let options = PushImageOptions {
        tag: Some(tag.to_owned()),
        ..Default::default()
    };
    // Docker 20.10 wants an X-Registry-Auth header even for a registry without auth.
    let mut progress = docker.push_image(name, Some(options), Some(DockerCredentials::default()));
    while let Some(item) = progress.next().await {
        let info = item.unwrap_or_else(|e| panic!("push {name}:{tag}: {e}"));
        assert!(info.error_detail.is_none(), "push {name}:{tag}: {info:?}");
    }
}

async fn image_id(docker: &Docker, image: &str) -> String {
    docker
        .inspect_image(image)
        .await
        .unwrap()
        .id
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_refreshes_a_moved_tag_and_pulls_by_digest() {
    on_shared_engine(|env| async move {
        env.rt.pull(IMAGE_V2, None).await.unwrap();
        let (v1, v2) = (
            image_id(&env.docker, IMAGE).await,
            image_id(&env.docker, IMAGE_V2).await,
        );
        assert_ne!(v1, v2, "run .ci/images.sh: the two test images must differ");

        // The registry holds v2 under <prefix>/busybox:latest; the engine's copy of that tag is
        // the older v1. A pull must bring the tag up to date.
        let name = format!("{REGISTRY}/{}/busybox", env.prefix);
        let reference = format!("{name}:latest");
        let tag = |source: &'static str| {
            let docker = env.docker.clone();
            let name = name.clone();
            async move {
                let options = TagImageOptions {
                    repo: Some(name),
                    tag: Some("latest".into()),
                };
                docker.tag_image(source, Some(options)).await.unwrap();
            }
        };
        tag(IMAGE_V2).await;
        push(&env.docker, &name, "latest").await;
        tag(IMAGE).await;
        assert_eq!(image_id(&env.docker, &reference).await, v1);
        env.rt.pull(&reference, None).await.unwrap();
        assert_eq!(
            image_id(&env.docker, &reference).await,
            v2,
            "pull updated the tag"
        );

        // By digest, without a local copy of the tag.
        let path = format!("/v2/{}/busybox/manifests/latest", env.prefix);
        let head = registry("HEAD", &path).await.unwrap();
        let digest = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("Docker-Content-Digest: ")
                    .or_else(|| l.strip_prefix("docker-content-digest: "))
            })
            .map(|d| d.trim().to_owned())
            .unwrap_or_else(|| panic!("no digest in {head}"));
        env.docker
            .remove_image(&reference, None::<RemoveImageOptions>, None)
            .await
            .unwrap();
        let by_digest = format!("{name}@{digest}");
        assert!(!env.rt.has_image(&by_digest).await.unwrap());
        env.rt.pull(&by_digest, None).await.unwrap();
        assert!(env.rt.has_image(&by_digest).await.unwrap());
        assert_eq!(image_id(&env.docker, &by_digest).await, v2);
        let _ = env
            .docker
            .remove_image(&by_digest, None::<RemoveImageOptions>, None)
            .await;

        // Leave the registry as it was (it runs with deletes enabled).
        let _ = registry(
            "DELETE",
            &format!("/v2/{}/busybox/manifests/{digest}", env.prefix),
        )
        .await;
    })
    .await;
}

/// A `dockerd` of our own in a network namespace of its own (so its startup touches none of the
/// host's interfaces), storing under a temp dir. Root only.
struct PrivateEngine {
    netns: String,
    dir: PathBuf,
    child: tokio::process::Child,
}

impl PrivateEngine {
    async fn start(name: &str) -> Result<(Self, Env), String> {
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let status = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status();
        if !status.as_ref().is_ok_and(std::process::ExitStatus::success) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(format!(
                "cannot create a network namespace (needs root and iproute2): {status:?}"
            ));
        }
        let _ = std::process::Command::new("ip")
            .args(["-n", name, "link", "set", "lo", "up"])
            .status();
        // An empty daemon config: the system's /etc/docker/daemon.json must not apply.
        std::fs::write(dir.join("daemon.json"), "{}").map_err(|e| e.to_string())?;
        let path = |p: &str| dir.join(p).to_string_lossy().into_owned();
        let socket = format!("unix://{}", path("docker.sock"));
        let log = std::fs::File::create(dir.join("dockerd.log")).map_err(|e| e.to_string())?;
        // nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup mounts.
        let spawned = tokio::process::Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{name}"))
            .arg("dockerd")
            .args([
                "--config-file",
                &path("daemon.json"),
                "--data-root",
                &path("data"),
                "--exec-root",
                &path("exec"),
            ])
            .args(["--pidfile", &path("dockerd.pid"), "-H", &socket])
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver",
                "vfs",
            ])
            .args([
                "--containerd-namespace",
                name,
                "--containerd-plugins-namespace",
                &format!("{name}-plugins"),
            ])
            .args(["--shutdown-timeout", "2"])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "delete", name])
                    .status();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("cannot start dockerd: {e}"));
            }
        };
        let engine = Self {
            netns: name.to_owned(),
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let rt = loop {
            if let Ok(rt) =
                DockerRuntime::connect(&DockerConfig::with_host(Some(socket.clone()))).await
            {
                break rt;
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(engine.dir.join("dockerd.log")).unwrap_or_default();
                engine.stop().await;
                return Err(format!("the private dockerd did not answer: {log}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let docker = raw_client(&socket).await?;
        Ok((
            engine,
            Env {
                rt,
                docker,
                prefix: name.to_owned(),
            },
        ))
    }

    /// Stops the engine (SIGTERM to the dockerd we started, by pid) and removes its files.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
                .await
                .is_err()
            {
                let _ = self.child.kill().await;
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .status();
        if std::fs::remove_dir_all(&self.dir).is_err() {
            // Mounts the engine left behind keep files busy: detach them, then retry.
            let _ = std::process::Command::new("umount")
                .args(["-R", "-l"])
                .arg(self.dir.join("exec"))
                .status();
            let _ = std::process::Command::new("umount")
                .args(["-R", "-l"])
                .arg(self.dir.join("data"))
                .status();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Copies images from the shared engine into another (`docker save | docker load`).
async fn copy_images(from: &Docker, to: &Docker, images: &[&str]) {
    let tar: Vec<u8> = from
        .export_images(images)
        .try_fold(Vec::new(), |mut all, chunk| async move {
            all.extend_from_slice(&chunk);
            Ok(all)
        })
        .await
        .unwrap();
    let mut progress = to.import_image(
        ImportImageOptions::default(),
        bollard::body_full(tar.into()),
        None,
    );
    while let Some(item) = progress.next().await {
        item.unwrap();
    }
}

/// Runs `body` against a private engine that holds the test images, then stops it.
async fn on_private_engine<F, Fut>(body: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(shared) = shared_env().await else {
        return;
    };
    if let Err(e) = shared.rt.pull(IMAGE_V2, None).await {
        skip(&format!("the test image {IMAGE_V2} cannot be pulled ({e})"));
        return;
    }
    let (engine, env) = match PrivateEngine::start(&shared.prefix).await {
        Ok(started) => started,
        Err(reason) => {
            skip(&format!("this test needs a private dockerd: {reason}"));
            return;
        }
    };
    let result = AssertUnwindSafe(async {
        copy_images(&shared.docker, &env.docker, &[IMAGE, IMAGE_V2]).await;
        body(env.clone()).await;
    })
    .catch_unwind()
    .await;
    cleanup(&env.docker, &env.prefix).await;
    engine.stop().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nebula_network_is_found_by_exact_name() {
    on_private_engine(|env| async move {
        let exact = |docker: Docker| async move {
            let networks = docker
                .list_networks(None::<ListNetworksOptions>)
                .await
                .unwrap();
            networks
                .into_iter()
                .filter(|n| n.name.as_deref() == Some(NEBULA_NETWORK))
                .filter_map(|n| n.id)
                .collect::<Vec<_>>()
        };
        assert!(
            exact(env.docker.clone()).await.is_empty(),
            "a fresh engine has no nebula network"
        );
        // A network whose name merely starts with "nebula" must not count as "nebula".
        let decoy = bollard::models::NetworkCreateRequest {
            name: format!("nebula-prefixed-{}", env.prefix),
            driver: Some("bridge".into()),
            ..Default::default()
        };
        env.docker.create_network(decoy).await.unwrap();

        let spec = ContainerSpec {
            network: NetworkMode::Networks(vec![NEBULA_NETWORK.into()]),
            ..env.spec("on-nebula")
        };
        env.rt.create(&spec).await.unwrap();
        let ids = exact(env.docker.clone()).await;
        assert_eq!(ids.len(), 1, "exactly one network named nebula");
        let c = env.inspect(&spec.name).await;
        let networks = c
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        assert_eq!(
            networks
                .get(NEBULA_NETWORK)
                .and_then(|e| e.network_id.clone())
                .as_ref(),
            Some(&ids[0])
        );

        // Cached: a second container reuses it; removed by hand, it is created again.
        env.rt
            .create(&ContainerSpec {
                name: format!("{}-again", env.prefix),
                ..spec.clone()
            })
            .await
            .unwrap();
        assert_eq!(exact(env.docker.clone()).await, ids);
        cleanup(&env.docker, &env.prefix).await;
        env.docker.remove_network(&ids[0]).await.unwrap();
        env.rt.create(&spec).await.unwrap();
        assert_eq!(
            exact(env.docker.clone()).await.len(),
            1,
            "re-created after it disappeared"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_unused_tagged_images_only() {
    on_private_engine(|env| async move {
        assert!(
            env.rt.has_image(IMAGE).await.unwrap() && env.rt.has_image(IMAGE_V2).await.unwrap()
        );
        // IMAGE is used by a container (stopped still counts), IMAGE_V2 by none.
        let used = env
            .rt
            .create(&ContainerSpec {
                network: NetworkMode::None,
                ..env.spec("user")
            })
            .await
            .unwrap();
        env.docker
            .stop_container(
                &used.0,
                Some(StopContainerOptions {
                    t: Some(0),
                    signal: None,
                }),
            )
            .await
            .unwrap();
        let removed = env.rt.prune_images().await.unwrap();
        assert_eq!(
            removed, 1,
            "only the unused v2 image (tagged, not dangling) is pruned"
        );
        assert!(!env.rt.has_image(IMAGE_V2).await.unwrap());
        assert!(env.rt.has_image(IMAGE).await.unwrap());
        assert_eq!(
            env.rt.prune_images().await.unwrap(),
            0,
            "nothing more to prune"
        );
        env.rt.remove(&used, Duration::from_secs(1)).await.unwrap();
        assert_eq!(
            env.rt.prune_images().await.unwrap(),
            1,
            "unused once its container is gone"
        );
        assert!(!env.rt.has_image(IMAGE).await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reports_an_absent_engine_as_unavailable() {
    let err = DockerRuntime::connect(&DockerConfig::with_host(Some(
        "unix:///nonexistent/docker.sock".into(),
    )))
    .await
    .unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
    let err = DockerRuntime::connect(&DockerConfig::with_host(Some("ssh://somewhere".into())))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
}
