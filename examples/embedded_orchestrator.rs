//! A custom orchestrator embedding nebula-core: the manager and one worker in one process, with
//! nothing else running (no Docker engine, no database, no broker).
//!
//! Run with: cargo run -p nebula-examples --example embedded_orchestrator
//! (set `RUST_LOG=info` to also see what nebula-core logs)
//!
//! nebula-core decides; three traits do the I/O: a `Store` keeps the app documents, a `Bus`
//! pushes every change to the workers, a `Runtime` runs the containers. Here they are the
//! in-memory `InMemoryStore`, `InProcessBus` and `FakeRuntime` (a 4-CPU host whose "registry"
//! holds the image) from `nebula_core::testing` (feature `testing`). A real orchestrator passes
//! real implementations instead: `nebula standalone` is exactly this wiring with
//! `nebula_redb::RedbStore` and `nebula_docker::DockerRuntime`, and `Worker::run` as the loop.
//!
//! `Worker::run` syncs at start and every check-in, follows the bus, and reconciles after every
//! change and on a timer. This example drives the same worker by hand instead, one step at a
//! time, to print what each step does:
//!
//! 1. the worker syncs (nothing yet) and an app is created: 2 containers (0.5 per CPU x 4 CPUs)
//!    on host ports 8000 and 8001;
//! 2. a container removed behind Nebula's back comes back at the next reconcile;
//! 3. an env var is changed with `patch_app`: both containers are replaced, because the
//!    environment is part of the container spec (its hash changes);
//! 4. a change outside the container spec (the rollout policy) replaces nothing;
//! 5. `restart_app(.., rolling = true)` (v1 `/roll`) replaces one container per wave, the next
//!    wave waiting until the new container has run for `min_healthy_seconds` (2 s here);
//! 6. the app is stopped (its containers go) and deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nebula_core::bus::{Bus, BusMessage, InProcessBus, Subscription, Topic};
use nebula_core::container::{LABEL_APP_ID, LABEL_SPEC_HASH};
use nebula_core::manager::{AppPatch, Manager};
use nebula_core::model::{AppName, AppSpec, ContainersPer, RolloutPolicy, StartingPort};
use nebula_core::testing::{Call, FakeRuntime, InMemoryStore};
use nebula_core::worker::{Outcome, Worker, WorkerConfig};

/// The image the fake host's registry offers.
const IMAGE: &str = "registry.example.com/acme/site:1.0";

/// One host: its worker, its (fake) engine and the worker's bus subscription.
struct Host {
    worker: Worker,
    runtime: FakeRuntime,
    bus: Subscription,
}

impl Host {
    /// One reconcile, printed: what the worker asked of the engine and what it plans next.
    async fn reconcile(&mut self, step: &str) -> Outcome {
        // The fake engine stamps new containers with its own clock; keep it on the real one so
        // the rollout's min-healthy gate measures real time.
        self.runtime.set_now(unix_now());
        self.runtime.clear_calls();
        let outcome = self.worker.reconcile().await;
        let calls: Vec<String> = self.runtime.calls().iter().map(describe).collect();
        let calls = if calls.is_empty() {
            "nothing to do".to_owned()
        } else {
            calls.join(", ")
        };
        println!("  [{step}] {calls}");
        if let Some(after) = outcome.requeue_after {
            println!("  [{step}] plan again in {after:?}");
        }
        for error in &outcome.errors {
            println!("  [{step}] error: {error}");
        }
        outcome
    }

    /// What `Worker::run` does with each bus message: apply it, reconcile, then acknowledge.
    async fn on_bus_message(&mut self) -> Outcome {
        let delivery = tokio::time::timeout(Duration::from_secs(1), self.bus.next())
            .await
            .expect("every manager command publishes a message")
            .expect("the bus is open");
        let what = match &delivery.message {
            BusMessage::AppChanged { app, .. } => {
                format!("app {} changed, app_id {}", app.app_name, app.app_id)
            }
            BusMessage::AppDeleted { app_name, .. } => format!("app {app_name} deleted"),
            BusMessage::DeviceGroupChanged { device_group, info } => format!(
                "device group {device_group} changed, device_group_id {}",
                info.device_group_id
            ),
            BusMessage::DeviceGroupDeleted { device_group, .. } => {
                format!("device group {device_group} deleted")
            }
        };
        let taken = self.worker.apply(delivery.message.clone());
        println!(
            "  [bus] {what} -> {}",
            if taken {
                "applied"
            } else {
                "ignored: not newer than what is held"
            }
        );
        let outcome = self.reconcile("reconcile").await;
        delivery.ack().await.expect("ack");
        outcome
    }

    /// The containers on the host, by name.
    fn show_containers(&self) {
        let containers = self.runtime.containers();
        if containers.is_empty() {
            println!("  (no containers)");
        }
        for c in containers.values() {
            let hash: String = c
                .label(LABEL_SPEC_HASH)
                .unwrap_or("")
                .chars()
                .take(8)
                .collect();
            println!(
                "  {:<7} id {}  {:?}  host port {}  spec {hash}  app_id {}",
                c.name,
                c.id,
                c.state,
                c.label("fake.ports").unwrap_or("-"),
                c.label(LABEL_APP_ID).unwrap_or("-"),
            );
        }
    }

    fn ids(&self) -> BTreeSet<String> {
        self.runtime
            .containers()
            .values()
            .map(|c| c.id.to_string())
            .collect()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn describe(call: &Call) -> String {
    match call {
        Call::Create(name) => format!("create {name}"),
        Call::Start(name) => format!("start {name}"),
        Call::Restart(name) => format!("restart {name}"),
        Call::Remove(name) => format!("remove {name}"),
        Call::Pull(image) => format!("pull {image}"),
        Call::Prune => "prune images".to_owned(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();

    // The wiring: a manager over a store and a bus; a worker over a runtime, reading the
    // desired state from the manager itself (a remote worker reads it over HTTP instead, with
    // `nebula_http::HttpSource`).
    let bus = InProcessBus::new();
    let bus_dyn: Arc<dyn Bus> = Arc::new(bus.clone());
    let manager = Manager::new(Arc::new(InMemoryStore::new()), Some(bus_dyn.clone()));
    let runtime = FakeRuntime::new(4, &[IMAGE]);
    // `Worker::run` subscribes to the bus it is given; driving the worker by hand, this example
    // subscribes itself and hands each message to the worker.
    let worker = Worker::new(
        Arc::new(runtime.clone()),
        Arc::new(manager.clone()),
        Some(bus_dyn),
        WorkerConfig::default(),
    );
    let subscription = bus.subscribe(&[Topic::AllApps]).await.expect("subscribe");
    let mut host = Host {
        worker,
        runtime,
        bus: subscription,
    };
    let site = AppName::parse("site").expect("a valid app name");

    println!("== 1. the worker starts and syncs; then the app \"site\" is created");
    let changed = host.worker.sync().await.expect("the manager answers");
    println!(
        "  [sync] {} apps, changed: {changed}",
        host.worker.desired().len()
    );
    host.reconcile("reconcile").await;
    let mut spec = AppSpec::with_image(IMAGE);
    spec.starting_ports = vec![StartingPort::Mapped {
        host: 8000,
        container: 80,
    }];
    spec.containers_per = ContainersPer::Cpu(0.5);
    spec.env_vars = BTreeMap::from([("MESSAGE".to_owned(), "hello".to_owned())]);
    let app = manager
        .create_app(site.clone(), spec)
        .await
        .expect("create");
    println!(
        "  [manager] created {} (app_id {}): ports {{\"8000\": \"80\"}}, 0.5 containers per CPU",
        app.app_name, app.app_id
    );
    host.on_bus_message().await;
    host.show_containers();
    assert_eq!(host.runtime.containers().len(), 2, "0.5 per CPU on 4 CPUs");

    println!("\n== 2. site-2 is removed behind Nebula's back");
    host.runtime.remove_by_hand("site-2");
    host.reconcile("reconcile").await;
    host.show_containers();
    assert_eq!(host.runtime.containers().len(), 2);

    println!("\n== 3. patch_app changes MESSAGE: the env is part of the container spec");
    let before = host.ids();
    let env = BTreeMap::from([("MESSAGE".to_owned(), "hello again".to_owned())]);
    let app = manager
        .patch_app(
            &site,
            AppPatch {
                env_vars: Some(env),
                ..AppPatch::default()
            },
        )
        .await
        .expect("patch");
    println!("  [manager] patched env_vars (app_id {})", app.app_id);
    host.on_bus_message().await;
    host.show_containers();
    assert!(host.ids().is_disjoint(&before), "every container replaced");
    println!(
        "  -> both containers replaced at once (rolling_restart is off), the image pulled first"
    );

    println!("\n== 4. patch_app changes only the rollout policy: no container spec changes");
    let before = host.ids();
    let rollout = RolloutPolicy {
        wave_size: 1,
        min_healthy_seconds: 2,
    };
    let app = manager
        .patch_app(
            &site,
            AppPatch {
                rollout: Some(rollout),
                ..AppPatch::default()
            },
        )
        .await
        .expect("patch");
    println!(
        "  [manager] patched rollout to {rollout:?} (app_id {})",
        app.app_id
    );
    host.on_bus_message().await;
    assert_eq!(host.ids(), before, "nothing replaced");
    println!("  -> nothing replaced: the spec hashes still match");

    println!("\n== 5. restart_app(rolling = true): one container per wave, each wave health-gated");
    let before = host.ids();
    let app = manager.restart_app(&site, true).await.expect("restart");
    println!(
        "  [manager] rolling restart (app_id {}, restart_generation {})",
        app.app_id, app.restart_generation
    );
    // Wave 1: the message is applied and the first container replaced (the image pulled first).
    host.on_bus_message().await;
    host.show_containers();
    // Planning again right away changes nothing: the new site-1 has not yet run for
    // min_healthy_seconds, so the next wave waits.
    let mut outcome = host.reconcile("right away").await;
    assert_eq!(outcome.done, 0, "the health gate holds the next wave");
    // Plan again when the planner asks (what `Worker::run` does), until nothing is left to do.
    for _ in 0..10 {
        if outcome.done == 0 && outcome.requeue_after.is_none() {
            break;
        }
        let step = match outcome.requeue_after {
            Some(after) => {
                tokio::time::sleep(after).await;
                format!("{after:?} later")
            }
            None => "again".to_owned(),
        };
        outcome = host.reconcile(&step).await;
        if outcome.done > 0 {
            host.show_containers();
        }
    }
    assert!(host.ids().is_disjoint(&before), "every container replaced");
    println!("  -> rolled: every container replaced, one per wave");

    println!("\n== 6. stop, then delete");
    let app = manager.stop_app(&site).await.expect("stop");
    println!(
        "  [manager] stopped (app_id {}, running {})",
        app.app_id, app.spec.running
    );
    host.on_bus_message().await;
    host.show_containers();
    manager.delete_app(&site).await.expect("delete");
    println!("  [manager] deleted");
    host.on_bus_message().await;
    let changed = host.worker.sync().await.expect("the manager answers");
    println!(
        "  [sync] apps: {:?}, changed: {changed}",
        manager.list_apps().await.expect("list")
    );
    assert!(host.runtime.containers().is_empty());
}
