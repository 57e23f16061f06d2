//! Fleet rollouts: moving an app from its stable spec to a candidate spec host by host, in
//! stages gated by the hosts' own reports, with an automatic revert.
//!
//! The whole state of a rollout is one stored document ([`FleetRollout`]); what the fleet sees
//! of it is one [`CandidateRule`] inside the app's document (both specs, a threshold, the
//! canaries), so a stage costs one message and one `/info` state, whatever the fleet's size.
//! Each host decides for itself whether it runs the candidate ([`crate::cohort`]).
//!
//! Everything here is pure: [`FleetRollout::advance`] takes the hosts as their reports show
//! them ([`HostObservation`]) and the time, and returns what changed. The manager stores the
//! result with compare-and-swap (so two managers never both advance a rollout) and then
//! brings the app's rule in line with it (`manager::rollouts`).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::cohort::{Cohort, FULL, bucket};
use crate::model::{AppName, AppSpec, CandidateRule};

pub mod policy;
#[cfg(test)]
mod tests;

pub use policy::{FleetPolicy, OnFailure, PrefetchMode, Stage, StageKind};

/// Most events a rollout keeps (the oldest go first).
pub const MAX_EVENTS: usize = 200;

const NS: u64 = 1_000_000_000;

/// Where a rollout is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Phase {
    /// Hosts pull the candidate's image before any of them switches.
    Prefetching,
    /// The current stage's hosts switch; waiting for them to be healthy.
    Rolling,
    /// The current stage's hosts are healthy; waiting out the soak time.
    Soaking {
        /// When the soak began (unix ns).
        since_ns: u64,
    },
    /// Waiting for a promote.
    AwaitingApproval,
    /// Stopped until resumed, promoted or reverted.
    Paused {
        /// Why: who paused it, or which gate failed.
        reason: String,
    },
    /// Every host runs the candidate; it is now the app's spec.
    Succeeded,
    /// Every host that moved went back to the stable spec.
    Reverted {
        /// Why.
        reason: String,
    },
}

impl Phase {
    /// Whether the rollout has ended.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Reverted { .. })
    }

    /// The state's name, as the API shows it.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Prefetching => "prefetching",
            Self::Rolling => "rolling",
            Self::Soaking { .. } => "soaking",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Paused { .. } => "paused",
            Self::Succeeded => "succeeded",
            Self::Reverted { .. } => "reverted",
        }
    }
}

/// One thing that happened to a rollout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEvent {
    /// When (unix ns).
    pub at_ns: u64,
    /// Who: `user:<name>` for a call, `nebula` for the gates.
    pub by: String,
    /// What, in words.
    pub what: String,
}

/// When a host entered the cohort: the threshold a stage set and when it set it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The threshold (basis points); the canaries enter with the first entry.
    pub threshold_bp: u32,
    /// When (unix ns).
    pub at_ns: u64,
}

/// A fleet rollout as stored: one per app (the last one, active or ended), keyed by the app's
/// name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetRollout {
    /// The app it moves.
    pub app_name: AppName,
    /// 1 for an app's first rollout, +1 for each later one.
    pub rollout_id: u64,
    /// The incarnation of the app it moves: a deleted and re-created app ends it.
    pub app_incarnation: u64,
    /// The spec hosts leave.
    pub stable: AppSpec,
    /// The spec hosts move to.
    pub candidate: AppSpec,
    /// How it proceeds.
    pub policy: FleetPolicy,
    /// The policy's stages.
    pub stages: Vec<Stage>,
    /// The current stage.
    pub stage: usize,
    /// Where it is.
    #[serde(flatten)]
    pub phase: Phase,
    /// Which hosts run the candidate now.
    pub cohort: Cohort,
    /// Hosts under this threshold pull the candidate's image ahead.
    pub prefetch_bp: u32,
    /// How long a pre-pulling host may wait before its pull (the pace).
    pub prefetch_spread_seconds: u32,
    /// When each threshold was set (for each host's deadline).
    pub entries: Vec<Entry>,
    /// When the current stage began (unix ns).
    pub stage_started_ns: u64,
    /// When the rollout began (unix ns).
    pub started_ns: u64,
    /// When it ended (unix ns).
    #[serde(default)]
    pub ended_ns: Option<u64>,
    /// Who started it.
    pub started_by: String,
    /// What happened, oldest first, at most [`MAX_EVENTS`].
    pub events: VecDeque<RolloutEvent>,
}

/// A host as its last report shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostObservation {
    /// The host's name (the report's `hostname`).
    pub host: String,
    /// When its last report was made (unix ns).
    pub reported_ns: u64,
    /// How it runs the app, when its report lists the app.
    pub app: Option<AppObservation>,
}

/// How a host runs the app, from its report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppObservation {
    /// The rollout whose rule the host applied, if any.
    pub rollout_id: Option<u64>,
    /// Whether the host runs the candidate.
    pub on_candidate: bool,
    /// Whether the host holds the candidate's image.
    pub candidate_image_present: bool,
    /// Whether the host's containers match what it should run.
    pub converged: bool,
    /// Containers desired for the app on the host.
    pub desired: u32,
    /// Of those, running (and healthy, with a HEALTHCHECK).
    pub healthy: u32,
    /// A container exited, died or is unhealthy.
    pub failing: bool,
    /// The start of the youngest of its running containers (unix ns).
    pub youngest_ns: Option<u64>,
}

/// What a host is doing in a rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Not in the cohort: runs the stable spec.
    Stable,
    /// Not in the cohort yet, and holds the candidate's image.
    Prefetched,
    /// In the cohort; switching or not healthy for long enough yet.
    Updating,
    /// In the cohort, on the candidate and healthy.
    Healthy,
    /// In the cohort and its candidate containers fail.
    Failed,
    /// In the cohort and not healthy within the healthy deadline.
    TimedOut,
    /// No report recently: not counted either way.
    Offline,
}

impl HostState {
    /// Every state, in the order the API lists them.
    pub const ALL: [Self; 7] = [
        Self::Stable,
        Self::Prefetched,
        Self::Updating,
        Self::Healthy,
        Self::Failed,
        Self::TimedOut,
        Self::Offline,
    ];

    /// The state's name, as the API shows it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Prefetched => "prefetched",
            Self::Updating => "updating",
            Self::Healthy => "healthy",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Offline => "offline",
        }
    }

    /// The state named `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The hosts by state, and the cohort's share of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// How many hosts are in each state.
    pub hosts: BTreeMap<HostState, usize>,
    /// Hosts in the cohort (reporting or not).
    pub cohort: usize,
    /// Hosts in the cohort that report.
    pub cohort_reporting: usize,
    /// Hosts known (reporting or not, canaries included).
    pub known: usize,
}

impl Tally {
    /// How many hosts are in `state`.
    #[must_use]
    pub fn count(&self, state: HostState) -> usize {
        self.hosts.get(&state).copied().unwrap_or(0)
    }

    fn failed(&self) -> usize {
        self.count(HostState::Failed) + self.count(HostState::TimedOut)
    }
}

/// The hosts a decision looks at, and when a report counts as recent.
#[derive(Clone, Copy, Debug)]
pub struct Fleet<'a> {
    /// Every host that reported within the report TTL.
    pub hosts: &'a [HostObservation],
    /// Reports older than this (unix ns) mean the host is offline.
    pub online_since_ns: u64,
    /// Now (unix ns).
    pub now_ns: u64,
}

/// Why a command on a rollout was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The rollout has ended.
    #[error("fleet rollout {0} has ended ({1})")]
    Ended(u64, &'static str),
    /// The command does not apply in the rollout's state.
    #[error("fleet rollout {id} is {state}: {what}")]
    NotNow {
        /// The rollout.
        id: u64,
        /// Its state.
        state: &'static str,
        /// What could be done instead.
        what: &'static str,
    },
}

impl FleetRollout {
    /// A new rollout of `app` (at `incarnation`) from `stable` to `candidate`.
    ///
    /// # Errors
    /// The policy's rules.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        app_name: AppName,
        rollout_id: u64,
        app_incarnation: u64,
        stable: AppSpec,
        candidate: AppSpec,
        policy: FleetPolicy,
        salt: u64,
        by: &str,
        now_ns: u64,
    ) -> Result<Self, Vec<crate::field::FieldError>> {
        policy.validate()?;
        let stages = policy.stages().map_err(|e| vec![e])?;
        let phase = if policy.prefetch.mode == PrefetchMode::Fleet {
            Phase::Prefetching
        } else {
            Phase::Rolling
        };
        let mut rollout = Self {
            app_name,
            rollout_id,
            app_incarnation,
            stable,
            candidate,
            stages,
            stage: 0,
            phase,
            cohort: Cohort {
                salt,
                threshold_bp: 0,
                canary_hosts: policy.canary_hosts.clone(),
            },
            policy,
            prefetch_bp: 0,
            prefetch_spread_seconds: 0,
            entries: Vec::new(),
            stage_started_ns: now_ns,
            started_ns: now_ns,
            ended_ns: None,
            started_by: by.to_owned(),
            events: VecDeque::new(),
        };
        rollout.note(
            now_ns,
            by,
            format!("started: {} steps", rollout.stages.len()),
        );
        Ok(rollout)
    }

    fn note(&mut self, at_ns: u64, by: &str, what: String) {
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(RolloutEvent {
            at_ns,
            by: by.to_owned(),
            what,
        });
    }

    /// The rule the app's document carries while the rollout runs; `None` once it ended.
    #[must_use]
    pub fn rule(&self) -> Option<CandidateRule> {
        if self.phase.is_terminal() {
            return None;
        }
        Some(CandidateRule {
            rollout_id: self.rollout_id,
            cohort: self.started_cohort(),
            prefetch_bp: self.prefetch_bp.max(self.cohort.threshold_bp),
            prefetch_spread_seconds: self.prefetch_spread_seconds,
            candidate: self.candidate.clone(),
        })
    }

    /// The cohort as the fleet sees it: the canaries only once their stage began.
    fn started_cohort(&self) -> Cohort {
        if self.entries.is_empty() {
            Cohort {
                canary_hosts: Default::default(),
                ..self.cohort.clone()
            }
        } else {
            self.cohort.clone()
        }
    }

    /// Whether `host` should run the candidate now.
    #[must_use]
    pub fn runs_candidate(&self, host: &str) -> bool {
        !self.phase.is_terminal() && self.started_cohort().includes(host)
    }

    /// When `host` entered the cohort (unix ns), if it did.
    fn entered_ns(&self, host: &str) -> Option<u64> {
        if !self.runs_candidate(host) {
            return None;
        }
        let first = self.entries.first()?.at_ns;
        if self.cohort.canary_hosts.contains(host) {
            return Some(first);
        }
        let b = bucket(self.cohort.salt, host);
        self.entries
            .iter()
            .find(|e| b < e.threshold_bp)
            .map(|e| e.at_ns)
            .or(Some(first))
    }

    /// What `host` is doing, as `observed`.
    #[must_use]
    pub fn host_state(&self, observed: &HostObservation, fleet: &Fleet<'_>) -> HostState {
        if observed.reported_ns < fleet.online_since_ns {
            return HostState::Offline;
        }
        // What the host says of this rollout (not of an earlier one).
        let app = observed
            .app
            .as_ref()
            .filter(|a| a.rollout_id == Some(self.rollout_id));
        let Some(entered) = self.entered_ns(&observed.host) else {
            return if app.is_some_and(|a| a.candidate_image_present) {
                HostState::Prefetched
            } else {
                HostState::Stable
            };
        };
        if let Some(a) = app.filter(|a| a.on_candidate) {
            if a.failing {
                return HostState::Failed;
            }
            let ripe = a.youngest_ns.is_some_and(|y| {
                y.saturating_add(self.policy.min_healthy_seconds * NS) <= observed.reported_ns
            });
            if a.converged && a.healthy >= a.desired && (ripe || a.desired == 0) {
                return HostState::Healthy;
            }
        }
        if fleet.now_ns.saturating_sub(entered) > self.policy.healthy_deadline_seconds * NS {
            HostState::TimedOut
        } else {
            HostState::Updating
        }
    }

    /// Every known host with its state, sorted by name: those that report, and the named
    /// canaries that do not (offline).
    #[must_use]
    pub fn host_states(&self, fleet: &Fleet<'_>) -> Vec<(String, HostState)> {
        let mut states: BTreeMap<String, HostState> = fleet
            .hosts
            .iter()
            .map(|h| (h.host.clone(), self.host_state(h, fleet)))
            .collect();
        for canary in &self.cohort.canary_hosts {
            states.entry(canary.clone()).or_insert(HostState::Offline);
        }
        states.into_iter().collect()
    }

    /// The hosts by state.
    #[must_use]
    pub fn tally(&self, fleet: &Fleet<'_>) -> Tally {
        let mut tally = Tally::default();
        for (host, state) in self.host_states(fleet) {
            *tally.hosts.entry(state).or_default() += 1;
            tally.known += 1;
            if self.runs_candidate(&host) {
                tally.cohort += 1;
                if state != HostState::Offline {
                    tally.cohort_reporting += 1;
                }
            }
        }
        tally
    }

    /// Moves the rollout on as far as the hosts allow at `fleet.now_ns`; returns whether
    /// anything changed (then the result is to be stored, and the app's rule follows it).
    pub fn advance(&mut self, fleet: &Fleet<'_>) -> bool {
        let mut changed = false;
        // A few passes: an empty stage passes at once, and the next may too.
        for _ in 0..=self.stages.len() + 1 {
            if !self.step_once(fleet) {
                break;
            }
            changed = true;
        }
        changed
    }

    fn step_once(&mut self, fleet: &Fleet<'_>) -> bool {
        let now = fleet.now_ns;
        match self.phase.clone() {
            Phase::Succeeded | Phase::Reverted { .. } | Phase::Paused { .. } => false,
            Phase::AwaitingApproval => false,
            Phase::Prefetching => {
                if self.prefetch_bp < FULL {
                    self.prefetch_bp = FULL;
                    self.prefetch_spread_seconds = self.spread_for(fleet.hosts.len());
                    self.note(
                        now,
                        "nebula",
                        "pre-pull: every host pulls the candidate's image".into(),
                    );
                    return true;
                }
                let tally = self.tally(fleet);
                let reporting = tally.known - tally.count(HostState::Offline);
                if reporting > 0 && tally.count(HostState::Prefetched) == reporting {
                    self.phase = Phase::Rolling;
                    self.stage_started_ns = now;
                    self.note(
                        now,
                        "nebula",
                        format!("pre-pull done on {reporting} reporting hosts"),
                    );
                    return true;
                }
                if self.past_progress_deadline(now) {
                    return self.fail(
                        now,
                        format!(
                            "pre-pull: {} of {reporting} reporting hosts hold the image after {} s",
                            tally.count(HostState::Prefetched),
                            self.policy.progress_deadline_seconds
                        ),
                    );
                }
                false
            }
            Phase::Rolling => {
                if self.entries.is_empty() && !self.stages.is_empty() {
                    return self.enter_stage(fleet);
                }
                let tally = self.tally(fleet);
                if let Some(reason) = self.failure(&tally) {
                    return self.fail(now, reason);
                }
                if self.gate_passes(&tally) && self.stage_reached(fleet) {
                    let soak = self.stages.get(self.stage).map_or(0, |s| s.soak_seconds);
                    if soak > 0 {
                        self.phase = Phase::Soaking { since_ns: now };
                        self.note(
                            now,
                            "nebula",
                            format!("step {}: healthy; soaking {soak} s", self.stage + 1),
                        );
                        return true;
                    }
                    return self.next_stage(fleet);
                }
                // Healthy but capped by max_in_flight or waiting for pre-pulls: the next slice.
                if self.gate_passes(&tally) && self.grow(fleet) {
                    return true;
                }
                if self.past_progress_deadline(now) {
                    return self.fail(
                        now,
                        format!(
                            "step {}: {} of {} reporting hosts healthy after {} s",
                            self.stage + 1,
                            tally.count(HostState::Healthy),
                            tally.cohort_reporting,
                            self.policy.progress_deadline_seconds
                        ),
                    );
                }
                false
            }
            Phase::Soaking { since_ns } => {
                let tally = self.tally(fleet);
                if let Some(reason) = self.failure(&tally) {
                    return self.fail(now, reason);
                }
                let soak = self.stages.get(self.stage).map_or(0, |s| s.soak_seconds);
                if now.saturating_sub(since_ns) >= soak * NS {
                    return self.next_stage(fleet);
                }
                false
            }
        }
    }

    fn past_progress_deadline(&self, now: u64) -> bool {
        now.saturating_sub(self.stage_started_ns) > self.policy.progress_deadline_seconds * NS
    }

    /// Why the gates say the candidate fails, if they do.
    fn failure(&self, tally: &Tally) -> Option<String> {
        let failed = tally.failed();
        let limit = &self.policy.abort_if;
        let over_share =
            (failed as f64) * 100.0 > limit.failed_percent * (tally.cohort_reporting.max(1) as f64);
        (failed >= limit.min_hosts as usize && over_share).then(|| {
            format!(
                "{failed} of {} reporting hosts on the candidate failed ({} failing, {} not healthy within {} s)",
                tally.cohort_reporting,
                tally.count(HostState::Failed),
                tally.count(HostState::TimedOut),
                self.policy.healthy_deadline_seconds
            )
        })
    }

    /// Whether the current cohort is healthy enough to go on: enough of it reports, and
    /// every reporting host is healthy; and some host of the fleet reports at all.
    fn gate_passes(&self, tally: &Tally) -> bool {
        // A fleet of which no host reports gives no verdict: wait (a step of a small fleet
        // may be empty, a fleet that says nothing may not).
        if tally.known == tally.count(HostState::Offline) {
            return false;
        }
        let reported_ok = (tally.cohort_reporting as f64) * 100.0
            >= self.policy.min_reported_percent * (tally.cohort as f64);
        reported_ok && tally.count(HostState::Healthy) == tally.cohort_reporting
    }

    /// The threshold the current stage aims at.
    fn stage_target(&self, fleet: &Fleet<'_>) -> u32 {
        self.target_of(self.stage, fleet)
    }

    /// The threshold stage `stage` aims at, from where the cohort is now.
    fn target_of(&self, stage: usize, fleet: &Fleet<'_>) -> u32 {
        match self.stages.get(stage).map(|s| &s.kind) {
            Some(StageKind::Threshold(bp)) => (*bp).max(self.cohort.threshold_bp),
            Some(StageKind::Count(n)) => {
                let known = self.known_hosts(fleet);
                let inside = known.iter().filter(|h| self.cohort.includes(h)).count();
                self.cohort
                    .threshold_adding(&known, (*n as usize).saturating_sub(inside))
            }
            _ => self.cohort.threshold_bp,
        }
    }

    fn known_hosts<'f>(&self, fleet: &'f Fleet<'_>) -> Vec<&'f str> {
        fleet.hosts.iter().map(|h| h.host.as_str()).collect()
    }

    /// Whether the cohort reached the current stage's target.
    fn stage_reached(&self, fleet: &Fleet<'_>) -> bool {
        self.cohort.threshold_bp >= self.stage_target(fleet)
    }

    /// Starts the current stage (or the first).
    fn enter_stage(&mut self, fleet: &Fleet<'_>) -> bool {
        let now = fleet.now_ns;
        self.stage_started_ns = now;
        match self.stages.get(self.stage).map(|s| s.kind.clone()) {
            None => self.succeed(now),
            Some(StageKind::Approval) => {
                self.phase = Phase::AwaitingApproval;
                self.note(
                    now,
                    "nebula",
                    format!("step {}: waiting for a promote", self.stage + 1),
                );
                true
            }
            Some(StageKind::Canary) => {
                self.entries.push(Entry {
                    threshold_bp: self.cohort.threshold_bp,
                    at_ns: now,
                });
                self.phase = Phase::Rolling;
                let hosts: Vec<&str> = self
                    .cohort
                    .canary_hosts
                    .iter()
                    .map(String::as_str)
                    .collect();
                self.note(
                    now,
                    "nebula",
                    format!("step {}: canary hosts {}", self.stage + 1, hosts.join(", ")),
                );
                self.set_prefetch(fleet);
                true
            }
            Some(_) => {
                self.phase = Phase::Rolling;
                if self.entries.is_empty() {
                    self.entries.push(Entry {
                        threshold_bp: 0,
                        at_ns: now,
                    });
                }
                self.grow(fleet);
                true
            }
        }
    }

    /// Raises the threshold toward the stage's target, by at most `max_in_flight` hosts
    /// not yet healthy, and only over hosts that hold the image when pre-pull asks it.
    fn grow(&mut self, fleet: &Fleet<'_>) -> bool {
        let now = fleet.now_ns;
        let target = self.stage_target(fleet);
        let mut next = target;
        if let Some(max) = self.policy.max_in_flight {
            let tally = self.tally(fleet);
            let in_flight = tally.count(HostState::Updating);
            let room = (max as usize).saturating_sub(in_flight);
            let known = self.known_hosts(fleet);
            let outside = known.iter().filter(|h| !self.cohort.includes(h)).count();
            if room == 0 {
                next = self.cohort.threshold_bp;
            } else if room < outside {
                // Hosts the manager does not know yet fall in by their bucket.
                next = next.min(self.cohort.threshold_adding(&known, room));
            }
        }
        if self.policy.prefetch.mode != PrefetchMode::Off && next > self.cohort.threshold_bp {
            // Only as far as the first reporting host that was asked to pull and lacks the
            // image.
            let asked = Cohort {
                threshold_bp: self.prefetch_bp,
                ..self.cohort.clone()
            };
            let mut lacking: Vec<u32> = fleet
                .hosts
                .iter()
                .filter(|h| asked.includes(&h.host))
                .filter(|h| {
                    h.reported_ns >= fleet.online_since_ns && !self.cohort.includes(&h.host)
                })
                .filter(|h| !h.app.as_ref().is_some_and(|a| a.candidate_image_present))
                .map(|h| bucket(self.cohort.salt, &h.host))
                .filter(|b| *b < next)
                .collect();
            lacking.sort_unstable();
            if let Some(first) = lacking.first() {
                next = (*first).max(self.cohort.threshold_bp);
            }
        }
        if next <= self.cohort.threshold_bp {
            self.set_prefetch(fleet);
            return false;
        }
        self.cohort.threshold_bp = next;
        self.entries.push(Entry {
            threshold_bp: next,
            at_ns: now,
        });
        self.note(
            now,
            "nebula",
            format!(
                "step {}: {}% of the fleet on the candidate",
                self.stage + 1,
                f64::from(next) / 100.0
            ),
        );
        self.set_prefetch(fleet);
        true
    }

    /// With pre-pull per step, the next stage's hosts pull while this one runs.
    fn set_prefetch(&mut self, fleet: &Fleet<'_>) {
        if self.policy.prefetch.mode != PrefetchMode::NextStep {
            return;
        }
        // The first stage from here that takes in more hosts.
        let ahead = (self.stage..self.stages.len())
            .map(|stage| self.target_of(stage, fleet))
            .find(|bp| *bp > self.cohort.threshold_bp)
            .unwrap_or(self.cohort.threshold_bp);
        if ahead > self.prefetch_bp {
            let more = fleet
                .hosts
                .iter()
                .filter(|h| {
                    let b = bucket(self.cohort.salt, &h.host);
                    b >= self.prefetch_bp && b < ahead
                })
                .count();
            self.prefetch_bp = ahead;
            self.prefetch_spread_seconds = self.spread_for(more);
        }
    }

    /// How long `hosts` pulls take at the policy's pace.
    fn spread_for(&self, hosts: usize) -> u32 {
        self.policy.prefetch.max_per_minute.map_or(0, |per_minute| {
            let minutes = hosts.div_ceil(per_minute.max(1) as usize);
            u32::try_from(minutes * 60).unwrap_or(u32::MAX)
        })
    }

    fn next_stage(&mut self, fleet: &Fleet<'_>) -> bool {
        self.stage += 1;
        if self.stage >= self.stages.len() {
            return self.succeed(fleet.now_ns);
        }
        self.phase = Phase::Rolling;
        self.enter_stage(fleet)
    }

    fn succeed(&mut self, now: u64) -> bool {
        self.phase = Phase::Succeeded;
        self.cohort.threshold_bp = FULL;
        self.ended_ns = Some(now);
        self.note(
            now,
            "nebula",
            "succeeded: the candidate is the app's spec".into(),
        );
        true
    }

    fn fail(&mut self, now: u64, reason: String) -> bool {
        match self.policy.on_failure {
            OnFailure::Revert => self.revert_now(now, "nebula", reason),
            OnFailure::Pause => {
                self.note(now, "nebula", format!("paused: {reason}"));
                self.phase = Phase::Paused { reason };
            }
        }
        true
    }

    fn revert_now(&mut self, now: u64, by: &str, reason: String) {
        self.note(now, by, format!("reverted: {reason}"));
        self.phase = Phase::Reverted { reason };
        self.ended_ns = Some(now);
    }

    fn check_active(&self) -> Result<(), Refusal> {
        if self.phase.is_terminal() {
            return Err(Refusal::Ended(self.rollout_id, self.phase.name()));
        }
        Ok(())
    }

    /// Stops the rollout where it is.
    ///
    /// # Errors
    /// An ended or already paused rollout.
    pub fn pause(&mut self, by: &str, now: u64) -> Result<(), Refusal> {
        self.check_active()?;
        if matches!(self.phase, Phase::Paused { .. }) {
            return Err(Refusal::NotNow {
                id: self.rollout_id,
                state: "paused",
                what: "resume it to go on",
            });
        }
        let reason = format!("paused by {by}");
        self.note(now, by, reason.clone());
        self.phase = Phase::Paused { reason };
        Ok(())
    }

    /// Goes on from a pause; the step's progress deadline starts again.
    ///
    /// # Errors
    /// A rollout that is not paused.
    pub fn resume(&mut self, by: &str, now: u64) -> Result<(), Refusal> {
        self.check_active()?;
        if !matches!(self.phase, Phase::Paused { .. }) {
            return Err(Refusal::NotNow {
                id: self.rollout_id,
                state: self.phase.name(),
                what: "only a paused rollout resumes",
            });
        }
        self.phase = match self.stages.get(self.stage).map(|s| &s.kind) {
            Some(StageKind::Approval) => Phase::AwaitingApproval,
            _ => Phase::Rolling,
        };
        self.stage_started_ns = now;
        self.note(now, by, "resumed".into());
        Ok(())
    }

    /// Skips what the current step waits for (an approval, its gate, its soak) and starts
    /// the next one; with `full`, every host moves to the candidate at once and the rollout
    /// succeeds.
    ///
    /// # Errors
    /// An ended rollout.
    pub fn promote(&mut self, by: &str, full: bool, fleet: &Fleet<'_>) -> Result<(), Refusal> {
        self.check_active()?;
        let now = fleet.now_ns;
        if full {
            self.note(
                now,
                by,
                "promoted: every host moves to the candidate".into(),
            );
            self.succeed(now);
            return Ok(());
        }
        self.note(now, by, format!("promoted past step {}", self.stage + 1));
        if self.entries.is_empty()
            && self.stage == 0
            && !matches!(self.phase, Phase::AwaitingApproval)
        {
            // Not started yet (pre-pull): start the first step.
            self.phase = Phase::Rolling;
            self.enter_stage(fleet);
            return Ok(());
        }
        if self.stage_target(fleet) > self.cohort.threshold_bp {
            self.cohort.threshold_bp = self.stage_target(fleet);
            self.entries.push(Entry {
                threshold_bp: self.cohort.threshold_bp,
                at_ns: now,
            });
        }
        self.next_stage(fleet);
        Ok(())
    }

    /// Sends every host that moved back to the stable spec and ends the rollout.
    ///
    /// # Errors
    /// An ended rollout.
    pub fn revert(&mut self, by: &str, now: u64) -> Result<(), Refusal> {
        self.check_active()?;
        self.revert_now(now, by, format!("by {by}"));
        Ok(())
    }

    /// An estimate of the seconds left, from the time the steps done so far took.
    #[must_use]
    pub fn eta_seconds(&self, now_ns: u64) -> Option<u64> {
        if self.phase.is_terminal() || self.stage == 0 {
            return None;
        }
        let per_stage = now_ns.saturating_sub(self.started_ns) / NS / self.stage as u64;
        let left = (self.stages.len() - self.stage) as u64;
        let soaks: u64 = self.stages[self.stage..]
            .iter()
            .map(|s| s.soak_seconds)
            .sum();
        Some(per_stage * left + soaks)
    }
}
