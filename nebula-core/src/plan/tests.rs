use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::container::{LABEL_APP_NAME, LABEL_CONTAINER_TYPE, LABEL_ORCHESTRATOR, ORCHESTRATOR};
use crate::model::{AppName, AppSpec, ContainersPer, PullPolicy, RestartMode, StartingPort};

const HOST: HostResources = HostResources {
    cpus: 4,
    memory_mb: 8192,
};

fn app(count: u32, rolling: bool, wave: u32, min_healthy: u32) -> App {
    let mut spec = AppSpec::with_image("site:v1");
    spec.containers_per = ContainersPer::Server(count.max(1));
    spec.starting_ports = vec![StartingPort::Mapped {
        host: 8000,
        container: 80,
    }];
    spec.rolling_restart = rolling;
    spec.rollout.wave_size = wave;
    spec.rollout.min_healthy_seconds = min_healthy;
    App {
        app_name: AppName::parse("site").unwrap(),
        app_id: 1,
        incarnation: 1,
        restart_generation: 0,
        restart_mode: RestartMode::AsConfigured,
        prune_generation: 0,
        spec,
        fleet_rollout: None,
    }
}

/// A fake engine state the planner's actions are applied to.
#[derive(Default)]
struct World {
    containers: Vec<ObservedContainer>,
    next_id: u64,
}

impl World {
    fn container(&mut self, spec: &ContainerSpec, now: u64) -> ObservedContainer {
        self.next_id += 1;
        ObservedContainer {
            id: ContainerId(format!("c{}", self.next_id)),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            state: ContainerState::Running,
            health: Health::None,
            created_at: now,
        }
    }

    fn with_app(app: &App, now: u64) -> Self {
        let mut world = Self::default();
        for slot in 1..=container_count(app.spec.containers_per, HOST) {
            let c = world.container(&app_container(app, slot).unwrap(), now);
            world.containers.push(c);
        }
        world
    }

    fn apply(&mut self, plan: &AppPlan, now: u64) {
        for action in &plan.actions {
            match action {
                Action::Create(spec) => {
                    assert!(
                        !self.containers.iter().any(|c| c.name == spec.name),
                        "name taken: {}",
                        spec.name
                    );
                    let c = self.container(spec, now);
                    self.containers.push(c);
                }
                Action::Replace { id, new, .. } => {
                    self.containers.retain(|c| &c.id != id);
                    let c = self.container(new, now);
                    self.containers.push(c);
                }
                Action::Remove { id, .. } => self.containers.retain(|c| &c.id != id),
                Action::Start { id, .. } | Action::Restart { id, .. } => {
                    let c = self.containers.iter_mut().find(|c| &c.id == id).unwrap();
                    c.state = ContainerState::Running;
                    c.health = Health::None;
                    c.created_at = now;
                }
            }
        }
    }

    fn plan(&self, app: &App, now: u64) -> AppPlan {
        let refs: Vec<&ObservedContainer> = self.containers.iter().collect();
        plan_app(app, HOST, &refs, now)
    }

    /// Desired slots with no running container that serves traffic now.
    fn down(&self, app: &App, now: u64) -> u32 {
        let mut down = 0;
        for slot in 1..=container_count(app.spec.containers_per, HOST) {
            let spec = app_container(app, slot).unwrap();
            let serving = self.containers.iter().any(|c| {
                c.name == spec.name
                    && c.state == ContainerState::Running
                    && (c.label(LABEL_SPEC_HASH) != Some(spec.hash())
                        || now.saturating_sub(c.created_at)
                            >= u64::from(app.spec.rollout.min_healthy_seconds))
            });
            if !serving {
                down += 1;
            }
        }
        down
    }

    fn converged_on(&self, app: &App) -> bool {
        let n = container_count(app.spec.containers_per, HOST);
        self.containers.len() == n as usize
            && (1..=n).all(|slot| {
                let spec = app_container(app, slot).unwrap();
                self.containers.iter().any(|c| {
                    c.name == spec.name
                        && c.label(LABEL_SPEC_HASH) == Some(spec.hash())
                        && c.state == ContainerState::Running
                })
            })
    }
}

/// Runs plan/apply until the plan is empty; returns the steps taken and the final time.
fn converge(
    world: &mut World,
    app: &App,
    mut now: u64,
    mut check: impl FnMut(&World, u64),
) -> (usize, u64) {
    for step in 0..10_000 {
        let plan = world.plan(app, now);
        if plan.is_empty() && plan.requeue_after_secs.is_none() {
            return (step, now);
        }
        world.apply(&plan, now);
        check(world, now);
        now += plan.requeue_after_secs.unwrap_or(1);
    }
    panic!("did not converge");
}

#[test]
fn fresh_host_creates_every_slot_and_pulls_if_missing() {
    let app = app(3, false, 1, 5);
    let plan = World::default().plan(&app, 100);
    assert_eq!(plan.actions.len(), 3);
    assert!(plan.actions.iter().all(|a| matches!(a, Action::Create(_))));
    assert_eq!(plan.pull, Pull::IfMissing);
    assert_eq!(plan.image.as_deref(), Some("site:v1"));
}

#[test]
fn matching_containers_are_adopted_untouched() {
    let app = app(3, false, 1, 5);
    let world = World::with_app(&app, 0);
    let plan = world.plan(&app, 100);
    assert!(plan.is_empty(), "{plan:?}");
    assert_eq!(plan.pull, Pull::Never);
}

#[test]
fn env_change_replaces_all_at_once_and_pulls_first() {
    let old = app(3, false, 1, 5);
    let mut world = World::with_app(&old, 0);
    let mut new = old.clone();
    new.app_id = 2;
    new.spec.env_vars.insert("A".into(), "2".into());
    let plan = world.plan(&new, 100);
    assert_eq!(plan.pull, Pull::Always);
    assert_eq!(
        plan.actions
            .iter()
            .filter(|a| matches!(a, Action::Replace { .. }))
            .count(),
        3
    );
    world.apply(&plan, 100);
    assert!(world.converged_on(&new));
}

#[test]
fn start_and_stop_do_not_replace() {
    let app1 = app(2, false, 1, 5);
    let world = World::with_app(&app1, 0);
    let mut bumped = app1.clone();
    bumped.app_id = 5;
    assert!(world.plan(&bumped, 100).is_empty());
    bumped.spec.running = false;
    let plan = world.plan(&bumped, 100);
    assert_eq!(
        plan.actions
            .iter()
            .filter(|a| matches!(a, Action::Remove { .. }))
            .count(),
        2
    );
}

#[test]
fn restart_replaces_every_container() {
    let app1 = app(4, false, 1, 5);
    let mut world = World::with_app(&app1, 0);
    let mut restarted = app1.clone();
    restarted.restart_generation += 1;
    let plan = world.plan(&restarted, 100);
    assert_eq!(plan.pull, Pull::Always);
    assert_eq!(plan.actions.len(), 4);
    world.apply(&plan, 100);
    assert!(world.converged_on(&restarted));
}

#[test]
fn rolling_restart_with_twelve_containers_goes_one_at_a_time_in_slot_order() {
    let app1 = app(12, true, 1, 5);
    let mut world = World::with_app(&app1, 0);
    let mut rolled = app1.clone();
    rolled.restart_generation += 1;
    let mut order = Vec::new();
    let mut now = 100;
    loop {
        let plan = world.plan(&rolled, now);
        assert!(plan.actions.len() <= 1, "{plan:?}");
        for a in &plan.actions {
            if let Action::Replace { name, .. } = a {
                order.push(name.clone());
            }
        }
        world.apply(&plan, now);
        if plan.requeue_after_secs.is_none() && plan.is_empty() {
            break;
        }
        now += plan.requeue_after_secs.unwrap_or(1);
    }
    let want: Vec<String> = (1..=12).map(|i| format!("site-{i}")).collect();
    assert_eq!(order, want);
    assert!(world.converged_on(&rolled));
}

#[test]
fn rolling_scale_up_and_down() {
    let app1 = app(3, true, 1, 0);
    let mut world = World::with_app(&app1, 0);
    let mut bigger = app1.clone();
    bigger.spec.containers_per = ContainersPer::Server(11);
    converge(&mut world, &bigger, 10, |_, _| {});
    assert!(world.converged_on(&bigger));
    let mut smaller = bigger.clone();
    smaller.spec.containers_per = ContainersPer::Server(2);
    converge(&mut world, &smaller, 20, |_, _| {});
    assert!(world.converged_on(&smaller));
}

#[test]
fn unhealthy_is_restarted_and_stopped_is_started() {
    let app1 = app(2, false, 1, 0);
    let mut world = World::with_app(&app1, 0);
    world.containers[0].health = Health::Unhealthy;
    world.containers[1].state = ContainerState::Exited;
    let plan = world.plan(&app1, 10);
    assert!(matches!(plan.actions[0], Action::Restart { .. }));
    assert!(matches!(plan.actions[1], Action::Start { .. }));
    assert_eq!(plan.pull, Pull::Never);
}

#[test]
fn a_failed_wave_halts_the_rollout() {
    let app1 = app(4, true, 1, 0);
    let mut world = World::with_app(&app1, 0);
    let mut rolled = app1.clone();
    rolled.restart_generation += 1;
    let plan = world.plan(&rolled, 10);
    world.apply(&plan, 10);
    // The new container never becomes healthy: no further container is taken down.
    for c in &mut world.containers {
        if c.label(LABEL_SPEC_HASH) == Some(app_container(&rolled, 1).unwrap().hash()) {
            c.health = Health::Starting;
        }
    }
    for t in 11..20 {
        let plan = world.plan(&rolled, t);
        assert!(
            plan.actions
                .iter()
                .all(|a| !matches!(a, Action::Replace { .. })),
            "{plan:?}"
        );
    }
}

#[test]
fn strangers_and_duplicates_are_removed() {
    let app1 = app(2, false, 1, 0);
    let mut world = World::with_app(&app1, 0);
    let mut dup = world.containers[0].clone();
    dup.id = ContainerId("dup".into());
    dup.state = ContainerState::Exited;
    world.containers.push(dup);
    let mut odd = world.containers[0].clone();
    odd.id = ContainerId("odd".into());
    odd.name = "site-x".into();
    world.containers.push(odd);
    let plan = world.plan(&app1, 10);
    let removed: Vec<_> = plan
        .actions
        .iter()
        .filter_map(|a| {
            if let Action::Remove { id, .. } = a {
                Some(id.0.clone())
            } else {
                None
            }
        })
        .collect();
    assert_eq!(removed, ["dup", "odd"]);
}

fn arb_state() -> impl Strategy<Value = ContainerState> {
    prop_oneof![
        Just(ContainerState::Running),
        Just(ContainerState::Exited),
        Just(ContainerState::Created),
        Just(ContainerState::Dead),
    ]
}

fn arb_health() -> impl Strategy<Value = Health> {
    prop_oneof![
        Just(Health::None),
        Just(Health::Healthy),
        Just(Health::Unhealthy)
    ]
}

type RawContainer = (u32, bool, ContainerState, Health);

/// Observed containers: some of the old spec, some of the new, in random states, some extras.
fn arb_raw() -> impl Strategy<Value = Vec<RawContainer>> {
    proptest::collection::vec((1u32..16, any::<bool>(), arb_state(), arb_health()), 0..20)
}

fn build_world(raw: &[RawContainer], old: &App, new: &App) -> World {
    let mut world = World::default();
    for &(slot, is_new, state, health) in raw {
        let spec = app_container(if is_new { new } else { old }, slot).unwrap();
        let mut c = world.container(&spec, 0);
        c.state = state;
        c.health = if state == ContainerState::Running {
            health
        } else {
            Health::None
        };
        world.containers.push(c);
    }
    world
}

fn arb_apps() -> impl Strategy<Value = (App, App)> {
    (
        1u32..12,
        1u32..12,
        any::<bool>(),
        1u32..4,
        0u32..8,
        any::<bool>(),
    )
        .prop_map(|(n_old, n_new, rolling, wave, min_healthy, restart)| {
            let old = app(n_old, rolling, wave, min_healthy);
            let mut new = app(n_new, rolling, wave, min_healthy);
            new.app_id = 2;
            if restart {
                new.restart_generation = 1;
            } else {
                new.spec.env_vars.insert("V".into(), "2".into());
            }
            (old, new)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// From any observed state, plan/apply reaches the desired state and then plans nothing.
    #[test]
    fn replanning_after_convergence_is_empty((old, new) in arb_apps(), raw in arb_raw()) {
        let mut world = build_world(&raw, &old, &new);
        let (_, end) = converge(&mut world, &new, 100, |_, _| {});
        prop_assert!(world.converged_on(&new));
        for later in [end, end + 1, end + 3600] {
            let plan = world.plan(&new, later);
            prop_assert!(plan.is_empty(), "{:?}", plan);
            prop_assert_eq!(plan.pull, Pull::Never);
        }
    }

    /// A rolling change never has more than the wave size of slots down at once.
    #[test]
    fn rolling_never_exceeds_the_wave(n in 1u32..16, wave in 1u32..5, min_healthy in 0u32..10, restart in any::<bool>()) {
        let old = app(n, true, wave, min_healthy);
        let mut new = old.clone();
        new.app_id = 2;
        if restart { new.restart_generation = 1 } else { new.spec.docker_image = "site:v2".into() }
        let mut world = World::with_app(&old, 0);
        let start = 1000;
        prop_assert_eq!(world.down(&new, start), 0);
        let mut worst = 0;
        converge(&mut world, &new, start, |w, now| worst = worst.max(w.down(&new, now)));
        prop_assert!(worst <= wave, "{} down with wave {}", worst, wave);
        prop_assert!(world.converged_on(&new));
    }

    /// A running container of the current spec is never the target of an action.
    #[test]
    fn current_running_containers_are_never_touched((old, new) in arb_apps()) {
        let mut world = World::with_app(&old, 0);
        let mut keep = World::with_app(&new, 0);
        // Half the slots already run the new spec.
        for c in keep.containers.iter_mut().step_by(2) {
            c.id = ContainerId(format!("keep-{}", c.name));
            world.containers.retain(|o| o.name != c.name);
            world.containers.push(c.clone());
        }
        let plan = world.plan(&new, 10_000);
        for a in &plan.actions {
            let id = match a {
                Action::Start { id, .. } | Action::Restart { id, .. } | Action::Replace { id, .. } | Action::Remove { id, .. } => id,
                Action::Create(_) => continue,
            };
            let slot = slot_of("site", &world.containers.iter().find(|c| &c.id == id).unwrap().name).unwrap_or(0);
            let within = slot <= container_count(new.spec.containers_per, HOST);
            prop_assert!(!(id.0.starts_with("keep-") && within), "touched {:?}", a);
        }
    }
}

#[test]
fn stopped_app_removes_everything_and_never_pulls() {
    let mut app1 = app(3, false, 1, 0);
    let world = World::with_app(&app1, 0);
    app1.spec.running = false;
    let plan = world.plan(&app1, 10);
    assert_eq!(plan.actions.len(), 3);
    assert_eq!(plan.pull, Pull::Never);
}

#[test]
fn host_port_overflow_is_a_problem_not_a_crash() {
    let mut app1 = app(1, false, 1, 0);
    app1.spec.starting_ports = vec![StartingPort::Same(65534)];
    app1.spec.containers_per = ContainersPer::Cpu(1.0);
    let plan = World::default().plan(&app1, 0);
    assert_eq!(plan.actions.len(), 2);
    assert_eq!(plan.problems.len(), 1);
}

#[test]
fn labels_identify_the_app() {
    let spec = app_container(&app(1, false, 1, 0), 1).unwrap();
    let want: BTreeMap<&str, &str> = [
        (LABEL_ORCHESTRATOR, ORCHESTRATOR),
        (LABEL_APP_NAME, "site"),
        (LABEL_CONTAINER_TYPE, "app"),
    ]
    .into();
    for (k, v) in want {
        assert_eq!(spec.labels[k], v);
    }
}

#[test]
fn the_health_gate_counts_whole_seconds_conservatively() {
    // Created at second 10 means anywhere in [10, 11): at second 11 it may have lived only a
    // moment, so a 1 s gate holds until second 12.
    let old = app(2, true, 1, 1);
    let mut new = old.clone();
    new.restart_generation = 1;
    let mut world = World::with_app(&old, 0);
    let first = world.plan(&new, 10);
    world.apply(&first, 10);
    let at_11 = world.plan(&new, 11);
    assert!(at_11.actions.is_empty(), "{at_11:?}");
    assert_eq!(at_11.requeue_after_secs, Some(1));
    assert_eq!(world.plan(&new, 12).actions.len(), 1);
}

#[test]
fn pull_policy_decides_how_a_change_pulls() {
    let old = app(3, false, 1, 5);
    let world = World::with_app(&old, 0);
    let mut new = old.clone();
    new.app_id = 2;
    new.spec.env_vars.insert("A".into(), "2".into());
    for (policy, pull) in [
        (PullPolicy::Always, Pull::Always),
        (PullPolicy::IfMissing, Pull::IfMissing),
        (PullPolicy::Never, Pull::LocalOnly),
    ] {
        new.spec.pull_policy = policy;
        let plan = world.plan(&new, 100);
        assert_eq!(
            (plan.pull, plan.image.as_deref()),
            (pull, Some("site:v1")),
            "{policy:?}"
        );
        // A fresh host under the same policy.
        let fresh = World::default().plan(&new, 100);
        let want = if policy == PullPolicy::Never {
            Pull::LocalOnly
        } else {
            Pull::IfMissing
        };
        assert_eq!(fresh.pull, want, "{policy:?} on a fresh host");
    }
    // With nothing to create, no policy pulls.
    for policy in [PullPolicy::Always, PullPolicy::IfMissing, PullPolicy::Never] {
        let mut same = old.clone();
        same.spec.pull_policy = policy;
        let plan = world.plan(&same, 100);
        assert_eq!((plan.pull, plan.image), (Pull::Never, None), "{policy:?}");
    }
}

#[test]
fn a_container_removed_by_hand_is_recreated_without_asking_the_registry() {
    let app1 = app(3, false, 1, 5);
    let mut world = World::with_app(&app1, 0);
    world.containers.remove(1);
    let plan = world.plan(&app1, 100);
    assert_eq!(plan.actions.len(), 1);
    assert_eq!(plan.pull, Pull::IfMissing);
}
