use std::sync::Arc;

use super::*;
use crate::model::AppSpec;
use crate::report::{AppStatus, ContainerReport, HostRollout};
use crate::testing::InMemoryStore;

const S: u64 = NS;

fn name() -> AppName {
    AppName::parse("site").unwrap()
}

fn window() -> FleetWindow {
    FleetWindow {
        report_ttl: Duration::from_secs(3600),
        offline_after: Duration::from_secs(60),
    }
}

fn patch(image: &str) -> AppPatch {
    AppPatch {
        docker_image: Some(image.into()),
        ..AppPatch::default()
    }
}

fn policy(json: serde_json::Value) -> FleetPolicy {
    serde_json::from_value(json).unwrap()
}

/// What `host` reports after applying `app` as a worker would, its candidate containers
/// failing when `broken`.
fn report_for(app: &App, host: &str, broken: bool, created_s: u64) -> WorkerReport {
    let on = app
        .fleet_rollout
        .as_ref()
        .is_some_and(|r| r.runs_candidate(host));
    let failing = on && broken;
    let mut report = WorkerReport {
        hostname: host.to_owned(),
        ..WorkerReport::default()
    };
    report.apps_status.insert(
        "site".into(),
        AppStatus {
            app_id: app.app_id,
            incarnation: app.incarnation,
            running: true,
            desired_containers: 1,
            running_containers: u32::from(!failing),
            converged: !failing,
            pull_fallback: None,
            fleet_rollout: app.fleet_rollout.as_ref().map(|r| HostRollout {
                rollout_id: r.rollout_id,
                on_candidate: on,
                candidate_image_present: on,
            }),
        },
    );
    report.apps_containers.push(ContainerReport {
        name: "site-1".into(),
        state: if failing { "exited" } else { "running" }.into(),
        health: "none".into(),
        app_name: Some("site".into()),
        created: created_s,
        ..ContainerReport::default()
    });
    report
}

struct Fleet {
    managers: Vec<Manager>,
    hosts: Vec<String>,
    now: u64,
    broken: bool,
}

impl Fleet {
    async fn new(n: usize, managers: usize, broken: bool) -> Self {
        let store: Arc<dyn crate::store::Store> = Arc::new(InMemoryStore::new());
        let managers: Vec<Manager> = (0..managers)
            .map(|_| Manager::new(store.clone(), None))
            .collect();
        managers[0]
            .create_app(name(), AppSpec::with_image("site:1"))
            .await
            .unwrap();
        Self {
            managers,
            hosts: (0..n).map(|i| format!("h{i:04}")).collect(),
            now: 1_000 * S,
            broken,
        }
    }

    /// Every host reports how it runs the app now; then every manager drives.
    async fn tick(&mut self) {
        let app = self.managers[0].get_app(&name()).await.unwrap();
        for h in &self.hosts {
            let report = report_for(&app, h, self.broken, self.now / S - 30);
            self.managers[0]
                .insert_report(report, self.now)
                .await
                .unwrap();
        }
        for m in &self.managers {
            m.drive_fleet_rollouts(window(), self.now).await.unwrap();
        }
        self.now += 5 * S;
    }
}

#[tokio::test]
async fn a_rollout_moves_the_app_rule_step_by_step_and_ends_with_the_candidate_as_spec() {
    let mut fleet = Fleet::new(50, 1, false).await;
    let m = fleet.managers[0].clone();
    let started = m
        .start_fleet_rollout(
            &name(),
            patch("site:2"),
            policy(serde_json::json!({"canary_hosts": ["h0001"], "steps": [{"percent": 20}]})),
            "user:admin",
            window(),
            fleet.now,
        )
        .await
        .unwrap();
    assert_eq!(started.rollout_id, 1);
    let app = m.get_app(&name()).await.unwrap();
    let rule = app
        .fleet_rollout
        .as_ref()
        .expect("the app carries the rule");
    assert_eq!(rule.cohort.canary_hosts.len(), 1);
    assert_eq!(rule.cohort.threshold_bp, 0, "canaries first");
    assert_eq!(app.spec.docker_image, "site:1");
    assert_eq!(rule.candidate.docker_image, "site:2");

    let mut thresholds = vec![];
    for _ in 0..30 {
        fleet.tick().await;
        let r = m.get_fleet_rollout(&name()).await.unwrap();
        thresholds.push(r.cohort.threshold_bp);
        if r.phase.is_terminal() {
            break;
        }
    }
    let r = m.get_fleet_rollout(&name()).await.unwrap();
    assert_eq!(r.phase, Phase::Succeeded, "{:?}", r.events);
    assert!(thresholds.windows(2).all(|w| w[0] <= w[1]));
    let app = m.get_app(&name()).await.unwrap();
    assert!(app.fleet_rollout.is_none());
    assert_eq!(app.spec.docker_image, "site:2");
    // One app change per stage (+1 for the start, +1 for the end), not one per tick.
    assert!(app.app_id <= 6, "app_id {}", app.app_id);

    let status = m
        .fleet_rollout_status(&name(), window(), fleet.now)
        .await
        .unwrap();
    assert_eq!(status.percent, 100.0);
    assert!(m.get_fleet_rollout(&name()).await.is_ok());
}

#[tokio::test]
async fn a_failing_candidate_is_reverted_and_the_app_keeps_its_spec() {
    let mut fleet = Fleet::new(40, 1, true).await;
    let m = fleet.managers[0].clone();
    m.start_fleet_rollout(
        &name(),
        patch("site:broken"),
        policy(serde_json::json!({"steps": [{"percent": 25}]})),
        "user:admin",
        window(),
        fleet.now,
    )
    .await
    .unwrap();
    for _ in 0..10 {
        fleet.tick().await;
    }
    let r = m.get_fleet_rollout(&name()).await.unwrap();
    assert!(matches!(r.phase, Phase::Reverted { .. }), "{:?}", r.phase);
    let app = m.get_app(&name()).await.unwrap();
    assert!(app.fleet_rollout.is_none());
    assert_eq!(app.spec.docker_image, "site:1");
    let failed = m
        .fleet_rollout_hosts(&name(), Some(HostState::Stable), window(), fleet.now)
        .await
        .unwrap();
    assert_eq!(failed.len(), 40, "everyone back on stable: {failed:?}");
}

#[tokio::test]
async fn two_managers_on_one_store_advance_a_rollout_once() {
    let mut fleet = Fleet::new(30, 2, false).await;
    fleet.managers[1]
        .start_fleet_rollout(
            &name(),
            patch("site:2"),
            policy(serde_json::json!({"steps": [{"percent": 10}, {"percent": 50}]})),
            "user:admin",
            window(),
            fleet.now,
        )
        .await
        .unwrap();
    for _ in 0..30 {
        fleet.tick().await;
    }
    let r = fleet.managers[0].get_fleet_rollout(&name()).await.unwrap();
    assert_eq!(r.phase, Phase::Succeeded);
    let steps: Vec<&str> = r
        .events
        .iter()
        .map(|e| e.what.as_str())
        .filter(|w| w.contains("of the fleet on the candidate"))
        .collect();
    assert_eq!(steps.len(), 3, "each step once: {steps:?}");
}

#[tokio::test]
async fn one_rollout_at_a_time_and_bad_input_changes_nothing() {
    let fleet = Fleet::new(5, 1, false).await;
    let m = fleet.managers[0].clone();
    let bad = [
        (patch("site:1"), FleetPolicy::default(), "candidate"),
        (
            patch("Not An Image"),
            FleetPolicy::default(),
            "candidate.docker_image",
        ),
        (
            patch("site:2"),
            policy(serde_json::json!({"steps": [{"percent": 0}]})),
            "policy.steps[0].percent",
        ),
    ];
    for (candidate, p, field) in bad {
        let err = m
            .start_fleet_rollout(&name(), candidate, p, "u", window(), fleet.now)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, RolloutError::Invalid(e) if e[0].field == field),
            "{field}: {err}"
        );
    }
    assert!(matches!(
        m.get_fleet_rollout(&name()).await,
        Err(RolloutError::NoRollout)
    ));
    assert_eq!(
        m.get_app(&name()).await.unwrap().app_id,
        1,
        "nothing stored"
    );

    let p = policy(serde_json::json!({"steps": [{"approval": true}]}));
    m.start_fleet_rollout(
        &name(),
        patch("site:2"),
        p.clone(),
        "u",
        window(),
        fleet.now,
    )
    .await
    .unwrap();
    let err = m
        .start_fleet_rollout(
            &name(),
            patch("site:3"),
            p.clone(),
            "u",
            window(),
            fleet.now,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RolloutError::Active(1)), "{err}");
    let r = m
        .act_on_fleet_rollout(
            &name(),
            RolloutAction::Revert,
            "user:u",
            window(),
            fleet.now,
        )
        .await
        .unwrap();
    assert!(matches!(r.phase, Phase::Reverted { .. }));
    let err = m
        .act_on_fleet_rollout(&name(), RolloutAction::Pause, "user:u", window(), fleet.now)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RolloutError::Refused(Refusal::Ended(1, "reverted"))),
        "{err}"
    );
    let second = m
        .start_fleet_rollout(&name(), patch("site:3"), p, "u", window(), fleet.now)
        .await
        .unwrap();
    assert_eq!(second.rollout_id, 2);
}

#[tokio::test]
async fn a_dry_run_sizes_the_steps_for_the_fleet_as_it_is() {
    let mut fleet = Fleet::new(200, 1, false).await;
    fleet.tick().await;
    let m = fleet.managers[0].clone();
    let plan = m
        .plan_fleet_rollout(
            &name(),
            patch("site:2"),
            policy(serde_json::json!({"canary_hosts": ["h0003"], "steps": [{"percent": 10}, {"count": 50}]})),
            window(),
            fleet.now,
        )
        .await
        .unwrap();
    assert_eq!(plan.known_hosts, 200);
    let kinds: Vec<&str> = plan.steps.iter().map(|s| s.kind).collect();
    assert_eq!(kinds, ["canary", "percent", "count", "percent"]);
    assert_eq!(plan.steps[0].hosts, 1);
    assert!(
        (10..=35).contains(&plan.steps[1].hosts),
        "{:?}",
        plan.steps[1]
    );
    assert_eq!(plan.steps[2].hosts, 50);
    assert_eq!(plan.steps[3].hosts, 200);
    assert!(matches!(
        m.get_fleet_rollout(&name()).await,
        Err(RolloutError::NoRollout)
    ));
}

#[tokio::test]
async fn a_deleted_app_ends_its_rollout() {
    let fleet = Fleet::new(5, 1, false).await;
    let m = fleet.managers[0].clone();
    m.start_fleet_rollout(
        &name(),
        patch("site:2"),
        FleetPolicy::default(),
        "u",
        window(),
        fleet.now,
    )
    .await
    .unwrap();
    m.delete_app(&name()).await.unwrap();
    m.drive_fleet_rollouts(window(), fleet.now).await.unwrap();
    let r = m.get_fleet_rollout(&name()).await.unwrap();
    assert!(matches!(r.phase, Phase::Reverted { .. }), "{:?}", r.phase);
}
