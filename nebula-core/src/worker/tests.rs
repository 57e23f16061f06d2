use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::bus::InProcessBus;
use crate::container::{ContainerState, Health};
use crate::device_group::{DeviceGroupName, Members, MembersPatch};
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
async fn a_failed_pull_without_a_local_image_touches_nothing() {
    let rig = Rig::new();
    rig.create("site", 1.0).await;
    let mut w = rig.worker(Selection::All);
    w.sync().await.unwrap();
    w.reconcile().await;
    let before = rig.rt.containers();
    let patch = AppPatch {
        docker_image: Some("site:v3".into()),
        ..AppPatch::default()
    };
    rig.manager.patch_app(&app("site"), patch).await.unwrap();
    w.sync().await.unwrap();
    let out = w.reconcile().await;
    assert_eq!(out.errors.len(), 1, "{out:?}");
    assert!(
        out.errors[0].contains("nothing was created or replaced"),
        "{out:?}"
    );
    assert_eq!(rig.rt.containers(), before);
}

#[tokio::test]
async fn with_the_registry_down_changes_use_the_local_image_and_say_so() {
    let rig = Rig::new();
    rig.create("site", 1.0).await;
    let mut w = rig.worker(Selection::All);
    w.sync().await.unwrap();
    w.reconcile().await;
    rig.rt.set_registry_down(true);
    let patch = AppPatch {
        env_vars: Some([("A".to_owned(), "2".to_owned())].into()),
        ..AppPatch::default()
    };
    let v2 = rig.manager.patch_app(&app("site"), patch).await.unwrap();
    w.sync().await.unwrap();
    let out = w.reconcile().await;
    assert_eq!((out.done, out.errors.len()), (2, 0), "{out:?}");
    let report = w
        .build_report("h", report::HostUsage::default(), 1)
        .await
        .unwrap();
    let status = &report.apps_status["site"];
    assert!(status.converged, "{status:?}");
    let fallback = status.pull_fallback.as_ref().expect("the report says so");
    assert_eq!(fallback.app_id, v2.app_id);
    assert_eq!(fallback.failure, crate::report::PullFailure::Unreachable);

    // A container removed by hand comes back without asking the registry.
    rig.rt.remove_by_hand("site-1");
    rig.rt.clear_calls();
    let out = w.reconcile().await;
    assert_eq!((out.done, out.errors.len()), (1, 0), "{out:?}");
    assert!(!rig.rt.calls().iter().any(|c| matches!(c, Call::Pull(_))));

    // A restart tries the registry again; once it serves, the fallback is over.
    rig.rt.set_registry_down(false);
    rig.manager.restart_app(&app("site"), false).await.unwrap();
    w.sync().await.unwrap();
    rig.rt.clear_calls();
    let out = w.reconcile().await;
    assert_eq!((out.done, out.errors.len()), (2, 0), "{out:?}");
    assert!(rig.rt.calls().iter().any(|c| matches!(c, Call::Pull(_))));
    let report = w
        .build_report("h", report::HostUsage::default(), 2)
        .await
        .unwrap();
    assert_eq!(report.apps_status["site"].pull_fallback, None);
}

#[tokio::test]
async fn stale_messages_are_ignored_and_recreated_apps_are_not() {
    let rig = Rig::new();
    let v1 = rig.create("site", 1.0).await;
    let mut w = rig.worker(Selection::All);
    w.sync().await.unwrap();
    let v2 = rig.manager.stop_app(&app("site")).await.unwrap();
    assert!(w.apply(BusMessage::app_changed(v2.clone())));
    assert!(
        !w.apply(BusMessage::app_changed(v1.clone())),
        "older version ignored"
    );
    assert!(w.apply(BusMessage::AppDeleted {
        app_name: app("site"),
        incarnation: v1.incarnation,
        device_groups: Vec::new(),
    }));
    assert!(
        !w.apply(BusMessage::app_changed(v2)),
        "a late change of a deleted app is ignored"
    );
    rig.manager.delete_app(&app("site")).await.unwrap();
    let again = rig.create("site", 1.0).await;
    assert_eq!(again.app_id, 1);
    assert!(
        w.apply(BusMessage::app_changed(again)),
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
        async fn fetch(&self, _: &Selection) -> Result<DesiredState, SourceError> {
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

#[tokio::test(start_paused = true)]
async fn a_container_removed_during_a_restart_wait_comes_back_at_once() {
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
    let kept = rig.rt.containers()["site-2"].id.clone();
    rig.manager.restart_app(&app("site"), false).await.unwrap();
    w.sync().await.unwrap();
    rig.rt.remove_by_hand("site-1");
    rig.rt.set_registry_down(true);
    rig.rt.clear_calls();
    let out = w.reconcile().await;
    assert!(out.requeue_after.is_some(), "the replacement still waits");
    assert_eq!(rig.names(), ["site-1", "site-2"], "{out:?}");
    assert_eq!(rig.rt.containers()["site-2"].id, kept, "held, not replaced");
    assert!(
        !rig.rt.calls().iter().any(|c| matches!(c, Call::Pull(_))),
        "the local image is used without asking the registry"
    );
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

// Device groups (DEVICE_GROUP): membership, gating, deletion and prune.

fn dg(name: &str) -> DeviceGroupName {
    DeviceGroupName::parse(name).unwrap()
}

fn members(apps: &[&str]) -> Members {
    Members {
        apps: apps.iter().map(|a| app(a)).collect(),
        cron_jobs: Vec::new(),
    }
}

impl Rig {
    async fn create_at(&self, name: &str, host_port: u16) -> App {
        let mut spec = AppSpec::with_image("site");
        spec.starting_ports = vec![StartingPort::Mapped {
            host: host_port,
            container: 80,
        }];
        self.manager
            .create_app(AppName::parse(name).unwrap(), spec)
            .await
            .unwrap()
    }

    fn apps_running(&self) -> BTreeSet<String> {
        self.rt
            .containers()
            .values()
            .filter_map(|c| c.app_name().map(str::to_owned))
            .collect()
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn a_device_group_worker_follows_its_group() {
    let rig = Rig::new();
    rig.create_at("a", 8000).await;
    rig.create_at("b", 8100).await;
    rig.create_at("c", 8200).await;
    rig.create_at("other", 8300).await;
    // Another worker's app on the same host.
    let mut theirs = rig.worker(Selection::Apps(vec![app("other")]));
    theirs.sync().await.unwrap();
    theirs.reconcile().await;

    let mut w = rig.worker(Selection::DeviceGroup(dg("edge")));
    assert!(!w.sync().await.unwrap(), "the group does not exist yet");
    assert_eq!(w.reconcile().await, Outcome::default(), "nothing happens");
    assert_eq!(rig.apps_running(), set(&["other"]));

    rig.manager
        .create_device_group(dg("edge"), members(&["a", "b"]))
        .await
        .unwrap();
    assert!(w.sync().await.unwrap());
    w.reconcile().await;
    assert_eq!(rig.apps_running(), set(&["a", "b", "other"]));
    assert_eq!(
        rig.rt.containers()["a-1"].label(LABEL_OWNER),
        Some("device-group/edge")
    );

    rig.manager
        .patch_device_group(
            &dg("edge"),
            MembersPatch {
                apps: Some(vec![app("b"), app("c")]),
                ..MembersPatch::default()
            },
        )
        .await
        .unwrap();
    assert!(w.sync().await.unwrap());
    w.reconcile().await;
    assert_eq!(
        rig.apps_running(),
        set(&["b", "c", "other"]),
        "a left, c joined"
    );

    // An app change reaches the group's worker.
    rig.manager.stop_app(&app("c")).await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(rig.apps_running(), set(&["b", "other"]));

    // Deleting an app takes it out of the group; its containers go.
    rig.manager.delete_app(&app("b")).await.unwrap();
    assert!(w.sync().await.unwrap());
    w.reconcile().await;
    assert_eq!(rig.apps_running(), set(&["other"]));

    // Deleting the group after a successful sync removes its apps.
    rig.manager.start_app(&app("c")).await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(rig.apps_running(), set(&["c", "other"]));
    rig.manager.delete_device_group(&dg("edge")).await.unwrap();
    assert!(w.sync().await.unwrap());
    w.reconcile().await;
    assert_eq!(
        rig.apps_running(),
        set(&["other"]),
        "only the group's apps are removed"
    );

    // Re-created (device_group_id back at 1): taken, not mistaken for the deleted one.
    rig.manager
        .create_device_group(dg("edge"), members(&["c"]))
        .await
        .unwrap();
    assert!(w.sync().await.unwrap());
    w.reconcile().await;
    assert_eq!(rig.apps_running(), set(&["c", "other"]));
}

/// A source that answers from a script, then fails.
struct Script(std::sync::Mutex<std::collections::VecDeque<DesiredState>>);

impl Script {
    fn new(replies: Vec<DesiredState>) -> Arc<Self> {
        Arc::new(Self(std::sync::Mutex::new(replies.into())))
    }
}

#[async_trait]
impl DesiredSource for Script {
    async fn fetch(&self, _: &Selection) -> Result<DesiredState, SourceError> {
        self.0
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| SourceError::Unavailable("script ended".into()))
    }
}

fn info(incarnation: u64, id: u64, prune_id: u64, apps: &[&App]) -> DesiredState {
    DesiredState::Group(DeviceGroupInfo {
        apps: apps.iter().map(|a| (*a).clone()).collect(),
        apps_list: apps.iter().map(|a| a.app_name.clone()).collect(),
        cron_jobs: Vec::new(),
        cron_jobs_list: Vec::new(),
        prune_id,
        device_group_id: id,
        incarnation,
    })
}

#[tokio::test]
async fn stale_group_replies_remove_nothing() {
    let rig = Rig::new();
    let a = rig.create_at("a", 8000).await;
    let b = rig.create_at("b", 8100).await;
    let script = Script::new(vec![
        info(5, 2, 1, &[&a, &b]),
        // A manager whose cache is older: b is not listed yet.
        info(5, 1, 1, &[&a]),
        // The group lists b, whose document is missing (deleted meanwhile) at the same id.
        DesiredState::Group(DeviceGroupInfo {
            apps_list: vec![a.app_name.clone(), b.app_name.clone()],
            ..match info(5, 2, 1, &[&a]) {
                DesiredState::Group(i) => i,
                _ => unreachable!(),
            }
        }),
        // b left at a higher id: removed.
        info(5, 3, 1, &[&a]),
        // The group is deleted...
        DesiredState::NoGroup,
        // ...a cache elsewhere still has the deleted incarnation...
        info(5, 3, 1, &[&a]),
        // ...and it is re-created at device_group_id 1.
        info(6, 1, 1, &[&b]),
    ]);
    let mut w = Worker::new(
        Arc::new(rig.rt.clone()),
        script,
        None,
        WorkerConfig {
            selection: Selection::DeviceGroup(dg("edge")),
            ..WorkerConfig::default()
        },
    );
    let mut step = async |expect: &[&str]| {
        w.sync().await.unwrap();
        let out = w.reconcile().await;
        assert!(out.errors.is_empty(), "{out:?}");
        assert_eq!(rig.apps_running(), set(expect));
    };
    step(&["a", "b"]).await;
    step(&["a", "b"]).await;
    step(&["a", "b"]).await;
    step(&["a"]).await;
    step(&[]).await;
    step(&[]).await;
    step(&["b"]).await;
}

#[tokio::test]
async fn a_restarted_group_worker_removes_what_left_the_group_while_it_was_down() {
    let rig = Rig::new();
    rig.create_at("a", 8000).await;
    rig.create_at("b", 8100).await;
    rig.create_at("other", 8300).await;
    rig.manager
        .create_device_group(dg("edge"), members(&["a", "b"]))
        .await
        .unwrap();
    let mut w = rig.worker(Selection::DeviceGroup(dg("edge")));
    w.sync().await.unwrap();
    w.reconcile().await;
    drop(w);
    rig.manager
        .update_device_group(&dg("edge"), members(&["b"]))
        .await
        .unwrap();
    rig.manager
        .create_device_group(dg("theirs"), members(&["other"]))
        .await
        .unwrap();
    let mut theirs = rig.worker(Selection::DeviceGroup(dg("theirs")));
    theirs.sync().await.unwrap();
    theirs.reconcile().await;
    assert_eq!(rig.apps_running(), set(&["a", "b", "other"]));
    rig.rt.clear_calls();
    let mut w = rig.worker(Selection::DeviceGroup(dg("edge")));
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(
        rig.apps_running(),
        set(&["b", "other"]),
        "its own leftover goes, another group's app stays"
    );
    assert!(
        !rig.rt.calls().iter().any(|c| matches!(c, Call::Create(_))),
        "b is adopted: {:?}",
        rig.rt.calls()
    );
}

#[tokio::test]
async fn a_group_deleted_before_the_first_sync_removes_nothing() {
    let rig = Rig::new();
    rig.create_at("a", 8000).await;
    rig.manager
        .create_device_group(dg("edge"), members(&["a"]))
        .await
        .unwrap();
    let mut w = rig.worker(Selection::DeviceGroup(dg("edge")));
    w.sync().await.unwrap();
    w.reconcile().await;
    drop(w);
    rig.manager.delete_device_group(&dg("edge")).await.unwrap();
    let mut w = rig.worker(Selection::DeviceGroup(dg("edge")));
    assert!(!w.sync().await.unwrap());
    w.reconcile().await;
    assert_eq!(
        rig.apps_running(),
        set(&["a"]),
        "a worker that never synced keeps what runs"
    );
}

#[tokio::test]
async fn group_prune_runs_once_per_request_and_never_at_first_sight() {
    let rig = Rig::new();
    rig.create_at("a", 8000).await;
    rig.manager
        .create_device_group(dg("edge"), members(&["a"]))
        .await
        .unwrap();
    rig.manager.prune_device_group(&dg("edge")).await.unwrap();
    let prunes = || rig.rt.calls().iter().filter(|c| **c == Call::Prune).count();
    let mut w = rig.worker(Selection::DeviceGroup(dg("edge")));
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(prunes(), 0, "prune_id 2 at first sight is a starting point");
    rig.manager.prune_device_group(&dg("edge")).await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(prunes(), 1);
    rig.manager.prune_all_device_groups().await.unwrap();
    rig.manager.prune_all_device_groups().await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(prunes(), 2, "two requests between syncs prune once");
    // The per-app prune still works in a group.
    rig.manager.prune_app(&app("a")).await.unwrap();
    w.sync().await.unwrap();
    w.reconcile().await;
    assert_eq!(prunes(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_group_worker_hears_its_group_at_once_and_nothing_else() {
    let rig = Rig::new();
    rig.create_at("a", 8000).await;
    rig.create_at("b", 8100).await;
    rig.create_at("c", 8200).await;
    let w = Worker::new(
        Arc::new(rig.rt.clone()),
        Arc::new(rig.manager.clone()),
        Some(Arc::new(rig.bus.clone())),
        WorkerConfig {
            selection: Selection::DeviceGroup(dg("edge")),
            // Only the bus can explain anything that happens within the test.
            check_in: Duration::from_secs(3600),
            ..WorkerConfig::default()
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(w.run(async {
        let _ = stop_rx.await;
    }));
    let moment = Duration::from_millis(10);
    tokio::time::sleep(moment).await;
    assert!(
        rig.apps_running().is_empty(),
        "the group does not exist yet"
    );
    rig.manager
        .create_device_group(dg("edge"), members(&["a"]))
        .await
        .unwrap();
    tokio::time::sleep(moment).await;
    assert_eq!(rig.apps_running(), set(&["a"]), "a created group at once");

    // App changes of members at once; of other apps, never.
    rig.manager.stop_app(&app("a")).await.unwrap();
    rig.manager.stop_app(&app("b")).await.unwrap();
    rig.manager.start_app(&app("b")).await.unwrap();
    tokio::time::sleep(moment).await;
    assert!(rig.apps_running().is_empty(), "a stopped, b ignored");
    rig.manager.start_app(&app("a")).await.unwrap();

    // Membership at once: b joins.
    rig.manager
        .update_device_group(&dg("edge"), members(&["a", "b"]))
        .await
        .unwrap();
    tokio::time::sleep(moment).await;
    assert_eq!(rig.apps_running(), set(&["a", "b"]), "b joined at once");

    // Another group changing is not heard.
    rig.manager
        .create_device_group(dg("other"), members(&["c"]))
        .await
        .unwrap();
    tokio::time::sleep(moment).await;
    assert_eq!(rig.apps_running(), set(&["a", "b"]));

    // A prune request at once, once.
    let prunes = || rig.rt.calls().iter().filter(|c| **c == Call::Prune).count();
    rig.manager.prune_device_group(&dg("edge")).await.unwrap();
    rig.manager.prune_device_group(&dg("other")).await.unwrap();
    tokio::time::sleep(moment).await;
    assert_eq!(prunes(), 1, "the group's prune request only");

    // A cron job of the group changed: the runner has the new document at once (it pulls
    // the new image ahead of the run).
    let job = crate::cron_job::CronJobName::parse("nightly").unwrap();
    rig.manager
        .create_cron_job(
            job.clone(),
            crate::cron_job::CronJobSpec::new("0 3 * * *", "site"),
        )
        .await
        .unwrap();
    rig.manager
        .patch_device_group(
            &dg("edge"),
            MembersPatch {
                cron_jobs: Some(vec!["nightly".into()]),
                ..MembersPatch::default()
            },
        )
        .await
        .unwrap();
    rig.manager
        .update_cron_job(
            &job,
            crate::cron_job::CronJobSpec::new("0 3 * * *", "site:v2"),
        )
        .await
        .unwrap();
    tokio::time::sleep(moment).await;
    assert!(
        rig.rt
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Pull(image) if image.contains("site:v2"))),
        "the changed job is scheduled at once: {:?}",
        rig.rt.calls()
    );

    // A member app deleted leaves at once.
    rig.manager.delete_app(&app("b")).await.unwrap();
    tokio::time::sleep(moment).await;
    assert_eq!(rig.apps_running(), set(&["a"]));

    // The group deleted: its apps go at once; re-created: back at once.
    rig.manager.delete_device_group(&dg("edge")).await.unwrap();
    tokio::time::sleep(moment).await;
    assert!(
        rig.apps_running().is_empty(),
        "deleted group's apps removed"
    );
    rig.manager
        .create_device_group(dg("edge"), members(&["a"]))
        .await
        .unwrap();
    tokio::time::sleep(moment).await;
    assert_eq!(rig.apps_running(), set(&["a"]), "re-created group at once");
    stop_tx.send(()).unwrap();
    handle.await.unwrap();
}

fn group_changed(name: &str, state: DesiredState) -> BusMessage {
    let DesiredState::Group(info) = state else {
        unreachable!()
    };
    BusMessage::DeviceGroupChanged {
        device_group: dg(name),
        info,
    }
}

/// Applies `message`, reconciles, and checks the apps running; returns what `apply` said.
async fn step(w: &mut Worker, rig: &Rig, message: BusMessage, expect: &[&str]) -> bool {
    let changed = w.apply(message);
    let out = w.reconcile().await;
    assert!(out.errors.is_empty(), "{out:?}");
    assert_eq!(rig.apps_running(), set(expect));
    changed
}

#[tokio::test]
async fn group_messages_follow_the_rules_of_the_http_sync() {
    let rig = Rig::new();
    let a = rig.create_at("a", 8000).await;
    let b = rig.create_at("b", 8100).await;
    let mut w = rig.worker(Selection::DeviceGroup(dg("edge")));
    let w = &mut w;
    let deleted = |name: &str, incarnation: u64| BusMessage::DeviceGroupDeleted {
        device_group: dg(name),
        incarnation,
    };
    assert!(
        !step(w, &rig, group_changed("other", info(5, 1, 1, &[&a])), &[]).await,
        "another group's state is not this worker's"
    );
    assert!(step(w, &rig, group_changed("edge", info(5, 1, 1, &[&a])), &["a"]).await);
    // b's change overtakes the group change that adds b: kept, taken when b joins.
    let b2 = rig.manager.stop_app(&app("b")).await.unwrap();
    let b3 = rig.manager.start_app(&app("b")).await.unwrap();
    let overtaking = BusMessage::AppChanged {
        app: b3.clone(),
        device_groups: vec![dg("edge")],
    };
    assert!(!step(w, &rig, overtaking, &["a"]).await);
    assert!(
        !step(w, &rig, BusMessage::app_changed(b2), &["a"]).await,
        "an app no message puts in the group is not taken"
    );
    let joined = group_changed("edge", info(5, 2, 1, &[&a, &b]));
    assert!(step(w, &rig, joined, &["a", "b"]).await);
    assert_eq!(
        w.desired()[&app("b")],
        b3,
        "the newer document of b is held"
    );
    // A stale state removes nothing; deletions of an older incarnation or of another group
    // are ignored.
    let stale = group_changed("edge", info(5, 1, 1, &[&a]));
    assert!(!step(w, &rig, stale, &["a", "b"]).await);
    assert!(!step(w, &rig, deleted("edge", 4), &["a", "b"]).await);
    assert!(!step(w, &rig, deleted("other", 5), &["a", "b"]).await);
    // Deleted: its apps go, and a late state of the deleted incarnation is ignored.
    assert!(step(w, &rig, deleted("edge", 5), &[]).await);
    let late = group_changed("edge", info(5, 3, 2, &[&a]));
    assert!(!step(w, &rig, late, &[]).await);
    let again = group_changed("edge", info(6, 1, 1, &[&b]));
    assert!(step(w, &rig, again, &["b"]).await);
}

#[tokio::test]
async fn a_group_deleted_before_the_worker_held_it_is_never_taken() {
    let rig = Rig::new();
    let a = rig.create_at("a", 8000).await;
    let mut w = rig.worker(Selection::DeviceGroup(dg("edge")));
    assert!(!w.apply(BusMessage::DeviceGroupDeleted {
        device_group: dg("edge"),
        incarnation: 5,
    }));
    assert!(!w.apply(group_changed("edge", info(5, 2, 1, &[&a]))));
    w.reconcile().await;
    assert!(rig.apps_running().is_empty());
    assert!(w.apply(group_changed("edge", info(6, 1, 1, &[&a]))));
    w.reconcile().await;
    assert_eq!(rig.apps_running(), set(&["a"]));
}

/// A bus whose subscriptions can all be cut at once, as a broker restart does.
#[derive(Clone, Default)]
struct CuttableBus {
    inner: InProcessBus,
    forwards: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl CuttableBus {
    fn cut_all(&self) {
        for f in self.forwards.lock().unwrap().drain(..) {
            f.abort();
        }
    }
}

#[async_trait]
impl Bus for CuttableBus {
    async fn publish(&self, message: &BusMessage) -> Result<(), crate::bus::BusError> {
        self.inner.publish(message).await
    }
    async fn subscribe(&self, topics: &[Topic]) -> Result<Subscription, crate::bus::BusError> {
        let mut inner = self.inner.subscribe(topics).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let forward = tokio::spawn(async move {
            while let Some(d) = inner.next().await {
                if tx.send(d).await.is_err() {
                    break;
                }
            }
        });
        self.forwards.lock().unwrap().push(forward);
        Ok(Subscription::new(rx))
    }
}

/// A source that records when each fetch happened.
struct Clocked {
    fetches: std::sync::Mutex<Vec<tokio::time::Instant>>,
}

#[async_trait]
impl DesiredSource for Clocked {
    async fn fetch(&self, _: &Selection) -> Result<DesiredState, SourceError> {
        self.fetches
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        Ok(DesiredState::Apps(Vec::new()))
    }
}

#[tokio::test(start_paused = true)]
async fn a_fleet_that_lost_its_broker_resyncs_spread_out_not_at_once() {
    const WORKERS: usize = 40;
    let spread = Duration::from_secs(10);
    let bus = CuttableBus::default();
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut sources = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..WORKERS {
        let source = Arc::new(Clocked {
            fetches: std::sync::Mutex::new(Vec::new()),
        });
        let w = Worker::new(
            Arc::new(FakeRuntime::new(2, &[IMAGE])),
            source.clone(),
            Some(Arc::new(bus.clone())),
            WorkerConfig {
                check_in: Duration::from_secs(3600),
                resync_spread: spread,
                ..WorkerConfig::default()
            },
        );
        let mut stop = stop_tx.subscribe();
        handles.push(tokio::spawn(w.run(async move {
            let _ = stop.recv().await;
        })));
        sources.push(source);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for s in &sources {
        assert_eq!(s.fetches.lock().unwrap().len(), 1, "one sync at start");
    }

    let cut = tokio::time::Instant::now();
    bus.cut_all();
    tokio::time::sleep(spread + Duration::from_secs(2)).await;
    let mut resyncs = Vec::new();
    for s in &sources {
        let fetches = s.fetches.lock().unwrap();
        assert_eq!(fetches.len(), 2, "exactly one resync after the loss");
        let after = fetches[1] - cut;
        assert!(
            after <= spread + Duration::from_secs(1),
            "resync within the spread (plus the resubscribe backoff): {after:?}"
        );
        resyncs.push(after);
    }
    resyncs.sort();
    let (first, last) = (resyncs[0], resyncs[WORKERS - 1]);
    assert!(
        last - first >= spread / 2,
        "resyncs spread over the window, not at once: {first:?}..{last:?}"
    );
    let mut distinct = resyncs.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= WORKERS * 3 / 4,
        "few workers share an instant: {} distinct of {WORKERS}",
        distinct.len()
    );
    let _ = stop_tx.send(());
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test]
async fn a_fleet_rollout_rule_moves_only_the_hosts_in_its_cohort() {
    use crate::report::HostRollout;
    use crate::worker::report::HostUsage;

    let rig = Rig::new();
    rig.create("site", 1.0).await;
    let other_rt = FakeRuntime::new(2, &[IMAGE, "site:v2"]);
    let on = |rt: &FakeRuntime, host: &str| {
        Worker::new(
            Arc::new(rt.clone()),
            Arc::new(rig.manager.clone()),
            None,
            WorkerConfig {
                selection: Selection::All,
                hostname: host.into(),
                ..WorkerConfig::default()
            },
        )
    };
    let mut canary = on(&rig.rt, "canary-1");
    let mut other = on(&other_rt, "w-2");
    for w in [&mut canary, &mut other] {
        w.sync().await.unwrap();
        w.reconcile().await;
    }
    rig.rt.clear_calls();
    other_rt.clear_calls();
    let now_ns = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap();
    rig.manager
        .start_fleet_rollout(
            &app("site"),
            AppPatch {
                docker_image: Some("site:v2".into()),
                ..AppPatch::default()
            },
            serde_json::from_value(serde_json::json!({"canary_hosts": ["canary-1"]})).unwrap(),
            "user:test",
            crate::manager::FleetWindow::default(),
            now_ns,
        )
        .await
        .unwrap();
    for w in [&mut canary, &mut other] {
        assert!(w.sync().await.unwrap(), "the app's document changed");
        w.reconcile().await;
    }
    assert!(
        rig.rt.calls().contains(&Call::Pull("site:v2".into())),
        "{:?}",
        rig.rt.calls()
    );
    assert!(other_rt.calls().is_empty(), "{:?}", other_rt.calls());

    let standing = |report: crate::report::WorkerReport| report.apps_status["site"].fleet_rollout;
    let report = canary
        .build_report("canary-1", HostUsage::default(), 0)
        .await
        .unwrap();
    assert_eq!(
        standing(report),
        Some(HostRollout {
            rollout_id: 1,
            on_candidate: true,
            candidate_image_present: true
        })
    );
    let report = other
        .build_report("w-2", HostUsage::default(), 0)
        .await
        .unwrap();
    assert_eq!(standing(report).map(|s| s.on_candidate), Some(false));
}
