//! The runner on tokio's paused clock and the fake runtime: no real sleeps.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::container::{ContainerState, Health};
use crate::cron_job::{CronJobName, CronJobSpec};
use crate::testing::{Call, FakeRuntime};

/// 10 s before the minute boundary 1_700_000_040.
const T0: u64 = 1_700_000_030;
const OWNER: &str = "device-group/edge";
const IMAGE: &str = "busybox:latest";

fn job(name: &str, schedule: &str, id: u64, incarnation: u64) -> CronJob {
    CronJob {
        cron_job_name: CronJobName::parse(name).unwrap(),
        cron_job_id: id,
        incarnation,
        spec: CronJobSpec::new(schedule, "busybox"),
    }
}

fn group(device_group_id: u64, jobs: &[&CronJob]) -> CronDesired {
    CronDesired::Group {
        incarnation: 1,
        device_group_id,
        listed: jobs.iter().map(|j| j.cron_job_name.to_string()).collect(),
        jobs: jobs.iter().map(|j| (*j).clone()).collect(),
    }
}

struct Rig {
    rt: FakeRuntime,
    tx: watch::Sender<CronDesired>,
    start: Instant,
    /// Added to the wall clock: a clock step.
    jump: Arc<AtomicU64>,
}

impl Rig {
    fn start() -> Self {
        let rt = FakeRuntime::new(2, &[IMAGE]);
        let start = Instant::now();
        let jump = Arc::new(AtomicU64::new(0));
        let j = jump.clone();
        let clock: WallClock =
            Arc::new(move || Duration::from_secs(T0 + j.load(Ordering::SeqCst)) + start.elapsed());
        let runner = CronRunner::new(
            Arc::new(rt.clone()),
            CronConfig {
                owner: Some(OWNER.into()),
                registry_auth: None,
                stop_grace: Duration::from_secs(5),
                sweep_every: Duration::from_secs(10),
                clock,
            },
        );
        let (tx, rx) = watch::channel(CronDesired::Unsynced);
        tokio::spawn(runner.run(rx));
        Self {
            rt,
            tx,
            start,
            jump,
        }
    }

    fn send(&self, d: CronDesired) {
        self.tx.send(d).unwrap();
    }

    /// Sleeps until `secs` after T0 (wall clock, without jumps).
    async fn at(&self, secs: f64) {
        tokio::time::sleep_until(self.start + Duration::from_secs_f64(secs)).await;
    }

    fn names(&self) -> Vec<String> {
        self.rt.containers().into_keys().collect()
    }

    /// A container made behind the runner's back, as another worker or an old run left it.
    async fn plant(&self, job: &CronJob, at: u64, owner: &str, state: ContainerState) {
        self.rt.pull(IMAGE, None).await.unwrap();
        let mut spec = cron_container(job, at);
        spec.labels.insert(LABEL_OWNER.into(), owner.into());
        self.rt.create(&spec).await.unwrap();
        self.rt.set_state(&spec.name, state, Health::None);
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_starts_right_after_its_minute_and_is_removed_once_finished() {
    let rig = Rig::start();
    let tick = job("tick", "* * * * *", 1, 1);
    rig.send(group(1, &[&tick]));
    rig.at(9.999).await;
    assert!(rig.names().is_empty());
    assert_eq!(rig.rt.calls(), [Call::Pull(IMAGE.into())], "pulled ahead");
    rig.at(10.001).await;
    assert_eq!(rig.names(), ["tick-1700000040-1"]);
    let c = &rig.rt.containers()["tick-1700000040-1"];
    assert_eq!(c.label(LABEL_OWNER), Some(OWNER));
    assert_eq!(c.label("cron_job_name"), Some("tick"));
    assert_eq!(c.label(LABEL_CONTAINER_TYPE), Some("cron_job"));
    // Still running at the next sweep: kept.
    rig.at(15.0).await;
    assert_eq!(rig.names(), ["tick-1700000040-1"]);
    rig.rt
        .set_state("tick-1700000040-1", ContainerState::Exited, Health::None);
    rig.at(20.5).await;
    assert!(rig.names().is_empty(), "finished: removed at the sweep");
    assert!(
        rig.rt
            .calls()
            .contains(&Call::Remove("tick-1700000040-1".into()))
    );
    rig.at(69.999).await;
    assert!(rig.names().is_empty());
    rig.at(70.001).await;
    assert_eq!(rig.names(), ["tick-1700000100-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_change_reschedules_and_stopping_unschedules() {
    let rig = Rig::start();
    rig.send(group(1, &[&job("tick", "* * * * *", 1, 1)]));
    rig.at(5.0).await;
    // 1_700_000_100 is the next multiple of 5 minutes.
    rig.send(group(1, &[&job("tick", "*/5 * * * *", 2, 1)]));
    rig.at(69.999).await;
    assert!(rig.names().is_empty(), "the every-minute run is gone");
    rig.at(70.001).await;
    assert_eq!(rig.names(), ["tick-1700000100-1"]);
    // A stale document changes nothing.
    rig.send(group(1, &[&job("tick", "* * * * *", 1, 1)]));
    rig.at(75.0).await;
    rig.send(group(1, &[&job("tick", "*/5 * * * *", 2, 1)]));
    let mut stopped = job("tick", "*/5 * * * *", 3, 1);
    stopped.spec.running = false;
    rig.send(group(1, &[&stopped]));
    rig.at(400.0).await;
    assert_eq!(
        rig.names(),
        ["tick-1700000100-1"],
        "no run after the stop; the one that runs is left to finish"
    );
    // Started again: scheduled from now.
    rig.send(group(1, &[&job("tick", "*/5 * * * *", 4, 1)]));
    rig.at(670.001).await;
    assert_eq!(rig.names(), ["tick-1700000100-1", "tick-1700000700-1"]);
}

#[tokio::test(start_paused = true)]
async fn jobs_leave_only_when_the_group_version_rises() {
    let rig = Rig::start();
    let a = job("a", "* * * * *", 1, 1);
    let b = job("b", "* * * * *", 1, 1);
    rig.plant(
        &job("foreign", "* * * * *", 1, 1),
        T0 - 60,
        "other",
        ContainerState::Exited,
    )
    .await;
    rig.send(group(1, &[&a, &b]));
    rig.at(10.001).await;
    assert_eq!(
        rig.names(),
        ["a-1700000040-1", "b-1700000040-1", "foreign-1699999970-1"]
    );
    // A stale reply without b removes nothing.
    rig.send(group(0, &[&a]));
    rig.at(30.0).await;
    assert!(rig.names().contains(&"b-1700000040-1".to_owned()));
    // b leaves: its running container goes at once, and it runs no more.
    rig.send(group(2, &[&a]));
    rig.at(31.0).await;
    assert_eq!(rig.names(), ["a-1700000040-1", "foreign-1699999970-1"]);
    rig.at(70.001).await;
    assert_eq!(
        rig.names(),
        ["a-1700000040-1", "a-1700000100-1", "foreign-1699999970-1"],
        "another owner's container of a job not here is never touched"
    );
    // A re-created b (new incarnation, id 1) joins with a new version of the group.
    rig.send(group(3, &[&a, &job("b", "* * * * *", 1, 2)]));
    rig.at(130.001).await;
    assert!(rig.names().contains(&"b-1700000160-1".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_deleted_group_unschedules_everything_and_removes_its_containers() {
    let rig = Rig::start();
    // No group yet: nothing scheduled, nothing removed.
    let old = job("a", "* * * * *", 1, 1);
    rig.plant(&old, T0 - 60, OWNER, ContainerState::Exited)
        .await;
    rig.send(CronDesired::NoGroup);
    rig.at(5.0).await;
    assert_eq!(rig.names(), ["a-1699999970-1"]);
    rig.send(group(1, &[&old]));
    rig.at(6.0).await;
    assert!(rig.names().is_empty(), "the old finished run swept at once");
    rig.at(10.001).await;
    assert_eq!(rig.names(), ["a-1700000040-1"]);
    rig.send(CronDesired::NoGroup);
    rig.at(11.0).await;
    assert!(
        rig.names().is_empty(),
        "the running container of a deleted group goes"
    );
    rig.at(200.0).await;
    assert!(rig.names().is_empty());
    // A late reply of the deleted incarnation is ignored.
    rig.send(group(2, &[&old]));
    rig.at(300.0).await;
    assert!(rig.names().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_clock_step_runs_a_job_once_not_once_per_missed_minute() {
    let rig = Rig::start();
    rig.send(group(1, &[&job("tick", "* * * * *", 1, 1)]));
    rig.at(1.0).await;
    rig.jump.store(300, Ordering::SeqCst);
    // The runner reads the clock again within MAX_SLEEP.
    rig.at(16.5).await;
    assert_eq!(rig.names(), ["tick-1700000040-1"]);
    rig.at(40.0).await;
    assert_eq!(rig.names().len(), 1);
    // Next: the minute after the new time (T0 + 300 + 40 = 1_700_000_370 -> ..._400).
    rig.at(70.001).await;
    assert_eq!(rig.names(), ["tick-1700000040-1", "tick-1700000400-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_missing_image_is_pulled_at_the_run_and_a_taken_name_is_no_error() {
    let rig = Rig::start();
    rig.rt
        .fail_next("pull", RuntimeError::Unavailable("registry down".into()));
    let tick = job("tick", "* * * * *", 1, 1);
    rig.send(group(1, &[&tick]));
    rig.at(10.001).await;
    assert_eq!(rig.names(), ["tick-1700000040-1"]);
    // The pull ahead failed (the fake logs only calls that pass); the run pulled.
    assert_eq!(
        rig.rt
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::Pull(_)))
            .count(),
        1
    );
    // A second worker on the same engine makes the same name: it exists, nothing fails.
    let mut spec = cron_container(&tick, 1_700_000_100);
    spec.labels.insert(LABEL_OWNER.into(), OWNER.into());
    rig.rt.create(&spec).await.unwrap();
    rig.at(70.001).await;
    assert_eq!(rig.names(), ["tick-1700000040-1", "tick-1700000100-1"]);
}

#[tokio::test(start_paused = true)]
async fn a_device_group_worker_runs_its_groups_cron_jobs() {
    use crate::device_group::{DeviceGroupName, Members};
    use crate::manager::Manager;
    use crate::testing::InMemoryStore;
    use crate::worker::{Selection, Worker, WorkerConfig};

    let manager = Manager::new(Arc::new(InMemoryStore::new()), None);
    let tick = CronJobName::parse("tick").unwrap();
    manager
        .create_cron_job(tick.clone(), CronJobSpec::new("* * * * *", "busybox"))
        .await
        .unwrap();
    let edge = DeviceGroupName::parse("edge").unwrap();
    manager
        .create_device_group(
            edge.clone(),
            Members {
                apps: Vec::new(),
                cron_jobs: vec!["tick".into()],
            },
        )
        .await
        .unwrap();
    let rt = FakeRuntime::new(2, &[IMAGE]);
    let start = Instant::now();
    let clock: WallClock = Arc::new(move || Duration::from_secs(T0) + start.elapsed());
    let worker = Worker::new(
        Arc::new(rt.clone()),
        Arc::new(manager.clone()),
        None,
        WorkerConfig {
            selection: Selection::DeviceGroup(edge),
            check_in: Duration::from_secs(30),
            reconcile_every: Duration::from_secs(10),
            ..WorkerConfig::default()
        },
    )
    .with_wall_clock(clock);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let at = |secs: f64| tokio::time::sleep_until(start + Duration::from_secs_f64(secs));
    let names = || rt.containers().into_keys().collect::<Vec<_>>();

    at(9.999).await;
    assert!(names().is_empty());
    at(10.001).await;
    assert_eq!(names(), ["tick-1700000040-1"]);
    assert_eq!(
        rt.containers()["tick-1700000040-1"].label(LABEL_OWNER),
        Some("device-group/edge")
    );
    rt.set_state("tick-1700000040-1", ContainerState::Exited, Health::None);
    at(21.0).await;
    assert!(names().is_empty(), "finished run removed");

    // A change is picked up at the next check-in (30 s) and runs on its new schedule.
    let mut env = std::collections::BTreeMap::new();
    env.insert("RUN".to_owned(), "2".to_owned());
    manager
        .patch_cron_job(
            &tick,
            crate::cron_job::CronJobPatch {
                schedule: Some("*/2 * * * *".into()),
                env_vars: Some(env),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    at(70.001).await;
    assert!(names().is_empty(), "1_700_000_100 is not an even minute");
    at(130.001).await;
    assert_eq!(names(), ["tick-1700000160-1"]);
    rt.set_state("tick-1700000160-1", ContainerState::Exited, Health::None);

    // Deleted: taken out of the group, unscheduled at the next check-in.
    manager.delete_cron_job(&tick).await.unwrap();
    at(250.001).await;
    assert!(
        names().is_empty(),
        "no run after the delete; the finished one swept"
    );
    stop.send(()).unwrap();
    run.await.unwrap();
}

#[test]
fn a_state_not_yet_applied_is_never_hidden_by_an_older_one() {
    let v1 = job("a", "* * * * *", 1, 1);
    let v2 = job("a", "*/5 * * * *", 2, 1);
    let b = job("b", "* * * * *", 1, 1);
    let mut held = CronDesired::Unsynced;
    assert!(held.merge(group(2, &[&v2, &b])));
    assert!(!held.merge(CronDesired::Unsynced));
    assert!(
        !held.merge(group(1, &[&v1])),
        "a lower group revision is dropped"
    );
    assert!(
        !held.merge(group(2, &[&v1, &b])),
        "an older job document at the same revision changes nothing"
    );
    assert_eq!(held, group(2, &[&v2, &b]));
    let v3 = job("a", "0 * * * *", 3, 1);
    assert!(
        held.merge(group(2, &[&v3, &b])),
        "a newer job document is taken"
    );
    assert_eq!(held, group(2, &[&v3, &b]));
    assert!(held.merge(group(3, &[&v1])), "a higher revision replaces");
    assert_eq!(held, group(3, &[&v1]));
    assert!(held.merge(CronDesired::NoGroup));
    assert!(!held.merge(CronDesired::NoGroup));
    assert!(
        held.merge(group(1, &[&v1])),
        "after a deletion, the next state"
    );
}
