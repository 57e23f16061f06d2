use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::bus::InProcessBus;
use crate::container::{ContainerState, Health};
use crate::manager::{AppPatch, Manager};
use crate::model::{AppSpec, ContainersPer, StartingPort};
use crate::testing::{Call, FakeRuntime, InMemoryStore};

const IMAGE: &str = "site:latest";

struct Rig {
    manager: Manager,
    bus: InProcessBus,
    rt: FakeRuntime,
}

impl Rig {
    fn new() -> Self {
        let bus = InProcessBus::new();
        let manager = Manager::new(Arc::new(InMemoryStore::new()), Some(Arc::new(bus.clone())));
        Self {
            manager,
            bus,
            rt: FakeRuntime::new(2, &[IMAGE, "site:v2"]),
        }
    }

    fn worker(&self, selection: Selection) -> Worker {
        let config = WorkerConfig {
            selection,
            ..WorkerConfig::default()
        };
        Worker::new(
            Arc::new(self.rt.clone()),
            Arc::new(self.manager.clone()),
            Some(Arc::new(self.bus.clone())),
            config,
        )
    }

    async fn create(&self, name: &str, per_cpu: f64) -> App {
        let mut spec = AppSpec::with_image("site");
        spec.containers_per = ContainersPer::Cpu(per_cpu);
        let host = if name == "other" { 9000 } else { 8000 };
        spec.starting_ports = vec![StartingPort::Mapped {
            host,
            container: 80,
        }];
        self.manager
            .create_app(AppName::parse(name).unwrap(), spec)
            .await
            .unwrap()
    }

    fn names(&self) -> Vec<String> {
        self.rt.containers().into_keys().collect()
    }
}

fn app(name: &str) -> AppName {
    AppName::parse(name).unwrap()
}

#[tokio::test]
async fn first_sync_creates_the_containers_then_nothing_more() {
    let rig = Rig::new();
    rig.create("site", 1.5).await;
    let mut w = rig.worker(Selection::All);
    assert!(w.sync().await.unwrap());
    let out = w.reconcile().await;
    assert_eq!((out.done, out.errors.len()), (3, 0), "{out:?}");
    assert_eq!(rig.names(), ["site-1", "site-2", "site-3"]);
    assert_eq!(rig.rt.calls()[0], Call::Pull(IMAGE.into()));
    rig.rt.clear_calls();
    assert!(!w.sync().await.unwrap());
    assert_eq!(w.reconcile().await, Outcome::default());
    assert!(rig.rt.calls().is_empty());
}

#[tokio::test]
async fn a_restarted_worker_adopts_what_runs() {
    let rig = Rig::new();
    rig.create("site", 2.0).await;
    let mut first = rig.worker(Selection::All);
    first.sync().await.unwrap();
    first.reconcile().await;
    let before = rig.rt.containers();
    rig.rt.clear_calls();
    let mut second = rig.worker(Selection::All);
    assert_eq!(
        second.reconcile().await,
        Outcome::default(),
        "nothing happens before the first sync"
    );
    second.sync().await.unwrap();
    second.reconcile().await;
    assert!(rig.rt.calls().is_empty(), "{:?}", rig.rt.calls());
    assert_eq!(rig.rt.containers(), before);
}

#[tokio::test]
async fn drift_is_corrected_without_a_pull() {
    let rig = Rig::new();
    rig.create("site", 1.0).await;
    let mut w = rig.worker(Selection::All);
    w.sync().await.unwrap();
    w.reconcile().await;
    rig.rt.clear_calls();
    rig.rt.remove_by_hand("site-2");
    rig.rt
        .set_state("site-1", ContainerState::Exited, Health::None);
    w.reconcile().await;
    assert_eq!(rig.names(), ["site-1", "site-2"]);
    let calls = rig.rt.calls();
    assert!(
        calls.contains(&Call::Create("site-2".into()))
            && calls.contains(&Call::Start("site-1".into()))
    );
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Pull(_))),
        "{calls:?}"
    );
}

#[tokio::test]
async fn unhealthy_containers_are_restarted() {
    let rig = Rig::new();
    rig.create("site", 1.0).await;
    let mut w = rig.worker(Selection::All);
    w.sync().await.unwrap();
    w.reconcile().await;
    rig.rt.clear_calls();
    rig.rt
        .set_state("site-2", ContainerState::Running, Health::Unhealthy);
    w.reconcile().await;
    assert_eq!(rig.rt.calls(), [Call::Restart("site-2".into())]);
}

#[tokio::test]
async fn stop_start_restart_update_delete() {
    let rig = Rig::new();
    rig.create("site", 1.0).await;
    let mut w = rig.worker(Selection::All);
    w.sync().await.unwrap();
    w.reconcile().await;
    let name = app("site");

    rig.manager.stop_app(&name).await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    assert!(rig.names().is_empty());

    rig.manager.start_app(&name).await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(rig.names().len(), 2);

    let ids: Vec<_> = rig.rt.containers().values().map(|c| c.id.clone()).collect();
    rig.rt.clear_calls();
    rig.manager.restart_app(&name, false).await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    let calls = rig.rt.calls();
    assert_eq!(
        calls[0],
        Call::Pull(IMAGE.into()),
        "restart pulls first: {calls:?}"
    );
    assert!(
        rig.rt.containers().values().all(|c| !ids.contains(&c.id)),
        "every container replaced"
    );

    let patch = AppPatch {
        docker_image: Some("site:v2".into()),
        ..AppPatch::default()
    };
    rig.manager.patch_app(&name, patch).await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    assert!(
        rig.rt
            .containers()
            .values()
            .all(|c| c.label("fake.image") == Some("site:v2"))
    );

    rig.manager.delete_app(&name).await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    assert!(rig.names().is_empty());
}

#[tokio::test]
async fn a_failed_pull_touches_nothing() {
    let rig = Rig::new();
    rig.create("site", 1.0).await;
    let mut w = rig.worker(Selection::All);
    w.sync().await.unwrap();
    w.reconcile().await;
    let before = rig.rt.containers();
    rig.manager.restart_app(&app("site"), false).await.unwrap();
    w.sync().await.unwrap();
    rig.rt
        .fail_next("pull", RuntimeError::Unavailable("registry down".into()));
    let out = w.reconcile().await;
    assert_eq!(out.errors.len(), 1, "{out:?}");
    assert_eq!(rig.rt.containers(), before);
}

#[tokio::test]
async fn stale_messages_are_ignored_and_recreated_apps_are_not() {
    let rig = Rig::new();
    let v1 = rig.create("site", 1.0).await;
    let mut w = rig.worker(Selection::All);
    w.sync().await.unwrap();
    let v2 = rig.manager.stop_app(&app("site")).await.unwrap();
    assert!(w.apply(BusMessage::AppChanged { app: v2.clone() }));
    assert!(
        !w.apply(BusMessage::AppChanged { app: v1.clone() }),
        "older version ignored"
    );
    assert!(w.apply(BusMessage::AppDeleted {
        app_name: app("site"),
        incarnation: v1.incarnation
    }));
    assert!(
        !w.apply(BusMessage::AppChanged { app: v2 }),
        "a late change of a deleted app is ignored"
    );
    rig.manager.delete_app(&app("site")).await.unwrap();
    let again = rig.create("site", 1.0).await;
    assert_eq!(again.app_id, 1);
    assert!(
        w.apply(BusMessage::AppChanged { app: again }),
        "re-created app at app_id 1 is taken"
    );
}

#[tokio::test]
async fn a_worker_touches_only_its_selected_apps() {
    let rig = Rig::new();
    rig.create("mine", 1.0).await;
    let other = rig.create("other", 1.0).await;
    let mut theirs = rig.worker(Selection::Apps(vec![other.app_name.clone()]));
    theirs.sync().await.unwrap();
    theirs.reconcile().await;
    let mut w = rig.worker(Selection::Apps(vec![app("mine")]));
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(rig.names(), ["mine-1", "mine-2", "other-1", "other-2"]);
    rig.manager.delete_app(&app("mine")).await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(rig.names(), ["other-1", "other-2"]);
}

#[tokio::test]
async fn an_unreachable_manager_removes_nothing() {
    struct Down;
    #[async_trait]
    impl DesiredSource for Down {
        async fn fetch(&self, _: &Selection) -> Result<Vec<App>, SourceError> {
            Err(SourceError::Unavailable("down".into()))
        }
    }
    let rig = Rig::new();
    rig.create("site", 1.0).await;
    let mut w = rig.worker(Selection::All);
    w.sync().await.unwrap();
    w.reconcile().await;
    let mut blind = Worker::new(
        Arc::new(rig.rt.clone()),
        Arc::new(Down),
        None,
        WorkerConfig::default(),
    );
    assert!(blind.sync().await.is_err());
    blind.reconcile().await;
    assert_eq!(rig.names().len(), 2);
}

#[tokio::test]
async fn prune_runs_once_per_prune_request() {
    let rig = Rig::new();
    rig.create("site", 1.0).await;
    let mut w = rig.worker(Selection::All);
    w.sync().await.unwrap();
    w.reconcile().await;
    rig.manager.prune_app(&app("site")).await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    w.reconcile().await;
    assert_eq!(
        rig.rt.calls().iter().filter(|c| **c == Call::Prune).count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn run_loop_follows_the_bus_at_once_and_polls_without_it() {
    let rig = Rig::new();
    rig.create("site", 1.0).await;
    let w = rig.worker(Selection::All);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(w.run(async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(rig.names().len(), 2, "synced at start");
    rig.manager.stop_app(&app("site")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(rig.names().is_empty(), "a bus message is applied at once");

    // Without a bus, the change arrives at the next check-in (30 s).
    let config = WorkerConfig::default();
    let polling = Worker::new(
        Arc::new(rig.rt.clone()),
        Arc::new(rig.manager.clone()),
        None,
        config,
    );
    stop_tx.send(()).unwrap();
    handle.await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(polling.run(async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(10)).await;
    rig.manager.start_app(&app("site")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(rig.names().is_empty(), "not before the check-in");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.names().len(), 2, "picked up at check-in");

    rig.rt.remove_by_hand("site-1");
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(
        rig.names().len(),
        2,
        "drift corrected within the reconcile interval"
    );
    stop_tx.send(()).unwrap();
    handle.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn restart_wait_delays_replacement_only() {
    let rig = Rig::new();
    rig.create("site", 1.0).await;
    let config = WorkerConfig {
        max_restart_wait: Duration::from_secs(20),
        ..WorkerConfig::default()
    };
    let mut w = Worker::new(
        Arc::new(rig.rt.clone()),
        Arc::new(rig.manager.clone()),
        None,
        config,
    );
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(rig.names().len(), 2, "the first start does not wait");
    let ids: Vec<_> = rig.rt.containers().values().map(|c| c.id.clone()).collect();
    rig.manager.restart_app(&app("site"), false).await.unwrap();
    w.sync().await.unwrap();
    let mut waited = Duration::ZERO;
    loop {
        let out = w.reconcile().await;
        if rig.rt.containers().values().all(|c| !ids.contains(&c.id)) {
            break;
        }
        let step = out
            .requeue_after
            .expect("a held restart asks to be requeued");
        tokio::time::advance(step).await;
        waited += step;
        assert!(waited <= Duration::from_secs(20));
    }
}

#[tokio::test]
async fn standalone_owner_removes_only_its_own_orphans() {
    let rig = Rig::new();
    rig.create("other", 1.0).await;
    let mut other = rig.worker(Selection::All);
    other.config.owner = Some("other".into());
    other.sync().await.unwrap();
    other.reconcile().await;
    rig.manager.delete_app(&app("other")).await.unwrap();
    rig.create("site", 1.0).await;
    let mut mine = rig.worker(Selection::All);
    mine.config.owner = Some("mine".into());
    mine.sync().await.unwrap();
    mine.reconcile().await;
    assert_eq!(
        rig.names(),
        ["other-1", "other-2", "site-1", "site-2"],
        "another instance's containers stay"
    );
    assert_eq!(
        rig.rt.containers()["site-1"].label(LABEL_OWNER),
        Some("mine")
    );
    rig.manager.delete_app(&app("site")).await.unwrap();
    mine.sync().await.unwrap();
    mine.reconcile().await;
    assert_eq!(rig.names(), ["other-1", "other-2"]);
}
