use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::device_group::{DeviceGroupName, Members};
use crate::manager::Manager;
use crate::model::{App, AppName, AppSpec, ContainersPer, StartingPort};
use crate::report::{AppStatus, DiskUsage, MemoryUsage};
use crate::testing::{FakeRuntime, InMemoryStore};
use crate::worker::WorkerConfig;

const IMAGE: &str = "site:latest";

/// Records what it is sent; fails or hangs on demand.
#[derive(Default)]
struct Sink {
    sent: Mutex<Vec<WorkerReport>>,
    fail: Mutex<bool>,
    hang: Mutex<bool>,
}

#[async_trait]
impl ReportSink for Sink {
    async fn send(&self, report: &WorkerReport) -> Result<(), SourceError> {
        if *self.hang.lock().unwrap() {
            std::future::pending::<()>().await;
        }
        if *self.fail.lock().unwrap() {
            return Err(SourceError::Unavailable("down".into()));
        }
        self.sent.lock().unwrap().push(report.clone());
        Ok(())
    }
}

impl Sink {
    fn sent(&self) -> Vec<WorkerReport> {
        self.sent.lock().unwrap().clone()
    }
}

const USAGE: HostUsage = HostUsage {
    memory: Some(MemoryUsage {
        total: 8192,
        used: 2048,
        free: 1024,
        available: 6144,
    }),
    root_disk: Some(DiskUsage {
        total: 100,
        used: 40,
        free: 60,
    }),
    cpu_used_percent: Some(12.5),
};

struct Rig {
    manager: Manager,
    rt: FakeRuntime,
    sink: Arc<Sink>,
}

impl Rig {
    fn new() -> Self {
        Self {
            manager: Manager::new(Arc::new(InMemoryStore::new()), None),
            rt: FakeRuntime::new(2, &[IMAGE]),
            sink: Arc::new(Sink::default()),
        }
    }

    async fn create(&self, name: &str, port: u16, servers: u32) -> App {
        let mut spec = AppSpec::with_image("site");
        spec.containers_per = ContainersPer::Server(servers);
        spec.starting_ports = vec![StartingPort::Mapped {
            host: port,
            container: 80,
        }];
        self.manager
            .create_app(AppName::parse(name).unwrap(), spec)
            .await
            .unwrap()
    }

    fn worker(&self, selection: Selection, on_update_only: bool) -> Worker {
        let config = WorkerConfig {
            selection,
            ..WorkerConfig::default()
        };
        Worker::new(
            Arc::new(self.rt.clone()),
            Arc::new(self.manager.clone()),
            None,
            config,
        )
        .with_reporter(Reporter::new(
            self.sink.clone(),
            Arc::new(USAGE),
            ReportConfig {
                hostname: "host-1".into(),
                on_update_only,
                timeout: Duration::from_secs(5),
            },
        ))
    }
}

fn group(name: &str) -> DeviceGroupName {
    DeviceGroupName::parse(name).unwrap()
}

fn members(apps: &[&str]) -> Members {
    Members {
        apps: apps.iter().map(|a| AppName::parse(a).unwrap()).collect(),
        cron_jobs: Vec::new(),
    }
}

#[tokio::test]
async fn a_device_group_report_tells_versions_containers_and_convergence() {
    let rig = Rig::new();
    let a = rig.create("a", 8000, 2).await;
    let b = rig.create("b", 8100, 1).await;
    rig.create("other", 8200, 1).await;
    rig.manager
        .create_device_group(group("edge"), members(&["a", "b"]))
        .await
        .unwrap();
    let mut w = rig.worker(Selection::DeviceGroup(group("edge")), false);
    w.sync().await.unwrap();

    // Synced but not reconciled yet: nothing converged.
    let before = w.build_report("host-1", USAGE, 77).await.unwrap();
    assert!(before.apps_containers.is_empty());
    assert_eq!(
        before.apps_status["a"],
        AppStatus {
            app_id: 1,
            incarnation: a.incarnation,
            running: true,
            desired_containers: 2,
            running_containers: 0,
            converged: false,
            pull_fallback: None,
            fleet_rollout: None,
        }
    );

    w.reconcile().await;
    let r = w.build_report("host-1", USAGE, 78).await.unwrap();
    assert_eq!(r.hostname, "host-1");
    assert_eq!(r.report_creation_time, 78);
    assert_eq!(r.device_group.as_deref(), Some("edge"));
    assert_eq!(r.app_names, None);
    assert_eq!(r.memory_usage, USAGE.memory);
    assert_eq!(r.root_disk_usage, USAGE.root_disk);
    assert_eq!(
        (r.cpu_usage.cores, r.cpu_usage.used_percent),
        (2, Some(12.5))
    );
    let names: Vec<&str> = r.apps_containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a-1", "a-2", "b-1"]);
    let a1 = &r.apps_containers[0];
    assert_eq!(
        (a1.state.as_str(), a1.health.as_str(), a1.image.as_deref()),
        ("running", "none", Some(IMAGE))
    );
    assert_eq!((a1.app_name.as_deref(), a1.app_id), (Some("a"), Some(1)));
    assert!(r.apps_status.values().all(|s| s.converged));
    assert_eq!(r.apps_status["b"].incarnation, b.incarnation);
    let cfg = &r.current_device_group_config;
    assert_eq!(cfg.apps_list, ["a", "b"]);
    assert_eq!(cfg.apps["a"].app_id, 1);
    assert_eq!((cfg.device_group_id, cfg.prune_id), (Some(1), Some(1)));
    assert!(cfg.incarnation.is_some());

    // A container killed behind the worker's back: no longer converged, image still known.
    rig.rt.set_state(
        "a-2",
        crate::container::ContainerState::Exited,
        crate::container::Health::None,
    );
    let r = w.build_report("host-1", USAGE, 79).await.unwrap();
    assert!(!r.apps_status["a"].converged);
    assert_eq!(r.apps_status["a"].running_containers, 1);
    assert_eq!(r.apps_containers[1].state, "exited");

    // A new version the host has not applied yet: the old containers' image is unknown.
    let mut spec = AppSpec::with_image("site:v2");
    spec.starting_ports = vec![StartingPort::Mapped {
        host: 8000,
        container: 80,
    }];
    rig.manager
        .update_app(&AppName::parse("a").unwrap(), spec)
        .await
        .unwrap();
    w.sync().await.unwrap();
    let r = w.build_report("host-1", USAGE, 80).await.unwrap();
    assert_eq!(r.current_device_group_config.apps["a"].app_id, 2);
    assert_eq!(r.apps_status["a"].app_id, 2);
    assert!(!r.apps_status["a"].converged);
    assert_eq!(r.apps_containers[0].image, None);
    assert_eq!(r.apps_containers[0].app_id, Some(1));
}

#[tokio::test]
async fn an_app_name_worker_reports_only_its_apps() {
    let rig = Rig::new();
    rig.create("a", 8000, 1).await;
    rig.create("other", 8200, 1).await;
    let mut all = rig.worker(Selection::All, false);
    all.sync().await.unwrap();
    all.reconcile().await;
    let mut w = rig.worker(Selection::Apps(vec![AppName::parse("a").unwrap()]), false);
    w.sync().await.unwrap();
    let r = w
        .build_report("host-1", HostUsage::default(), 1)
        .await
        .unwrap();
    assert_eq!(r.device_group, None);
    assert_eq!(r.app_names, Some(vec!["a".to_owned()]));
    let names: Vec<&str> = r.apps_containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a-1"]);
    assert_eq!(r.apps_status.keys().collect::<Vec<_>>(), ["a"]);
    assert!(r.apps_status["a"].converged);
    assert_eq!(r.current_device_group_config.device_group_id, None);
    assert_eq!((r.memory_usage, r.cpu_usage.used_percent), (None, None));
}

#[tokio::test]
async fn updated_says_whether_anything_changed_since_the_last_accepted_report() {
    let rig = Rig::new();
    rig.create("a", 8000, 1).await;
    let mut w = rig.worker(Selection::All, false);
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(w.report().await, ReportOutcome::Sent { updated: true });
    assert_eq!(w.report().await, ReportOutcome::Sent { updated: false });
    rig.manager
        .stop_app(&AppName::parse("a").unwrap())
        .await
        .unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    *rig.sink.fail.lock().unwrap() = true;
    assert_eq!(w.report().await, ReportOutcome::Failed);
    *rig.sink.fail.lock().unwrap() = false;
    assert_eq!(
        w.report().await,
        ReportOutcome::Sent { updated: true },
        "the change was never accepted"
    );
    let sent = rig.sink.sent();
    assert_eq!(
        sent.iter().map(|r| r.updated).collect::<Vec<_>>(),
        [true, false, true]
    );
    assert!(sent[2].apps_containers.is_empty());
}

#[tokio::test]
async fn on_update_only_sends_only_changes() {
    let rig = Rig::new();
    rig.create("a", 8000, 1).await;
    let mut w = rig.worker(Selection::All, true);
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(w.report().await, ReportOutcome::Sent { updated: true });
    assert_eq!(w.report().await, ReportOutcome::Unchanged);
    rig.rt.remove_by_hand("a-1");
    assert_eq!(w.report().await, ReportOutcome::Sent { updated: true });
    assert_eq!(rig.sink.sent().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_manager_delays_the_worker_by_the_timeout_only() {
    let rig = Rig::new();
    let mut w = rig.worker(Selection::All, false);
    w.sync().await.unwrap();
    *rig.sink.hang.lock().unwrap() = true;
    let start = tokio::time::Instant::now();
    assert_eq!(w.report().await, ReportOutcome::Failed);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(
        Worker::new(
            Arc::new(rig.rt.clone()),
            Arc::new(rig.manager.clone()),
            None,
            WorkerConfig::default(),
        )
        .report()
        .await,
        ReportOutcome::Off
    );
}

#[tokio::test(start_paused = true)]
async fn the_run_loop_reports_at_every_check_in() {
    let rig = Rig::new();
    rig.create("a", 8000, 1).await;
    let w = rig.worker(Selection::All, false);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(w.run(async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let sent = rig.sink.sent();
    assert_eq!(sent.len(), 1, "a report after the first check-in");
    assert_eq!(sent[0].apps_containers.len(), 1);
    assert!(sent[0].apps_status["a"].converged);
    // Reconciles between check-ins (every 10 s) send nothing.
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(rig.sink.sent().len(), 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let sent = rig.sink.sent();
    assert_eq!(sent.len(), 2);
    assert!(!sent[1].updated);
    stop_tx.send(()).unwrap();
    handle.await.unwrap();
}

/// A report bus that takes reports, refuses them, or never confirms them, as told.
#[derive(Default)]
struct SwitchBus {
    bus: crate::bus::InProcessBus,
    mode: Mutex<BusMode>,
}

#[derive(Clone, Copy, Default)]
enum BusMode {
    #[default]
    Up,
    Down,
    Hung,
}

#[async_trait]
impl ReportBus for SwitchBus {
    async fn publish_report(&self, report: &WorkerReport) -> Result<(), crate::bus::BusError> {
        let mode = *self.mode.lock().unwrap();
        match mode {
            BusMode::Up => self.bus.publish_report(report).await,
            BusMode::Down => Err(crate::bus::BusError::Unavailable("broker down".into())),
            BusMode::Hung => std::future::pending().await,
        }
    }

    async fn subscribe_reports(
        &self,
    ) -> Result<crate::bus::Subscription<WorkerReport>, crate::bus::BusError> {
        self.bus.subscribe_reports().await
    }
}

#[tokio::test(start_paused = true)]
async fn reports_go_over_the_bus_and_over_http_when_the_bus_does_not_take_them() {
    let rig = Rig::new();
    rig.create("a", 8000, 1).await;
    let bus = Arc::new(SwitchBus::default());
    let http = Arc::new(Sink::default());
    let mut w = Worker::new(
        Arc::new(rig.rt.clone()),
        Arc::new(rig.manager.clone()),
        None,
        WorkerConfig::default(),
    )
    .with_reporter(Reporter::new(
        Arc::new(BusReportSink::new(
            bus.clone(),
            http.clone(),
            Duration::from_secs(2),
        )),
        Arc::new(USAGE),
        ReportConfig {
            hostname: "host-1".into(),
            on_update_only: false,
            timeout: Duration::from_secs(5),
        },
    ));
    w.sync().await.unwrap();
    w.reconcile().await;

    assert_eq!(w.report().await, ReportOutcome::Sent { updated: true });
    assert_eq!(bus.bus.report_backlog(), 1, "published on the bus");
    assert!(http.sent().is_empty(), "not over HTTP");

    *bus.mode.lock().unwrap() = BusMode::Down;
    assert_eq!(w.report().await, ReportOutcome::Sent { updated: false });
    assert_eq!(http.sent().len(), 1, "a refused publish goes over HTTP");

    *bus.mode.lock().unwrap() = BusMode::Hung;
    let start = tokio::time::Instant::now();
    assert_eq!(w.report().await, ReportOutcome::Sent { updated: false });
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "an unconfirmed publish goes over HTTP after the bus timeout"
    );
    assert_eq!(http.sent().len(), 2);

    *http.fail.lock().unwrap() = true;
    assert_eq!(w.report().await, ReportOutcome::Failed, "both ways down");

    *bus.mode.lock().unwrap() = BusMode::Up;
    assert_eq!(w.report().await, ReportOutcome::Sent { updated: false });
    assert_eq!(bus.bus.report_backlog(), 2, "back on the bus");
    assert_eq!(http.sent().len(), 2);

    // A manager taking reports from the bus stores both, whole.
    let manager = rig.manager.clone();
    let consumer = tokio::spawn({
        let bus = bus.clone();
        async move { manager.consume_reports(bus, std::future::pending()).await }
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while bus.bus.report_backlog() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the manager takes the reports");
    let stored = rig
        .manager
        .list_reports(
            &crate::report::ReportQuery::default(),
            u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos(),
            )
            .unwrap(),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(stored.data.len(), 2);
    assert!(
        stored
            .data
            .iter()
            .all(|(_, s)| s.report.hostname == "host-1" && s.report.apps_status["a"].converged)
    );
    consumer.abort();
}
