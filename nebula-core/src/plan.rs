//! The pure planner: one app's desired state + the containers observed -> the actions to take.
//!
//! # Guarantees
//! - A container whose spec hash matches and that runs is never touched (adoption after a
//!   worker restart falls out of this: there is no "clean slate" at boot).
//! - Replacing because the spec changed pulls first ([`Pull::Always`]) unless the app's
//!   `pull_policy` says otherwise; re-creating a missing container only pulls an image the
//!   engine lacks.
//! - In a rolling app, the number of desired slots that are down (missing, not yet healthy, or
//!   being replaced) never grows above the wave size because of this plan.
//! - Applying a plan and planning again, once new containers are healthy, gives no actions.

use std::collections::BTreeMap;

use crate::container::{
    ContainerId, ContainerSpec, ContainerState, Health, LABEL_SPEC_HASH, ObservedContainer,
    app_container,
};
use crate::model::{App, PullPolicy};
use crate::schedule::{HostResources, container_count, slot_of};

/// One step on one container.
#[allow(clippy::large_enum_variant)] // plans are short lists, built once
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Create and start a container.
    Create(ContainerSpec),
    /// Start a stopped container whose spec is current.
    Start {
        /// The container.
        id: ContainerId,
        /// Its name.
        name: String,
    },
    /// Restart a running container the engine reports unhealthy.
    Restart {
        /// The container.
        id: ContainerId,
        /// Its name.
        name: String,
    },
    /// Stop and remove a container, then create its successor under the same name.
    Replace {
        /// The container to remove.
        id: ContainerId,
        /// Its name.
        name: String,
        /// The successor.
        new: Box<ContainerSpec>,
    },
    /// Stop and remove a container.
    Remove {
        /// The container.
        id: ContainerId,
        /// Its name.
        name: String,
    },
}

/// Whether the image must be pulled before the plan runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pull {
    /// Nothing is created.
    Never,
    /// Pull only if the engine lacks the image (re-creating a container removed by hand).
    IfMissing,
    /// Pull even if present: the spec changed or a restart was asked ("deploy by re-tag").
    Always,
    /// Never pull: the app's `pull_policy` is `never`, so the image must be on the host.
    LocalOnly,
}

/// The plan for one app on one host.
#[derive(Clone, Debug, PartialEq)]
pub struct AppPlan {
    /// The actions, in slot order; independent of each other.
    pub actions: Vec<Action>,
    /// The image to pull before the actions, and how.
    pub pull: Pull,
    /// The image reference to pull.
    pub image: Option<String>,
    /// Plan again after this many seconds (a rollout waits for a wave to become healthy).
    pub requeue_after_secs: Option<u64>,
    /// What could not be planned, for the logs and reports.
    pub problems: Vec<String>,
}

impl AppPlan {
    fn empty() -> Self {
        Self {
            actions: Vec::new(),
            pull: Pull::Never,
            image: None,
            requeue_after_secs: None,
            problems: Vec::new(),
        }
    }

    /// Whether the plan changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Removes every container given (an app that was deleted, or left this worker's selection).
#[must_use]
pub fn plan_removal(observed: &[&ObservedContainer]) -> AppPlan {
    let mut plan = AppPlan::empty();
    plan.actions = observed
        .iter()
        .map(|c| Action::Remove {
            id: c.id.clone(),
            name: c.name.clone(),
        })
        .collect();
    plan
}

enum Slot<'a> {
    Missing,
    Current(&'a ObservedContainer),
    Outdated(&'a ObservedContainer),
}

/// Plans one app. `observed` holds the containers labelled with this app's name; `now` is in
/// unix seconds.
#[must_use]
pub fn plan_app(
    app: &App,
    host: HostResources,
    observed: &[&ObservedContainer],
    now: u64,
) -> AppPlan {
    if !app.spec.running {
        return plan_removal(observed);
    }
    let mut plan = AppPlan::empty();
    let count = container_count(app.spec.containers_per, host);
    let mut specs = Vec::with_capacity(count as usize);
    for slot in 1..=count {
        match app_container(app, slot) {
            Some(spec) => specs.push(spec),
            None => {
                plan.problems.push(format!(
                    "{}: only {} of {count} containers fit: host ports past 65535",
                    app.app_name,
                    slot - 1
                ));
                break;
            }
        }
    }

    // Pick at most one container per slot (the current one, running first); the rest go.
    let mut by_slot: BTreeMap<u32, &ObservedContainer> = BTreeMap::new();
    let mut extras = Vec::new();
    let rank = |c: &ObservedContainer, spec: &ContainerSpec| {
        (
            c.label(LABEL_SPEC_HASH) == Some(spec.hash()),
            c.state == ContainerState::Running,
        )
    };
    for c in observed {
        let slot = slot_of(app.app_name.as_str(), &c.name).filter(|s| (*s as usize) <= specs.len());
        let Some(slot) = slot else {
            extras.push(*c);
            continue;
        };
        let spec = &specs[slot as usize - 1];
        match by_slot.get(&slot) {
            Some(held) if rank(held, spec) >= rank(c, spec) => extras.push(*c),
            Some(held) => {
                extras.push(*held);
                by_slot.insert(slot, c);
            }
            None => {
                by_slot.insert(slot, c);
            }
        }
    }

    let min_healthy = u64::from(app.spec.rollout.min_healthy_seconds);
    let mut unavailable: u32 = 0;
    let mut wait_secs: Option<u64> = None;
    let mut outdated_running = Vec::new();
    let mut created = false;
    let mut spec_changed = false;
    let mut any_current = false;

    for (i, spec) in specs.iter().enumerate() {
        #[allow(clippy::cast_possible_truncation)]
        let slot_no = i as u32 + 1;
        let slot = match by_slot.get(&slot_no) {
            None => Slot::Missing,
            Some(c) if c.label(LABEL_SPEC_HASH) == Some(spec.hash()) => Slot::Current(c),
            Some(c) => Slot::Outdated(c),
        };
        match slot {
            Slot::Missing => {
                unavailable += 1;
                created = true;
                plan.actions.push(Action::Create(spec.clone()));
            }
            Slot::Current(c) => {
                any_current = true;
                match c.state {
                    ContainerState::Running => match c.health {
                        Health::Unhealthy => {
                            unavailable += 1;
                            plan.actions.push(Action::Restart {
                                id: c.id.clone(),
                                name: c.name.clone(),
                            });
                        }
                        Health::Starting => {
                            unavailable += 1;
                            wait_secs = Some(wait_secs.map_or(1, |w| w.min(1)));
                        }
                        Health::None | Health::Healthy => {
                            let age = now.saturating_sub(c.created_at);
                            // Creation times are whole seconds: only an age above the gate
                            // proves the container has lived `min_healthy` seconds.
                            if app.rolls() && min_healthy > 0 && age <= min_healthy {
                                unavailable += 1;
                                let left = min_healthy + 1 - age;
                                wait_secs = Some(wait_secs.map_or(left, |w| w.min(left)));
                            }
                        }
                    },
                    ContainerState::Created | ContainerState::Exited => {
                        unavailable += 1;
                        plan.actions.push(Action::Start {
                            id: c.id.clone(),
                            name: c.name.clone(),
                        });
                    }
                    ContainerState::Dead => {
                        unavailable += 1;
                        created = true;
                        plan.actions.push(Action::Replace {
                            id: c.id.clone(),
                            name: c.name.clone(),
                            new: Box::new(spec.clone()),
                        });
                    }
                    ContainerState::Paused
                    | ContainerState::Restarting
                    | ContainerState::Removing => {
                        unavailable += 1;
                    }
                }
            }
            Slot::Outdated(c) => {
                spec_changed = true;
                if c.state == ContainerState::Running {
                    outdated_running.push((c, spec));
                } else {
                    unavailable += 1;
                    plan.actions.push(Action::Replace {
                        id: c.id.clone(),
                        name: c.name.clone(),
                        new: Box::new(spec.clone()),
                    });
                }
            }
        }
    }

    let budget = if app.rolls() {
        (app.spec.rollout.wave_size.max(1)).saturating_sub(unavailable) as usize
    } else {
        usize::MAX
    };
    let held_back = outdated_running.len().saturating_sub(budget);
    for (c, spec) in outdated_running.into_iter().take(budget) {
        plan.actions.push(Action::Replace {
            id: c.id.clone(),
            name: c.name.clone(),
            new: Box::new(spec.clone()),
        });
    }
    for c in extras {
        plan.actions.push(Action::Remove {
            id: c.id.clone(),
            name: c.name.clone(),
        });
    }
    if held_back > 0 {
        // The next wave starts when this one is healthy; a new container needs the full gate.
        plan.requeue_after_secs = Some(wait_secs.unwrap_or(min_healthy + 1).max(1));
    }
    // Only the first wave of a change pulls for sure; later waves run what it pulled.
    plan.pull = match app.spec.pull_policy {
        _ if !spec_changed && !created => Pull::Never,
        PullPolicy::Never => Pull::LocalOnly,
        PullPolicy::IfMissing => Pull::IfMissing,
        PullPolicy::Always if spec_changed && !any_current => Pull::Always,
        PullPolicy::Always => Pull::IfMissing,
    };
    if plan.pull != Pull::Never {
        plan.image = specs.first().map(|s| s.image.clone());
    }
    plan
}

#[cfg(test)]
mod tests;
