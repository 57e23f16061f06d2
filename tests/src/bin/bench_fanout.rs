//! Fan-out benchmark: N simulated hosts — each a `nebula_core::worker::Worker` over its own
//! in-memory `FakeRuntime`, with its own RabbitMQ connection and queue (`RabbitBus`) and its own
//! `HttpSource` — against a real `nebula-api-manager` on RabbitMQ. Measures the time from one
//! API call (a PUT update of the app every worker selects) until each worker runs the new
//! `app_id`, and, in the same run, the broker's own fan-out time for the same N (a raw lapin
//! publisher and N raw consumers, each on its own connection, on a fanout exchange).
//!
//! Run with (RabbitMQ on 127.0.0.1:5672, guest/guest; see docs/benchmarks.md):
//!   cargo build --release --workspace --bins &&
//!   sh -c 'ulimit -n 65536; target/release/bench_fanout 10 100 1000 5000'
//!
//! `BENCH_TOPOLOGY=streams` makes the simulated workers subscribe through shared streams
//! (`NEBULA_RABBIT_TOPOLOGY=streams`) instead of one queue each.
//!
//! `BENCH_RABBIT_PORT` picks another broker (default 5672): a broker started with the Debian
//! defaults holds ~830 sockets (soft `ulimit -n` 1024), too few for N = 1000 plus the raw
//! consumers; docs/benchmarks.md shows how to start a private one with more.
//!
//! `bench_fanout memory` instead prints the RSS of an idle `nebula-worker-manager` managing 10
//! containers on the local Docker engine and of an idle `nebula-api-manager` (needs the engine
//! and the test image, `.ci/images.sh`).
//!
//! The binaries used are the ones next to this executable (release or debug, printed).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use nebula_core::bus::Bus;
use nebula_core::container::{ContainerId, ContainerSpec, LABEL_APP_ID, ObservedContainer};

use nebula_core::model::AppName;
use nebula_core::runtime::{RegistryAuth, Runtime, RuntimeError};
use nebula_core::schedule::HostResources;
use nebula_core::testing::FakeRuntime;
use nebula_core::worker::{Selection, Worker, WorkerConfig};
use nebula_http::client::{ClientAuth, HttpSource};
use nebula_rabbit::{RabbitBus, RabbitConfig, Topology};
use nebula_tests::{Api, free_port, unique};
use serde_json::json;

const IMAGE: &str = "127.0.0.1:5000/nebula-test/busybox:latest";
const ROUNDS: usize = 3;

/// The broker's port: `BENCH_RABBIT_PORT`, default 5672.
fn rabbit_port() -> u16 {
    std::env::var("BENCH_RABBIT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5672)
}

/// How the simulated workers subscribe: `BENCH_TOPOLOGY=streams` for shared streams per
/// topic, anything else (or unset) for one queue per worker.
fn topology() -> Topology {
    match std::env::var("BENCH_TOPOLOGY").as_deref() {
        Ok("streams") => Topology::Streams,
        _ => Topology::Queues,
    }
}

/// The idle time between rounds: `BENCH_PAUSE_MS`, default 5,000.
fn pause() -> Duration {
    Duration::from_millis(
        std::env::var("BENCH_PAUSE_MS")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(5000),
    )
}

/// The `frame_max` of every connection: `BENCH_FRAME_MAX`, default the workers' default.
fn frame_max() -> u32 {
    std::env::var("BENCH_FRAME_MAX")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(nebula_rabbit::DEFAULT_FRAME_MAX)
}

fn amqp() -> String {
    format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f?frame_max={}",
        rabbit_port(),
        frame_max()
    )
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let path = exe.parent().expect("exe dir").join(name);
    assert!(
        path.exists(),
        "{} missing: cargo build --workspace --bins",
        path.display()
    );
    path
}

fn profile() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(binary: &str, args: &[&str], env: &[(&str, &str)], log: &std::path::Path) -> Proc {
    let log = std::fs::File::create(log).expect("log");
    Proc(
        Command::new(sibling(binary))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn"),
    )
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat` (clock ticks of
/// 10 ms: the Linux default `USER_HZ` of 100).
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Every RabbitMQ node on this machine (`beam.smp` processes): the broker's CPU is theirs.
fn broker_pids() -> Vec<String> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("beam.smp"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// CPU used so far by the broker, this process (the simulated hosts) and the API manager.
#[derive(Clone, Copy, Default)]
struct Cpu {
    broker: Duration,
    hosts: Duration,
    manager: Duration,
}

impl Cpu {
    fn now(manager: u32) -> Self {
        Self {
            broker: broker_pids().iter().map(|p| cpu_time(p)).sum(),
            hosts: cpu_time("self"),
            manager: cpu_time(&manager.to_string()),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            broker: self.broker.saturating_sub(before.broker),
            hosts: self.hosts.saturating_sub(before.hosts),
            manager: self.manager.saturating_sub(before.manager),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// One simulated host: its in-memory engine, wrapped so that each container creation is
/// time-stamped by the app version it runs. The stamp is taken inside the worker's own call,
/// so the bench's polling neither delays the workers nor blurs the times.
struct Host {
    stamps: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Host {
    /// When this host first created a container of app version `app_id`.
    fn applied(&self, app_id: &str) -> Option<Instant> {
        self.stamps.lock().ok()?.get(app_id).copied()
    }
}

/// A [`FakeRuntime`] that remembers when it first created a container of each `app_id`.
struct Stamped {
    inner: FakeRuntime,
    stamps: Arc<Mutex<HashMap<String, Instant>>>,
}

#[async_trait]
impl Runtime for Stamped {
    async fn host(&self) -> Result<HostResources, RuntimeError> {
        self.inner.host().await
    }
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.inner.list(labels).await
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        let id = self.inner.create(spec).await?;
        if let Some(app_id) = spec.labels.get(LABEL_APP_ID)
            && let Ok(mut stamps) = self.stamps.lock()
        {
            stamps.entry(app_id.clone()).or_insert_with(Instant::now);
        }
        Ok(id)
    }
    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.inner.start(id).await
    }
    async fn restart(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.inner.restart(id).await
    }
    async fn remove(&self, id: &ContainerId, grace: Duration) -> Result<(), RuntimeError> {
        self.inner.remove(id, grace).await
    }
    async fn pull(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), RuntimeError> {
        self.inner.pull(image, auth).await
    }
    async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        self.inner.image_id(image).await
    }
    async fn prune_images(&self) -> Result<u64, RuntimeError> {
        self.inner.prune_images().await
    }
}

async fn spawn_host(run: &str, i: usize, app: &AppName, uri: &str) -> Result<Host, String> {
    let stamps = Arc::new(Mutex::new(HashMap::new()));
    let runtime = Stamped {
        inner: FakeRuntime::new(4, &[IMAGE]),
        stamps: Arc::clone(&stamps),
    };
    let config = RabbitConfig {
        port: rabbit_port(),
        worker_id: Some(format!("{run}-{i}")),
        queue_expiry: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(30),
        frame_max: frame_max(),
        topology: topology(),
        ..RabbitConfig::default()
    };
    let bus = RabbitBus::new(config).map_err(|e| e.to_string())?;
    bus.connect().await.map_err(|e| e.to_string())?;
    let source = HttpSource::new(
        uri,
        Some(ClientAuth::Basic {
            user: "admin".into(),
            password: "pw".into(),
        }),
        Duration::from_secs(30),
    )
    .map_err(|e| e.to_string())?;
    let bus: Arc<dyn Bus> = Arc::new(bus);
    let worker = Worker::new(
        Arc::new(runtime),
        Arc::new(source),
        Some(bus),
        WorkerConfig {
            selection: Selection::Apps(vec![app.clone()]),
            check_in: Duration::from_secs(3600),
            reconcile_every: Duration::from_secs(3600),
            stop_grace: Duration::ZERO,
            ..WorkerConfig::default()
        },
    );
    tokio::spawn(worker.run(std::future::pending::<()>()));
    Ok(Host { stamps })
}

/// Times until each of `hosts` runs `app_id`, from `t0` (the hosts' own stamps; polled every
/// 10 ms on a thread of its own only to learn when all are done).
async fn until_all(
    hosts: &Arc<Vec<Host>>,
    app_id: String,
    t0: Instant,
    limit: Duration,
) -> Vec<Duration> {
    let hosts = Arc::clone(hosts);
    tokio::task::spawn_blocking(move || {
        let mut done: Vec<Option<Duration>> = vec![None; hosts.len()];
        let mut left = hosts.len();
        while left > 0 && t0.elapsed() < limit {
            for (i, h) in hosts.iter().enumerate() {
                if done[i].is_none()
                    && let Some(at) = h.applied(&app_id)
                {
                    done[i] = Some(at.saturating_duration_since(t0));
                    left -= 1;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        done.into_iter().flatten().collect()
    })
    .await
    .unwrap_or_default()
}

/// The broker's own fan-out: N consumers, each on its own connection and exclusive queue bound
/// to a fanout exchange; the time from one publish until each got it.
async fn broker_fanout(n: usize) -> Result<Vec<Duration>, String> {
    let exchange = unique("nebula.bench.fanout.");
    let publisher = Connection::connect(&amqp(), ConnectionProperties::default())
        .await
        .map_err(|e| e.to_string())?;
    let pch = publisher
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    pch.exchange_declare(
        exchange.clone().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let consumers = futures::stream::iter(0..n)
        .map(|_| {
            let exchange = exchange.clone();
            async move {
                let conn = Connection::connect(&amqp(), ConnectionProperties::default()).await?;
                let ch = conn.create_channel().await?;
                let q = ch
                    .queue_declare(
                        "".into(),
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                ch.queue_bind(
                    q.name().clone(),
                    exchange.into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
                let consumer = ch
                    .basic_consume(
                        q.name().clone(),
                        "".into(),
                        BasicConsumeOptions {
                            no_ack: true,
                            ..BasicConsumeOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                Ok::<_, lapin::Error>((conn, consumer))
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let mut conns = Vec::new();
    let mut waiting = Vec::new();
    for c in consumers {
        let (conn, mut consumer) = c.map_err(|e| e.to_string())?;
        conns.push(conn);
        waiting.push(tokio::spawn(async move {
            let _ = consumer.next().await;
            Instant::now()
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    pch.basic_publish(
        exchange.into(),
        "".into(),
        BasicPublishOptions::default(),
        b"{\"bench\":true}",
        BasicProperties::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut times = Vec::with_capacity(n);
    for w in waiting {
        if let Ok(Ok(at)) = tokio::time::timeout(Duration::from_secs(60), w).await {
            times.push(at.duration_since(t0));
        }
    }
    for conn in conns {
        let _ = conn.close(200, "done".into()).await;
    }
    let _ = publisher.close(200, "done".into()).await;
    times.sort();
    Ok(times)
}

/// How a raw fan-out floor delivers.
#[derive(Clone, Copy, Debug)]
enum Floor {
    /// A transient message to N exclusive queues, no acks: the cheapest RabbitMQ offers.
    Transient,
    /// What Nebula asks of the broker: a persistent, confirmed message to N durable classic
    /// queues, each delivery acknowledged.
    Durable,
    /// A persistent, confirmed message appended once to one stream, read by N consumers
    /// (offset `next`, prefetch 8, each delivery acknowledged).
    Stream,
}

/// One raw floor: N consumers on their own connections, `rounds` publishes 3 s apart; per
/// round, the time until all N got it and the broker's CPU for it.
async fn raw_floor(
    n: usize,
    kind: Floor,
    rounds: usize,
) -> Result<Vec<(Duration, Duration)>, String> {
    let err = |e: lapin::Error| e.to_string();
    let name = unique("nebula.bench.floor.");
    let publisher = Connection::connect(&amqp(), ConnectionProperties::default())
        .await
        .map_err(err)?;
    let pch = publisher.create_channel().await.map_err(err)?;
    pch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .map_err(err)?;
    let mut stream_args = FieldTable::default();
    stream_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    stream_args.insert("x-max-age".into(), AMQPValue::LongString("1h".into()));
    match kind {
        Floor::Stream => {
            pch.queue_declare(
                name.clone().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                stream_args,
            )
            .await
            .map_err(err)?;
        }
        Floor::Transient | Floor::Durable => {
            pch.exchange_declare(
                name.clone().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(err)?;
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let consumers = futures::stream::iter(0..n)
        .map(|i| {
            let name = name.clone();
            let tx = tx.clone();
            async move {
                let conn = Connection::connect(&amqp(), ConnectionProperties::default()).await?;
                let ch = conn.create_channel().await?;
                ch.basic_qos(8, lapin::options::BasicQosOptions::default())
                    .await?;
                let mut consume_args = FieldTable::default();
                let queue = match kind {
                    Floor::Stream => {
                        consume_args.insert(
                            "x-stream-offset".into(),
                            AMQPValue::LongString("next".into()),
                        );
                        name.clone()
                    }
                    Floor::Transient | Floor::Durable => {
                        let durable = matches!(kind, Floor::Durable);
                        let mut args = FieldTable::default();
                        if durable {
                            args.insert("x-expires".into(), AMQPValue::LongLongInt(120_000));
                        }
                        let q = ch
                            .queue_declare(
                                if durable {
                                    format!("{name}.{i}").into()
                                } else {
                                    "".into()
                                },
                                QueueDeclareOptions {
                                    durable,
                                    exclusive: !durable,
                                    auto_delete: !durable,
                                    ..QueueDeclareOptions::default()
                                },
                                args,
                            )
                            .await?;
                        ch.queue_bind(
                            q.name().clone(),
                            name.clone().into(),
                            "".into(),
                            QueueBindOptions::default(),
                            FieldTable::default(),
                        )
                        .await?;
                        q.name().as_str().to_owned()
                    }
                };
                let no_ack = matches!(kind, Floor::Transient);
                let mut consumer = ch
                    .basic_consume(
                        queue.into(),
                        "".into(),
                        BasicConsumeOptions {
                            no_ack,
                            ..BasicConsumeOptions::default()
                        },
                        consume_args,
                    )
                    .await?;
                tokio::spawn(async move {
                    while let Some(Ok(d)) = consumer.next().await {
                        let _ = tx.send(Instant::now());
                        if !no_ack {
                            let _ = d.ack(lapin::options::BasicAckOptions::default()).await;
                        }
                    }
                });
                Ok::<_, lapin::Error>(conn)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    drop(tx);
    let mut conns = Vec::new();
    for c in consumers {
        conns.push(c.map_err(err)?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let body = vec![b'x'; 1000];
    let mut out = Vec::new();
    for _ in 0..rounds {
        let cpu0: Duration = broker_pids().iter().map(|p| cpu_time(p)).sum();
        let t0 = Instant::now();
        let (exchange, key) = match kind {
            Floor::Stream => (String::new(), name.clone()),
            Floor::Transient | Floor::Durable => (name.clone(), String::new()),
        };
        let persistent = !matches!(kind, Floor::Transient);
        let confirm = pch
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(if persistent { 2 } else { 1 }),
            )
            .await
            .map_err(err)?;
        let mut last = t0;
        for _ in 0..n {
            match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                Ok(Some(at)) => last = last.max(at),
                _ => return Err(format!("{kind:?}: not every consumer got the message")),
            }
        }
        let all = last.duration_since(t0);
        let _ = confirm.await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu: Duration = broker_pids().iter().map(|p| cpu_time(p)).sum();
        out.push((all, cpu.saturating_sub(cpu0)));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    for conn in conns {
        let _ = conn.close(200, "done".into()).await;
    }
    if matches!(kind, Floor::Stream) {
        let _ = pch
            .queue_delete(name.into(), lapin::options::QueueDeleteOptions::default())
            .await;
    }
    let _ = publisher.close(200, "done".into()).await;
    Ok(out)
}

/// `bench_fanout floors N...`: the broker alone, three ways, for each N.
async fn floors(sizes: &[usize]) {
    println!(
        "bench_fanout floors ({} binaries), broker on 127.0.0.1:{}, N = {sizes:?}",
        profile(),
        rabbit_port()
    );
    println!(
        "| N | delivery | all received, per round (ms) | broker CPU per round (ms) | broker CPU per host, later rounds (us) |"
    );
    println!("|---|---|---|---|---|");
    for &n in sizes {
        for kind in [Floor::Transient, Floor::Durable, Floor::Stream] {
            match raw_floor(n, kind, 3).await {
                Ok(rounds) => {
                    let times: Vec<String> = rounds.iter().map(|r| ms(r.0)).collect();
                    let cpus: Vec<String> = rounds.iter().map(|r| ms(r.1)).collect();
                    #[allow(clippy::cast_precision_loss)]
                    let later = rounds[1..].iter().map(|r| r.1.as_secs_f64()).sum::<f64>()
                        / (rounds.len() - 1) as f64
                        * 1e6
                        / n as f64;
                    println!(
                        "| {n} | {kind:?} | {} | {} | {later:.0} |",
                        times.join(" / "),
                        cpus.join(" / ")
                    );
                }
                Err(e) => println!("| {n} | {kind:?} | failed: {e} | | |"),
            }
        }
    }
}

struct Row {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    t: Duration,
    broker_p50: Duration,
    broker_max: Duration,
    /// CPU per round (median round by broker CPU).
    cpu: Cpu,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "memory") {
        memory().await;
        return;
    }
    if args.first().is_some_and(|a| a == "floors") {
        let sizes: Vec<usize> = args.iter().skip(1).filter_map(|a| a.parse().ok()).collect();
        floors(&sizes).await;
        std::process::exit(0);
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![10, 100, 1000, 5000]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    println!(
        "bench_fanout ({} binaries), broker on 127.0.0.1:{}, worker topology {}, N = {sizes:?}",
        profile(),
        rabbit_port(),
        topology()
    );
    let dir = std::env::temp_dir().join(unique("nebula-fanout-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let manager = start(
        "nebula-api-manager",
        &[
            "--bind",
            &bind,
            "--data-dir",
            dir.join("data").to_str().expect("utf-8"),
        ],
        &[
            ("BASIC_AUTH_USER", "admin"),
            ("BASIC_AUTH_PASSWORD", "pw"),
            ("RABBIT_HOST", "127.0.0.1"),
            ("RABBIT_PORT", &rabbit_port().to_string()),
            ("RUST_LOG", "warn"),
        ],
        &dir.join("manager.log"),
    );
    let api = Api::new(port, "admin", "pw");
    api.wait_ready().await;
    let app_name = unique("fanout");
    let app = AppName::parse(&app_name).expect("app name");
    let spec = json!({"starting_ports": [], "containers_per": {"server": 1},
        "env_vars": {"MESSAGE": "0"}, "docker_image": IMAGE, "running": true,
        "networks": ["nebula"], "volumes": [], "devices": [], "privileged": false});
    let (code, body) = api
        .call("POST", &format!("/api/apps/{app_name}"), Some(spec))
        .await;
    assert_eq!(code, 202, "{body}");
    let (_, body) = api
        .call("GET", &format!("/api/apps/{app_name}"), None)
        .await;
    let mut app_id = body["app_id"].as_u64().expect("app_id");
    let uri = format!("http://127.0.0.1:{port}");
    let run = unique("bench");
    let mut hosts: Vec<Host> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut round = 0u64;
    for &n in &sizes {
        // The broker's own fan-out for this N, before the workers grow to N.
        let broker = match broker_fanout(n).await {
            Ok(t) if t.len() == n => t,
            Ok(t) => {
                println!(
                    "STOP at N = {n}: only {} of {n} raw consumers got the message",
                    t.len()
                );
                break;
            }
            Err(e) => {
                println!("STOP at N = {n}: the broker cannot hold {n} raw consumers: {e}");
                break;
            }
        };
        let grow = Instant::now();
        let added = futures::stream::iter(hosts.len()..n)
            .map(|i| spawn_host(&run, i, &app, &uri))
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let mut failed = None;
        for h in added {
            match h {
                Ok(h) => hosts.push(h),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            println!(
                "STOP at N = {n}: only {} workers connected: {e}",
                hosts.len()
            );
            break;
        }
        let shared = Arc::new(std::mem::take(&mut hosts));
        let synced = until_all(
            &shared,
            app_id.to_string(),
            Instant::now(),
            Duration::from_secs(300),
        )
        .await;
        if synced.len() < n {
            println!(
                "STOP at N = {n}: only {} of {n} workers synced at start",
                synced.len()
            );
            break;
        }
        // Let every worker bind its queue after its first sync.
        tokio::time::sleep(Duration::from_secs(2) + Duration::from_millis(n as u64)).await;
        println!(
            "N = {n}: {n} workers up and synced in {:?}; this process (hosts) holds {:.0} MiB RSS",
            grow.elapsed(),
            rss_kib(std::process::id()) as f64 / 1024.0
        );
        tokio::time::sleep(pause()).await;
        let mut all = Vec::new();
        let mut totals = Vec::new();
        let mut cpus: Vec<Cpu> = Vec::new();
        for _ in 0..ROUNDS {
            round += 1;
            let cpu0 = Cpu::now(manager.0.id());
            let t0 = Instant::now();
            let (code, body) = api
                .call(
                    "PUT",
                    &format!("/api/apps/{app_name}/update"),
                    Some(json!({"env_vars": {"MESSAGE": round.to_string()}})),
                )
                .await;
            assert_eq!(code, 202, "{body}");
            app_id += 1;
            let mut times =
                until_all(&shared, app_id.to_string(), t0, Duration::from_secs(120)).await;
            times.sort();
            let max = times.last().copied().unwrap_or_default();
            println!(
                "  round: {}/{n} applied, p50 {} ms, max {} ms",
                times.len(),
                ms(percentile(&times, 0.5)),
                ms(max)
            );
            if times.len() < n {
                println!("STOP: not every worker applied the change in 120 s");
                print_table(&rows);
                drop(manager);
                std::process::exit(1);
            }
            totals.push(max);
            all.extend(times);
            // Let the acks and the confirm's disk writes finish before reading the CPU.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let cpu = Cpu::now(manager.0.id()).since(cpu0);
            // Changes of a real fleet come minutes apart: the broker's idle queue processes
            // hibernate after a few seconds, and waking them is part of the cost.
            tokio::time::sleep(pause()).await;
            println!(
                "  cpu: broker {} ms, hosts {} ms, manager {} ms",
                ms(cpu.broker),
                ms(cpu.hosts),
                ms(cpu.manager)
            );
            cpus.push(cpu);
        }
        all.sort();
        totals.sort();
        cpus.sort_by_key(|c| c.broker);
        rows.push(Row {
            cpu: cpus[cpus.len() / 2],
            n,
            p50: percentile(&all, 0.5),
            p99: percentile(&all, 0.99),
            max: all.last().copied().unwrap_or_default(),
            t: totals[totals.len() / 2],
            broker_p50: percentile(&broker, 0.5),
            broker_max: broker.last().copied().unwrap_or_default(),
        });
        hosts = Arc::try_unwrap(shared).unwrap_or_else(|_| panic!("hosts still shared"));
    }
    print_table(&rows);
    let _ = api
        .call("DELETE", &format!("/api/apps/{app_name}"), None)
        .await;
    let _ = std::fs::remove_dir_all(&dir);
    // exit() runs no destructors: stop the manager first. Workers run until the process ends
    // (their queues expire 60 s later).
    drop(manager);
    std::process::exit(0);
}

fn print_table(rows: &[Row]) {
    let base = rows.first().map(|r| r.t);
    println!();
    println!(
        "| N | p50 (ms) | p99 (ms) | max (ms) | T(N) (ms) | T(N)/T(10) | broker p50 (ms) | broker all (ms) | T(N) / broker all |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let ratio = base.map_or(0.0, |b| r.t.as_secs_f64() / b.as_secs_f64().max(1e-9));
        let floor = r.t.as_secs_f64() / r.broker_max.as_secs_f64().max(1e-9);
        println!(
            "| {} | {} | {} | {} | {} | {ratio:.2} | {} | {} | {floor:.2} |",
            r.n,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            ms(r.t),
            ms(r.broker_p50),
            ms(r.broker_max)
        );
    }
    println!();
    println!(
        "CPU per change (median round): | N | broker (ms) | broker per host (us) | simulated hosts (ms) | per host (us) | API manager (ms) |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        #[allow(clippy::cast_precision_loss)]
        let per = |d: Duration| d.as_secs_f64() * 1e6 / r.n as f64;
        println!(
            "| {} | {} | {:.0} | {} | {:.0} | {} |",
            r.n,
            ms(r.cpu.broker),
            per(r.cpu.broker),
            ms(r.cpu.hosts),
            per(r.cpu.hosts),
            ms(r.cpu.manager)
        );
    }
}

/// RSS of an idle worker manager with 10 containers and of an idle API manager.
async fn memory() {
    let dir = std::env::temp_dir().join(unique("nebula-mem-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let manager = start(
        "nebula-api-manager",
        &[
            "--bind",
            &bind,
            "--data-dir",
            dir.join("data").to_str().expect("utf-8"),
        ],
        &[
            ("BASIC_AUTH_USER", "admin"),
            ("BASIC_AUTH_PASSWORD", "pw"),
            ("RABBIT_HOST", "127.0.0.1"),
        ],
        &dir.join("manager.log"),
    );
    let api = Api::new(port, "admin", "pw");
    api.wait_ready().await;
    let app = unique("mem");
    let spec = json!({"starting_ports": [], "containers_per": {"server": 10},
        "env_vars": {"MESSAGE": "mem"}, "docker_image": IMAGE, "running": true,
        "networks": ["nebula"], "volumes": [], "devices": [], "privileged": false});
    let (code, body) = api
        .call("POST", &format!("/api/apps/{app}"), Some(spec))
        .await;
    assert_eq!(code, 202, "{body}");
    let uri = format!("http://127.0.0.1:{port}");
    let worker = start(
        "nebula-worker-manager",
        &[],
        &[
            ("APP_NAME", app.as_str()),
            ("NEBULA_MANAGER_URI", &uri),
            ("NEBULA_MANAGER_AUTH_USER", "admin"),
            ("NEBULA_MANAGER_AUTH_PASSWORD", "pw"),
            ("NEBULA_STOP_GRACE", "1"),
            ("RABBIT_HOST", "127.0.0.1"),
            ("NEBULA_WORKER_ID", &unique("mem-")),
        ],
        &dir.join("worker.log"),
    );
    let running = || {
        Command::new("docker")
            .args(["ps", "-q", "--filter", &format!("label=app_name={app}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while running() < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let n = running();
    // Idle: past a few reconciles and a check-in.
    tokio::time::sleep(Duration::from_secs(40)).await;
    println!("bench_fanout memory ({} binaries)", profile());
    println!("| process | state | VmRSS (MiB) |");
    println!("|---|---|---|");
    println!(
        "| nebula-worker-manager | idle, {n} containers running, on RabbitMQ | {:.1} |",
        rss_kib(worker.0.id()) as f64 / 1024.0
    );
    println!(
        "| nebula-api-manager | idle, embedded store, on RabbitMQ, 1 app | {:.1} |",
        rss_kib(manager.0.id()) as f64 / 1024.0
    );
    let _ = api.call("DELETE", &format!("/api/apps/{app}"), None).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while running() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(worker);
    drop(manager);
    let _ = std::fs::remove_dir_all(&dir);
}
