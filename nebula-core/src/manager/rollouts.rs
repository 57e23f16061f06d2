//! The manager's fleet-rollout commands and the loop that drives rollouts on.
//!
//! A rollout is one stored [`FleetRollout`] per app ([`Collection::FleetRollouts`], keyed by
//! the app's name: its last rollout, active or ended). Every change to it is a
//! compare-and-swap, so two managers on one store never both advance it; after each change
//! the app's document is brought in line with it ([`Manager::sync_app_rule`]): the rollout's
//! [`CandidateRule`] while it runs, the candidate as the app's spec once it succeeded, no rule
//! once it was reverted. That step is level-triggered, so a manager that dies between the two
//! writes leaves work the next tick of any manager finishes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::document::{self, Document, Write};
use super::{AppPatch, Manager, ManagerError};
use crate::field::FieldError;
use crate::model::{App, AppName, CandidateRule};
use crate::report::{ReportError, WorkerReport};
use crate::rollout::{
    AppObservation, Fleet, FleetPolicy, FleetRollout, HostObservation, HostState, Phase, Refusal,
    StageKind, Tally,
};
use crate::store::{Collection, StoreError};
use crate::validate;

const NS: u64 = 1_000_000_000;

/// Why a fleet-rollout command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutError {
    /// The app does not exist.
    #[error("app does not exist")]
    AppNotFound,
    /// The app never had a fleet rollout.
    #[error("the app has no fleet rollout")]
    NoRollout,
    /// A start while another rollout of the app runs.
    #[error("fleet rollout {0} of this app is still running; promote, revert or abort it first")]
    Active(u64),
    /// The input broke validation rules; nothing was stored.
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The command does not apply now.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The document kept changing under this write.
    #[error("too many concurrent writes to the same rollout; try again")]
    Contended,
    /// An app command failed.
    #[error(transparent)]
    App(ManagerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ManagerError> for RolloutError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::AppNotFound => Self::AppNotFound,
            ManagerError::Invalid(errors) => Self::Invalid(errors),
            ManagerError::Store(e) => Self::Store(e),
            other => Self::App(other),
        }
    }
}

impl From<ReportError> for RolloutError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Store(e) => Self::Store(e),
            other => Self::Store(StoreError::Unavailable(other.to_string())),
        }
    }
}

impl Document for FleetRollout {
    const COLLECTION: Collection = Collection::FleetRollouts;
    type Error = RolloutError;
    fn key(&self) -> String {
        self.app_name.to_string()
    }
    fn not_found() -> RolloutError {
        RolloutError::NoRollout
    }
    fn exists() -> RolloutError {
        RolloutError::Contended
    }
    fn contended() -> RolloutError {
        RolloutError::Contended
    }
}

/// What a caller asks of a running rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutAction {
    /// Stop where it is.
    Pause,
    /// Go on from a pause.
    Resume,
    /// Skip what the current step waits for; with `full`, move every host at once.
    Promote {
        /// Move every host at once and end.
        full: bool,
    },
    /// Send the hosts that moved back and end (by the gates' verdict or a caller's).
    Revert,
}

/// The gates and pace that may change while a rollout runs (`PATCH`).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct PolicyPatch {
    pub max_in_flight: Option<Option<u32>>,
    pub min_healthy_seconds: Option<u64>,
    pub healthy_deadline_seconds: Option<u64>,
    pub progress_deadline_seconds: Option<u64>,
    pub min_reported_percent: Option<f64>,
    pub abort_if: Option<crate::rollout::policy::AbortIf>,
    pub on_failure: Option<crate::rollout::OnFailure>,
    pub prefetch_max_per_minute: Option<Option<u32>>,
}

/// How the drive loop reads the fleet.
#[derive(Clone, Copy, Debug)]
pub struct FleetWindow {
    /// Reports older than this are not read at all (the report TTL).
    pub report_ttl: Duration,
    /// A host whose last report is older than this is offline.
    pub offline_after: Duration,
}

impl Default for FleetWindow {
    fn default() -> Self {
        Self {
            report_ttl: Duration::from_secs(24 * 3600),
            offline_after: Duration::from_secs(90),
        }
    }
}

/// A rollout as the API shows it: the document plus the fleet's counts now.
#[derive(Clone, Debug, Serialize)]
pub struct RolloutStatus {
    /// The stored rollout.
    #[serde(flatten)]
    pub rollout: FleetRollout,
    /// Hosts by state.
    pub hosts: BTreeMap<&'static str, usize>,
    /// Hosts in the cohort now (reporting or not).
    pub cohort_hosts: usize,
    /// Hosts known (reporting within the report TTL, plus named canaries).
    pub known_hosts: usize,
    /// The current threshold in percent of the fleet.
    pub percent: f64,
    /// An estimate of the seconds left.
    pub eta_seconds: Option<u64>,
}

/// One stage of a dry run: what it would do to the fleet as it is now.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedStep {
    /// 1-based.
    pub step: usize,
    /// `canary`, `percent`, `count` or `approval`.
    pub kind: &'static str,
    /// The share of the fleet on the candidate after it, in percent (for a count, of the
    /// known hosts).
    pub percent: f64,
    /// Known hosts on the candidate after it.
    pub hosts: usize,
    /// Of those, new in this step.
    pub new_hosts: usize,
    /// Its soak.
    pub soak_seconds: u64,
}

/// A dry run: the stages and their sizes for the current fleet; nothing is stored.
#[derive(Clone, Debug, Serialize)]
pub struct DryRun {
    /// Hosts known now.
    pub known_hosts: usize,
    /// The stages.
    pub steps: Vec<PlannedStep>,
    /// The candidate spec.
    pub candidate: crate::model::AppSpec,
}

/// The host's view of `app` from its last `report` inserted at `reported_ns`.
fn observe(app: &AppName, report: &WorkerReport, reported_ns: u64) -> HostObservation {
    let status = report.apps_status.get(app.as_str());
    let containers: Vec<_> = report
        .apps_containers
        .iter()
        .filter(|c| c.app_name.as_deref() == Some(app.as_str()))
        .collect();
    HostObservation {
        host: report.hostname.clone(),
        reported_ns,
        app: status.map(|s| AppObservation {
            rollout_id: s.fleet_rollout.map(|r| r.rollout_id),
            on_candidate: s.fleet_rollout.is_some_and(|r| r.on_candidate),
            candidate_image_present: s.fleet_rollout.is_some_and(|r| r.candidate_image_present),
            converged: s.converged,
            desired: s.desired_containers,
            healthy: u32::try_from(
                containers
                    .iter()
                    .filter(|c| {
                        c.state == "running" && matches!(c.health.as_str(), "none" | "healthy" | "")
                    })
                    .count(),
            )
            .unwrap_or(u32::MAX),
            failing: containers
                .iter()
                .any(|c| matches!(c.state.as_str(), "exited" | "dead") || c.health == "unhealthy"),
            youngest_ns: containers
                .iter()
                .filter(|c| c.state == "running")
                .map(|c| c.created.saturating_mul(NS))
                .max(),
        }),
    }
}

impl Manager {
    /// The hosts that reported within `window.report_ttl` of `now_ns`, each by its last
    /// report, as they run `app`.
    async fn observe_fleet(
        &self,
        app: &AppName,
        window: FleetWindow,
        now_ns: u64,
    ) -> Result<Vec<HostObservation>, RolloutError> {
        let mut latest: BTreeMap<String, HostObservation> = BTreeMap::new();
        for (id, stored) in self.report_docs().await? {
            if id.expired(now_ns, window.report_ttl) {
                continue;
            }
            let Some(stored) = super::reports::decode_report(stored) else {
                continue;
            };
            let report = stored.report;
            // Hosts report every app they hold; a host that does not hold the app is not
            // part of its fleet.
            if !report.apps_status.contains_key(app.as_str()) {
                continue;
            }
            let at = id.inserted_ns();
            if latest
                .get(&report.hostname)
                .is_none_or(|o| o.reported_ns <= at)
            {
                latest.insert(report.hostname.clone(), observe(app, &report, at));
            }
        }
        Ok(latest.into_values().collect())
    }

    /// The app's last fleet rollout.
    ///
    /// # Errors
    /// [`RolloutError::NoRollout`], store failures.
    pub async fn get_fleet_rollout(&self, app: &AppName) -> Result<FleetRollout, RolloutError> {
        document::get::<FleetRollout>(self.store.as_ref(), app.as_str())
            .await?
            .map(|(_, r)| r)
            .ok_or(RolloutError::NoRollout)
    }

    /// The app's last fleet rollout with the fleet's counts at `now_ns`.
    ///
    /// # Errors
    /// [`RolloutError::NoRollout`], store failures.
    pub async fn fleet_rollout_status(
        &self,
        app: &AppName,
        window: FleetWindow,
        now_ns: u64,
    ) -> Result<RolloutStatus, RolloutError> {
        let rollout = self.get_fleet_rollout(app).await?;
        let hosts = self.observe_fleet(app, window, now_ns).await?;
        let tally = rollout.tally(&fleet(&hosts, window, now_ns));
        Ok(status(rollout, &tally, now_ns))
    }

    /// The hosts of the app's last rollout with their states, `only` those in one state.
    ///
    /// # Errors
    /// [`RolloutError::NoRollout`], store failures.
    pub async fn fleet_rollout_hosts(
        &self,
        app: &AppName,
        only: Option<HostState>,
        window: FleetWindow,
        now_ns: u64,
    ) -> Result<Vec<(String, HostState)>, RolloutError> {
        let rollout = self.get_fleet_rollout(app).await?;
        let hosts = self.observe_fleet(app, window, now_ns).await?;
        let mut states = rollout.host_states(&fleet(&hosts, window, now_ns));
        if let Some(state) = only {
            states.retain(|(_, s)| *s == state);
        }
        Ok(states)
    }

    /// Starts a fleet rollout of `app` to its spec changed by `candidate`; with `dry_run`,
    /// only says what its steps would do to the fleet as it is now.
    ///
    /// # Errors
    /// [`RolloutError::AppNotFound`], [`RolloutError::Active`], [`RolloutError::Invalid`]
    /// (the candidate or the policy; nothing stored), store failures.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_fleet_rollout(
        &self,
        app_name: &AppName,
        candidate: AppPatch,
        policy: FleetPolicy,
        by: &str,
        window: FleetWindow,
        now_ns: u64,
    ) -> Result<FleetRollout, RolloutError> {
        let app = self.get_app(app_name).await?;
        let rollout = self
            .new_rollout(&app, candidate, policy, by, now_ns)
            .await?;
        let rollout_id = rollout.rollout_id;
        document::cas::<FleetRollout, _>(
            self.store.as_ref(),
            app_name.as_str(),
            false,
            |current| {
                if let Some(stored) = current {
                    let old: FleetRollout = document::decode(app_name.as_str(), stored)?;
                    if !old.phase.is_terminal() && old.app_incarnation == app.incarnation {
                        return Err(RolloutError::Active(old.rollout_id));
                    }
                    if old.rollout_id >= rollout_id {
                        return Err(RolloutError::Contended);
                    }
                }
                Ok((Write::Put(rollout.clone()), ()))
            },
        )
        .await?;
        tracing::info!(app = %app_name, rollout_id, by, "fleet rollout started");
        self.sync_app_rule(&rollout).await?;
        // The first step starts now, not at the next tick.
        self.drive_one(app_name, window, now_ns).await?;
        self.get_fleet_rollout(app_name).await
    }

    async fn new_rollout(
        &self,
        app: &App,
        candidate: AppPatch,
        policy: FleetPolicy,
        by: &str,
        now_ns: u64,
    ) -> Result<FleetRollout, RolloutError> {
        let last_id = match self.get_fleet_rollout(&app.app_name).await {
            Ok(old) if !old.phase.is_terminal() && old.app_incarnation == app.incarnation => {
                return Err(RolloutError::Active(old.rollout_id));
            }
            Ok(old) => old.rollout_id,
            Err(RolloutError::NoRollout) => 0,
            Err(e) => return Err(e),
        };
        let mut spec = app.spec.clone();
        candidate.apply(&mut spec);
        validate::spec(&spec).map_err(|errors| {
            RolloutError::Invalid(
                errors
                    .into_iter()
                    .map(|e| FieldError::new(format!("candidate.{}", e.field), e.rule))
                    .collect(),
            )
        })?;
        if spec == app.spec {
            return Err(RolloutError::Invalid(vec![FieldError::new(
                "candidate",
                "must change at least one field of the app",
            )]));
        }
        FleetRollout::start(
            app.app_name.clone(),
            last_id + 1,
            app.incarnation,
            app.spec.clone(),
            spec,
            policy,
            rand::random(),
            by,
            now_ns,
        )
        .map_err(RolloutError::Invalid)
    }

    /// What a rollout of `app` with `candidate` and `policy` would do to the fleet as it is.
    ///
    /// # Errors
    /// As [`Manager::start_fleet_rollout`]; nothing is stored.
    pub async fn plan_fleet_rollout(
        &self,
        app_name: &AppName,
        candidate: AppPatch,
        policy: FleetPolicy,
        window: FleetWindow,
        now_ns: u64,
    ) -> Result<DryRun, RolloutError> {
        let app = self.get_app(app_name).await?;
        let mut rollout = self
            .new_rollout(&app, candidate, policy, "dry-run", now_ns)
            .await?;
        let hosts = self.observe_fleet(app_name, window, now_ns).await?;
        let names: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
        let mut steps = Vec::new();
        let mut before = 0;
        for (i, stage) in rollout.stages.clone().iter().enumerate() {
            let kind = match &stage.kind {
                StageKind::Canary => "canary",
                StageKind::Threshold(bp) => {
                    rollout.cohort.threshold_bp = rollout.cohort.threshold_bp.max(*bp);
                    "percent"
                }
                StageKind::Count(n) => {
                    let inside = names.iter().filter(|h| rollout.cohort.includes(h)).count();
                    rollout.cohort.threshold_bp = rollout
                        .cohort
                        .threshold_adding(&names, (*n as usize).saturating_sub(inside));
                    "count"
                }
                StageKind::Approval => "approval",
            };
            let hosts_in = names.iter().filter(|h| rollout.cohort.includes(h)).count()
                + rollout
                    .cohort
                    .canary_hosts
                    .iter()
                    .filter(|c| !names.contains(&c.as_str()))
                    .count();
            steps.push(PlannedStep {
                step: i + 1,
                kind,
                percent: f64::from(rollout.cohort.threshold_bp) / 100.0,
                hosts: hosts_in,
                new_hosts: hosts_in - before,
                soak_seconds: stage.soak_seconds,
            });
            before = hosts_in;
        }
        Ok(DryRun {
            known_hosts: names.len(),
            steps,
            candidate: rollout.candidate,
        })
    }

    /// Pauses, resumes, promotes or reverts the app's running rollout.
    ///
    /// # Errors
    /// [`RolloutError::NoRollout`], [`RolloutError::Refused`] (an ended rollout, a resume of
    /// a rollout that is not paused, ...), store failures.
    pub async fn act_on_fleet_rollout(
        &self,
        app: &AppName,
        action: RolloutAction,
        by: &str,
        window: FleetWindow,
        now_ns: u64,
    ) -> Result<FleetRollout, RolloutError> {
        let hosts = match action {
            RolloutAction::Promote { .. } => self.observe_fleet(app, window, now_ns).await?,
            _ => Vec::new(),
        };
        let fleet = fleet(&hosts, window, now_ns);
        let (rollout, _) =
            document::modify::<FleetRollout>(self.store.as_ref(), app.as_str(), |r| {
                match action {
                    RolloutAction::Pause => r.pause(by, now_ns)?,
                    RolloutAction::Resume => r.resume(by, now_ns)?,
                    RolloutAction::Promote { full } => r.promote(by, full, &fleet)?,
                    RolloutAction::Revert => r.revert(by, now_ns)?,
                }
                Ok(())
            })
            .await?;
        tracing::info!(app = %app, rollout_id = rollout.rollout_id, ?action, by, state = rollout.phase.name(), "fleet rollout changed");
        self.sync_app_rule(&rollout).await?;
        Ok(rollout)
    }

    /// Changes the gates or the pace of the app's running rollout.
    ///
    /// # Errors
    /// [`RolloutError::Invalid`] (nothing stored), [`RolloutError::Refused`] for an ended
    /// rollout, store failures.
    pub async fn patch_fleet_rollout(
        &self,
        app: &AppName,
        patch: PolicyPatch,
        by: &str,
        now_ns: u64,
    ) -> Result<FleetRollout, RolloutError> {
        let (rollout, _) =
            document::modify::<FleetRollout>(self.store.as_ref(), app.as_str(), |r| {
                if r.phase.is_terminal() {
                    return Err(Refusal::Ended(r.rollout_id, r.phase.name()).into());
                }
                let mut p = r.policy.clone();
                let patch = patch.clone();
                if let Some(v) = patch.max_in_flight {
                    p.max_in_flight = v;
                }
                if let Some(v) = patch.min_healthy_seconds {
                    p.min_healthy_seconds = v;
                }
                if let Some(v) = patch.healthy_deadline_seconds {
                    p.healthy_deadline_seconds = v;
                }
                if let Some(v) = patch.progress_deadline_seconds {
                    p.progress_deadline_seconds = v;
                }
                if let Some(v) = patch.min_reported_percent {
                    p.min_reported_percent = v;
                }
                if let Some(v) = patch.abort_if {
                    p.abort_if = v;
                }
                if let Some(v) = patch.on_failure {
                    p.on_failure = v;
                }
                if let Some(v) = patch.prefetch_max_per_minute {
                    p.prefetch.max_per_minute = v;
                }
                p.validate().map_err(RolloutError::Invalid)?;
                r.policy = p;
                r.events.push_back(crate::rollout::RolloutEvent {
                    at_ns: now_ns,
                    by: by.to_owned(),
                    what: "gates changed".into(),
                });
                while r.events.len() > crate::rollout::MAX_EVENTS {
                    r.events.pop_front();
                }
                Ok(())
            })
            .await?;
        Ok(rollout)
    }

    /// Brings the app's document in line with `rollout`: its rule while it runs, the
    /// candidate as the spec once it succeeded, no rule once it was reverted. Writes (and
    /// publishes) only when the app differs.
    async fn sync_app_rule(&self, rollout: &FleetRollout) -> Result<(), RolloutError> {
        let name = rollout.app_name.as_str();
        let changed = document::cas::<App, _>(self.store.as_ref(), name, true, |current| {
            let mut app: App = document::decode(name, current.ok_or(ManagerError::AppNotFound)?)?;
            if app.incarnation != rollout.app_incarnation {
                return Ok((Write::Nothing, None));
            }
            let ours = app
                .fleet_rollout
                .as_ref()
                .is_none_or(|rule| rule.rollout_id == rollout.rollout_id);
            if !ours {
                return Ok((Write::Nothing, None));
            }
            let wanted: Option<CandidateRule> = rollout.rule().map(|mut rule| {
                // A stop or start during the rollout applies to both specs.
                rule.candidate.running = app.spec.running;
                rule
            });
            let before = app.clone();
            match (&rollout.phase, wanted) {
                (Phase::Succeeded, _) => {
                    if app.fleet_rollout.take().is_some() {
                        let running = app.spec.running;
                        app.spec = rollout.candidate.clone();
                        app.spec.running = running;
                    }
                }
                (_, None) => app.fleet_rollout = None,
                (_, Some(rule)) => app.fleet_rollout = Some(Box::new(rule)),
            }
            if app == before {
                return Ok((Write::Nothing, None));
            }
            app.app_id += 1;
            Ok((Write::Put(app.clone()), Some(app)))
        })
        .await
        .map_err(RolloutError::from)?;
        if let Some(app) = changed {
            tracing::info!(app = %app.app_name, app_id = app.app_id, rollout_id = rollout.rollout_id, threshold_bp = rollout.cohort.threshold_bp, "app follows its fleet rollout");
            let _ = self.publish_app(app).await;
        }
        Ok(())
    }

    /// Advances one app's rollout as far as its hosts allow and syncs the app.
    async fn drive_one(
        &self,
        app: &AppName,
        window: FleetWindow,
        now_ns: u64,
    ) -> Result<(), RolloutError> {
        let Some((_, current)) =
            document::get::<FleetRollout>(self.store.as_ref(), app.as_str()).await?
        else {
            return Ok(());
        };
        if current.phase.is_terminal() {
            return self.sync_app_rule(&current).await;
        }
        let live = match self.get_app(app).await {
            Ok(a) => Some(a),
            Err(ManagerError::AppNotFound) => None,
            Err(e) => return Err(e.into()),
        };
        let gone = live
            .as_ref()
            .is_none_or(|a| a.incarnation != current.app_incarnation);
        let hosts = if gone {
            Vec::new()
        } else {
            self.observe_fleet(app, window, now_ns).await?
        };
        let fleet = fleet(&hosts, window, now_ns);
        let result =
            document::cas::<FleetRollout, _>(self.store.as_ref(), app.as_str(), true, |stored| {
                let mut r: FleetRollout =
                    document::decode(app.as_str(), stored.ok_or(RolloutError::NoRollout)?)?;
                if r.phase.is_terminal() {
                    return Ok((Write::Nothing, r));
                }
                let changed = if gone {
                    r.revert("nebula", now_ns).map(|()| true).unwrap_or(false)
                } else {
                    r.advance(&fleet)
                };
                if changed {
                    Ok((Write::Put(r.clone()), r))
                } else {
                    Ok((Write::Nothing, r))
                }
            })
            .await?;
        if result != current {
            tracing::info!(app = %app, rollout_id = result.rollout_id, state = result.phase.name(), stage = result.stage + 1, threshold_bp = result.cohort.threshold_bp, "fleet rollout advanced");
        }
        if !gone {
            self.sync_app_rule(&result).await?;
        }
        Ok(())
    }

    /// One pass over every rollout: each running one advances as far as its hosts allow,
    /// and every app follows its rollout. Returns how many rollouts run.
    ///
    /// # Errors
    /// Store failures (each rollout's own failure is logged and the pass goes on).
    pub async fn drive_fleet_rollouts(
        &self,
        window: FleetWindow,
        now_ns: u64,
    ) -> Result<usize, RolloutError> {
        let rollouts: Vec<FleetRollout> = document::list(self.store.as_ref()).await?;
        let mut running = 0;
        for r in rollouts {
            if !r.phase.is_terminal() {
                running += 1;
            }
            if let Err(error) = self.drive_one(&r.app_name, window, now_ns).await {
                tracing::warn!(app = %r.app_name, %error, "fleet rollout not advanced this time");
            }
        }
        Ok(running)
    }

    /// Drives the fleet rollouts every `every` until `shutdown` completes. Every API manager
    /// runs this; compare-and-swap keeps them from advancing a rollout twice.
    pub async fn run_fleet_rollouts(
        &self,
        every: Duration,
        window: FleetWindow,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            if let Err(error) = self
                .drive_fleet_rollouts(window, super::reports::now_ns())
                .await
            {
                tracing::warn!(%error, "fleet rollouts not driven this time");
            }
        }
    }
}

fn fleet(hosts: &[HostObservation], window: FleetWindow, now_ns: u64) -> Fleet<'_> {
    Fleet {
        hosts,
        online_since_ns: now_ns
            .saturating_sub(u64::try_from(window.offline_after.as_nanos()).unwrap_or(u64::MAX)),
        now_ns,
    }
}

fn status(rollout: FleetRollout, tally: &Tally, now_ns: u64) -> RolloutStatus {
    RolloutStatus {
        hosts: HostState::ALL
            .into_iter()
            .map(|s| (s.name(), tally.count(s)))
            .collect(),
        cohort_hosts: tally.cohort,
        known_hosts: tally.known,
        percent: f64::from(rollout.cohort.threshold_bp) / 100.0,
        eta_seconds: rollout.eta_seconds(now_ns),
        rollout,
    }
}

#[cfg(test)]
mod tests;
