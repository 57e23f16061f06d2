use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::model::App;

const S: u64 = NS;

fn spec(image: &str) -> AppSpec {
    AppSpec::with_image(image)
}

fn policy(json: serde_json::Value) -> FleetPolicy {
    serde_json::from_value(json).unwrap()
}

fn rollout(p: FleetPolicy) -> FleetRollout {
    FleetRollout::start(
        AppName::parse("site").unwrap(),
        1,
        7,
        spec("site:1"),
        spec("site:2"),
        p,
        42,
        "user:admin",
        0,
    )
    .unwrap()
}

/// How simulated hosts behave with the candidate.
#[derive(Clone, Copy, PartialEq)]
enum Candidate {
    Good,
    Exits,
}

/// A fleet of hosts that follow the rule the app carries: each applies it one tick after it
/// changed, reports every tick, and remembers whether it ever ran the candidate.
struct Sim {
    hosts: Vec<String>,
    offline: BTreeSet<String>,
    candidate: Candidate,
    /// host -> since when it runs the candidate (ns)
    on_candidate: BTreeMap<String, u64>,
    prefetched: BTreeSet<String>,
    ever: BTreeSet<String>,
    now: u64,
}

impl Sim {
    fn new(n: usize, candidate: Candidate) -> Self {
        Self {
            hosts: (0..n).map(|i| format!("host-{i:05}")).collect(),
            offline: BTreeSet::new(),
            candidate,
            on_candidate: BTreeMap::new(),
            prefetched: BTreeSet::new(),
            ever: BTreeSet::new(),
            now: 0,
        }
    }

    /// Every host applies the app's rule as it stands.
    fn apply(&mut self, r: &FleetRollout) {
        let app = App {
            app_name: r.app_name.clone(),
            app_id: 2,
            incarnation: 7,
            restart_generation: 0,
            restart_mode: crate::model::RestartMode::AsConfigured,
            prune_generation: 0,
            spec: if r.phase == Phase::Succeeded {
                r.candidate.clone()
            } else {
                r.stable.clone()
            },
            fleet_rollout: r.rule().map(Box::new),
        };
        for h in &self.hosts {
            if self.offline.contains(h) {
                continue;
            }
            let on = app.spec_for(h).docker_image == "site:2";
            if on {
                self.ever.insert(h.clone());
                self.prefetched.insert(h.clone());
                self.on_candidate.entry(h.clone()).or_insert(self.now);
            } else {
                self.on_candidate.remove(h);
            }
            if app
                .fleet_rollout
                .as_ref()
                .is_some_and(|rule| rule.prefetches(h))
            {
                self.prefetched.insert(h.clone());
            }
        }
    }

    fn observations(&self, r: &FleetRollout) -> Vec<HostObservation> {
        self.hosts
            .iter()
            .map(|h| {
                let since = self.on_candidate.get(h).copied();
                let failing = since.is_some() && self.candidate == Candidate::Exits;
                HostObservation {
                    host: h.clone(),
                    reported_ns: if self.offline.contains(h) {
                        0
                    } else {
                        self.now
                    },
                    app: Some(AppObservation {
                        rollout_id: Some(r.rollout_id),
                        on_candidate: since.is_some(),
                        candidate_image_present: self.prefetched.contains(h),
                        converged: !failing,
                        desired: 2,
                        healthy: if failing { 0 } else { 2 },
                        failing,
                        youngest_ns: since.or(Some(0)),
                    }),
                }
            })
            .collect()
    }

    /// One tick: the manager decides, the hosts apply, time passes.
    fn tick(&mut self, r: &mut FleetRollout, step: u64) -> bool {
        let obs = self.observations(r);
        let changed = r.advance(&Fleet {
            hosts: &obs,
            online_since_ns: self.now.saturating_sub(60 * S),
            now_ns: self.now,
        });
        self.apply(r);
        self.now += step;
        changed
    }

    fn run(&mut self, r: &mut FleetRollout, ticks: usize, step: u64) -> Vec<u32> {
        let mut thresholds = vec![];
        for _ in 0..ticks {
            self.tick(r, step);
            thresholds.push(r.cohort.threshold_bp);
            if r.phase.is_terminal() {
                break;
            }
        }
        thresholds
    }
}

#[test]
fn an_empty_policy_is_ten_percent_then_everyone_reverting_on_any_failure() {
    let p = policy(serde_json::json!({}));
    assert_eq!(p, FleetPolicy::default());
    let stages = p.stages().unwrap();
    assert_eq!(
        stages.iter().map(|s| s.kind.clone()).collect::<Vec<_>>(),
        [StageKind::Threshold(1_000), StageKind::Threshold(FULL)]
    );
    assert_eq!(p.on_failure, OnFailure::Revert);
    assert_eq!(p.min_healthy_seconds, 10);
}

#[test]
fn an_exponential_step_expands_up_to_its_end() {
    let p = policy(serde_json::json!({
        "canary_hosts": ["c1"],
        "steps": [{"exponential": {"start_percent": 1, "factor": 4, "until_percent": 50}, "soak_seconds": 5},
                  {"approval": true}]
    }));
    let kinds: Vec<StageKind> = p.stages().unwrap().into_iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            StageKind::Canary,
            StageKind::Threshold(100),
            StageKind::Threshold(400),
            StageKind::Threshold(1_600),
            StageKind::Threshold(5_000),
            StageKind::Approval,
            StageKind::Threshold(FULL),
        ]
    );
}

#[test]
fn bad_policies_name_the_field_and_the_rule() {
    let cases = [
        (
            serde_json::json!({"steps": [{"percent": 0}]}),
            "policy.steps[0].percent",
        ),
        (
            serde_json::json!({"steps": [{"percent": 101}]}),
            "policy.steps[0].percent",
        ),
        (
            serde_json::json!({"steps": [{"percent": 5, "count": 3}]}),
            "policy.steps[0]",
        ),
        (serde_json::json!({"steps": [{}]}), "policy.steps[0]"),
        (
            serde_json::json!({"steps": [{"percent": 50}, {"percent": 10}]}),
            "policy.steps[1].percent",
        ),
        (
            serde_json::json!({"steps": [{"exponential": {"start_percent": 1, "factor": 1}}]}),
            "policy.steps[0].exponential.factor",
        ),
        (
            serde_json::json!({"max_in_flight": 0}),
            "policy.max_in_flight",
        ),
        (
            serde_json::json!({"healthy_deadline_seconds": 0}),
            "policy.healthy_deadline_seconds",
        ),
        (
            serde_json::json!({"min_reported_percent": 120}),
            "policy.min_reported_percent",
        ),
        (
            serde_json::json!({"canary_hosts": ["has space"]}),
            "policy.canary_hosts",
        ),
        (
            serde_json::json!({"abort_if": {"min_hosts": 0}}),
            "policy.abort_if.min_hosts",
        ),
    ];
    for (json, field) in cases {
        let errors = policy(json.clone()).validate().unwrap_err();
        assert!(
            errors.iter().any(|e| e.field == field),
            "{json}: {errors:?}"
        );
    }
    assert!(serde_json::from_value::<FleetPolicy>(serde_json::json!({"stepz": []})).is_err());
}

#[test]
fn a_healthy_candidate_goes_canary_one_ten_hundred() {
    let mut r = rollout(policy(serde_json::json!({
        "canary_hosts": ["host-00007"],
        "steps": [{"percent": 1}, {"percent": 10}, {"percent": 100}],
        "min_healthy_seconds": 10
    })));
    let mut sim = Sim::new(1_000, Candidate::Good);
    let thresholds = sim.run(&mut r, 200, 5 * S);
    assert_eq!(r.phase, Phase::Succeeded, "{:?}", r.events);
    assert!(thresholds.windows(2).all(|w| w[0] <= w[1]));
    let steps: Vec<u32> = r.entries.iter().map(|e| e.threshold_bp).collect();
    assert_eq!(steps, [0, 100, 1_000, FULL]);
    assert_eq!(sim.ever.len(), 1_000);
    let events: Vec<&str> = r.events.iter().map(|e| e.what.as_str()).collect();
    assert!(events[1].contains("canary hosts host-00007"), "{events:?}");
}

#[test]
fn a_candidate_whose_containers_exit_is_reverted_after_the_first_step() {
    let mut r = rollout(policy(serde_json::json!({
        "canary_hosts": ["host-00003"],
        "steps": [{"percent": 1}, {"percent": 10}, {"percent": 100}]
    })));
    let mut sim = Sim::new(1_000, Candidate::Exits);
    sim.run(&mut r, 100, 5 * S);
    assert!(matches!(r.phase, Phase::Reverted { .. }), "{:?}", r.phase);
    // Only the canary ever ran it.
    assert_eq!(sim.ever, BTreeSet::from(["host-00003".to_owned()]));
    assert!(sim.on_candidate.is_empty(), "the canary went back");
}

#[test]
fn without_canaries_a_failing_first_step_keeps_the_rest_of_the_fleet_untouched() {
    let mut r = rollout(policy(serde_json::json!({"steps": [{"percent": 5}]})));
    let mut sim = Sim::new(1_000, Candidate::Exits);
    sim.run(&mut r, 100, 5 * S);
    assert!(matches!(r.phase, Phase::Reverted { .. }));
    let first = Cohort {
        salt: 42,
        threshold_bp: 500,
        canary_hosts: BTreeSet::new(),
    };
    assert!(!sim.ever.is_empty());
    assert!(
        sim.ever.iter().all(|h| first.includes(h)),
        "only the 5% step"
    );
}

#[test]
fn offline_hosts_do_not_fail_a_step_but_too_many_hold_it() {
    let mut r = rollout(policy(serde_json::json!({
        "steps": [{"percent": 50}], "min_reported_percent": 80, "progress_deadline_seconds": 60
    })));
    let mut sim = Sim::new(100, Candidate::Good);
    // A few offline hosts: the step still passes.
    sim.offline = sim.hosts.iter().take(5).cloned().collect();
    sim.run(&mut r, 100, 5 * S);
    assert_eq!(r.phase, Phase::Succeeded, "{:?}", r.events);

    let mut r = rollout(policy(serde_json::json!({
        "steps": [{"percent": 50}], "min_reported_percent": 80,
        "progress_deadline_seconds": 60, "on_failure": "pause"
    })));
    let mut sim = Sim::new(100, Candidate::Good);
    sim.offline = sim.hosts.iter().take(60).cloned().collect();
    sim.run(&mut r, 100, 5 * S);
    match &r.phase {
        Phase::Paused { reason } => assert!(reason.contains("healthy after 60 s"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(
        r.tally(&Fleet {
            hosts: &sim.observations(&r),
            online_since_ns: sim.now - 60 * S,
            now_ns: sim.now
        })
        .count(HostState::Failed)
            == 0
    );
}

#[test]
fn max_in_flight_takes_a_big_step_in_slices() {
    let mut r = rollout(policy(serde_json::json!({
        "steps": [{"percent": 100}], "max_in_flight": 10, "min_healthy_seconds": 0
    })));
    let mut sim = Sim::new(100, Candidate::Good);
    let mut most = 0;
    for _ in 0..200 {
        let before: BTreeSet<String> = sim.on_candidate.keys().cloned().collect();
        sim.tick(&mut r, S);
        let moved = sim
            .on_candidate
            .keys()
            .filter(|h| !before.contains(*h))
            .count();
        most = most.max(moved);
        if r.phase.is_terminal() {
            break;
        }
    }
    assert_eq!(r.phase, Phase::Succeeded, "{:?}", r.events);
    assert!(most <= 10, "{most} hosts switched at once");
    assert!(r.entries.len() >= 10, "{} slices", r.entries.len());
}

#[test]
fn a_fleet_pre_pull_finishes_before_any_host_switches() {
    let mut r = rollout(policy(serde_json::json!({
        "steps": [{"percent": 100}], "prefetch": {"mode": "fleet", "max_per_minute": 50}
    })));
    assert_eq!(r.phase, Phase::Prefetching);
    let mut sim = Sim::new(200, Candidate::Good);
    sim.tick(&mut r, S);
    let rule = r.rule().unwrap();
    assert_eq!(rule.prefetch_bp, FULL);
    assert_eq!(
        rule.prefetch_spread_seconds,
        4 * 60,
        "200 hosts at 50 a minute"
    );
    assert!(sim.on_candidate.is_empty());
    // Hosts hold the image only after a tick: no one switched before all of them did.
    while !r.phase.is_terminal() {
        let all_prefetched = sim.prefetched.len() == 200;
        sim.tick(&mut r, S);
        if !sim.on_candidate.is_empty() {
            assert!(all_prefetched);
        }
    }
    assert_eq!(r.phase, Phase::Succeeded);
}

#[test]
fn next_step_pre_pull_pulls_the_next_step_while_this_one_runs() {
    let mut r = rollout(policy(serde_json::json!({
        "steps": [{"percent": 10}, {"percent": 100}], "prefetch": {"mode": "next_step"},
        "min_healthy_seconds": 0
    })));
    let mut sim = Sim::new(200, Candidate::Good);
    sim.tick(&mut r, S);
    let rule = r.rule().unwrap();
    assert_eq!(rule.cohort.threshold_bp, 1_000);
    assert_eq!(rule.prefetch_bp, FULL);
    sim.run(&mut r, 100, S);
    assert_eq!(r.phase, Phase::Succeeded);
}

#[test]
fn approval_waits_for_a_promote_and_pause_resume_work() {
    let mut r = rollout(policy(serde_json::json!({
        "steps": [{"percent": 10}, {"approval": true}, {"percent": 100}], "min_healthy_seconds": 0
    })));
    let mut sim = Sim::new(100, Candidate::Good);
    sim.run(&mut r, 50, S);
    assert_eq!(r.phase, Phase::AwaitingApproval);
    assert_eq!(r.cohort.threshold_bp, 1_000);
    assert!(r.resume("user:a", sim.now).is_err());
    r.pause("user:a", sim.now).unwrap();
    assert!(r.pause("user:a", sim.now).is_err());
    sim.run(&mut r, 5, S);
    assert_eq!(r.cohort.threshold_bp, 1_000, "paused");
    r.resume("user:a", sim.now).unwrap();
    sim.run(&mut r, 5, S);
    // Resumed into the approval step again: still waits.
    assert_eq!(r.phase, Phase::AwaitingApproval, "{:?}", r.events);
    let obs = sim.observations(&r);
    r.promote(
        "user:a",
        false,
        &Fleet {
            hosts: &obs,
            online_since_ns: 0,
            now_ns: sim.now,
        },
    )
    .unwrap();
    sim.run(&mut r, 50, S);
    assert_eq!(r.phase, Phase::Succeeded);
    assert!(r.revert("user:a", sim.now).is_err(), "ended");
    assert!(
        r.events
            .iter()
            .any(|e| e.by == "user:a" && e.what.starts_with("promoted"))
    );
}

#[test]
fn a_user_revert_sends_the_moved_hosts_back() {
    let mut r = rollout(policy(
        serde_json::json!({"steps": [{"percent": 30}, {"approval": true}]}),
    ));
    let mut sim = Sim::new(300, Candidate::Good);
    sim.run(&mut r, 30, 5 * S);
    let moved = sim.on_candidate.len();
    assert!(moved > 50 && moved < 130, "{moved}");
    r.revert("user:b", sim.now).unwrap();
    sim.tick(&mut r, S);
    assert!(sim.on_candidate.is_empty());
    assert!(r.rule().is_none());
}

#[test]
fn a_soak_holds_the_next_step() {
    let mut r = rollout(policy(serde_json::json!({
        "steps": [{"percent": 10, "soak_seconds": 100}], "min_healthy_seconds": 0
    })));
    let mut sim = Sim::new(100, Candidate::Good);
    sim.run(&mut r, 10, S);
    assert!(matches!(r.phase, Phase::Soaking { .. }), "{:?}", r.phase);
    assert_eq!(r.cohort.threshold_bp, 1_000);
    sim.run(&mut r, 200, S);
    assert_eq!(r.phase, Phase::Succeeded);
}

#[test]
fn hosts_that_never_become_healthy_time_out_as_failures() {
    let mut r = rollout(policy(serde_json::json!({
        "steps": [{"percent": 50}], "healthy_deadline_seconds": 30
    })));
    let mut sim = Sim::new(50, Candidate::Good);
    // Hosts that never apply the rule: online, still on the stable spec.
    sim.tick(&mut r, S);
    for _ in 0..40 {
        let obs: Vec<HostObservation> = sim
            .hosts
            .iter()
            .map(|h| HostObservation {
                host: h.clone(),
                reported_ns: sim.now,
                app: Some(AppObservation::default()),
            })
            .collect();
        r.advance(&Fleet {
            hosts: &obs,
            online_since_ns: 0,
            now_ns: sim.now,
        });
        sim.now += S;
    }
    match &r.phase {
        Phase::Reverted { reason } => {
            assert!(reason.contains("not healthy within 30 s"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

fn app_with(rule: Option<CandidateRule>) -> App {
    App {
        app_name: AppName::parse("site").unwrap(),
        app_id: 1,
        incarnation: 1,
        restart_generation: 0,
        restart_mode: crate::model::RestartMode::AsConfigured,
        prune_generation: 0,
        spec: spec("site:1"),
        fleet_rollout: rule.map(Box::new),
    }
}

proptest! {
    #[test]
    fn a_revert_touches_exactly_the_hosts_that_moved(
        salt in any::<u64>(),
        threshold in 0..=FULL,
        canaries in proptest::collection::btree_set("[a-z]{1,3}", 0..4),
    ) {
        let rule = CandidateRule {
            rollout_id: 1,
            cohort: Cohort { salt, threshold_bp: threshold, canary_hosts: canaries.clone() },
            prefetch_bp: 0,
            prefetch_spread_seconds: 0,
            candidate: spec("site:2"),
        };
        let during = app_with(Some(rule.clone()));
        let after = app_with(None);
        let hosts: Vec<String> = (0..300).map(|i| format!("h{i}")).chain(canaries).collect();
        for h in &hosts {
            let touched = during.spec_for(h) != after.spec_for(h);
            prop_assert_eq!(touched, rule.runs_candidate(h));
        }
    }

}

proptest! {
    // Each case walks a whole rollout of 120 hosts: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_cohort_only_grows_while_a_rollout_runs(
        steps in proptest::collection::vec(1u32..=100, 1..5),
        fails in any::<bool>(),
        max_in_flight in proptest::option::of(1u32..30),
        offline in 0usize..12,
    ) {
        let mut steps = steps;
        steps.sort_unstable();
        let steps: Vec<serde_json::Value> =
            steps.iter().map(|p| serde_json::json!({"percent": p})).collect();
        let mut p = serde_json::json!({"steps": steps, "min_healthy_seconds": 0});
        if let Some(m) = max_in_flight {
            p["max_in_flight"] = m.into();
        }
        let mut r = rollout(policy(p));
        let mut sim = Sim::new(120, if fails { Candidate::Exits } else { Candidate::Good });
        sim.offline = sim.hosts.iter().take(offline).cloned().collect();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for _ in 0..400 {
            sim.tick(&mut r, S);
            if r.phase.is_terminal() {
                break;
            }
            let now: BTreeSet<String> = sim.on_candidate.keys().cloned().collect();
            prop_assert!(seen.is_subset(&now), "a host flipped back without a revert");
            seen = now;
        }
        prop_assert!(r.phase.is_terminal(), "{:?}", r.phase);
        if fails {
            prop_assert!(matches!(r.phase, Phase::Reverted { .. }), "{:?}", r.phase);
        } else {
            prop_assert_eq!(&r.phase, &Phase::Succeeded);
        }
    }
}

#[test]
fn a_fleet_of_which_no_host_reports_holds_the_rollout_at_its_first_step() {
    let mut r = rollout(policy(serde_json::json!({"steps": [{"percent": 10}]})));
    for t in 0..20 {
        r.advance(&Fleet {
            hosts: &[],
            online_since_ns: 0,
            now_ns: t * S,
        });
    }
    assert_eq!(r.phase, Phase::Rolling);
    assert_eq!(r.stage, 0);
}
