//! The worker service: keeps one host's containers equal to the desired state.
//!
//! The loop is level-triggered. Every event (a bus message, a check-in tick, a rollout
//! requeue) ends in the same [`Worker::reconcile`]: list the containers, plan each app with the
//! pure planner, execute the plans with bounded parallelism.
//!
//! # Guarantees
//! - Nothing is removed before the first successful sync: a worker that cannot reach its
//!   manager keeps what runs.
//! - Containers that match the desired state are adopted, never recreated (no clean slate at
//!   boot, unlike the original).
//! - A bus message is acknowledged only after the reconcile it triggered has run.
//! - A message or sync reply older than what the worker holds (by incarnation, then version)
//!   is ignored.
//! - With [`Selection::DeviceGroup`], apps that left the group are removed only when the
//!   group's (incarnation, `device_group_id`) rose, so a stale reply removes nothing; a group
//!   deleted after a successful sync removes its apps' containers; a group that does not exist
//!   yet at the first sync is waited for, and nothing is removed meanwhile. Unused images are
//!   removed once each time the group's `prune_id` rises above what the worker last applied
//!   (never at first sight).
//! - A [`Selection::DeviceGroup`] worker subscribes to its group only
//!   ([`Topic::DeviceGroup`]): it hears the group's whole state after each change of it (and
//!   of its cron jobs), its deletion, and the changes of the apps it lists — nothing of other
//!   groups. A group state from the bus goes through the same rules as an HTTP sync reply.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::future::join_all;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::bus::{Bus, BusMessage, Delivery, Subscription, Topic};
use crate::container::{
    ContainerSpec, LABEL_CONTAINER_TYPE, LABEL_ORCHESTRATOR, LABEL_OWNER, LABEL_SPEC_HASH,
    ORCHESTRATOR, ObservedContainer,
};
use crate::device_group::{DeviceGroupInfo, DeviceGroupName};
use crate::model::{App, AppName};
use crate::plan::{Action, AppPlan, Pull, plan_app, plan_removal};
use crate::report::PullFallback;
use crate::runtime::{RegistryAuth, Runtime, RuntimeError};
use crate::schedule::HostResources;

pub mod cron;
mod pull;

/// Which apps this worker runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every app (the single-process mode).
    All,
    /// The apps named (v1 `APP_NAME`).
    Apps(Vec<AppName>),
    /// The apps of a device group (v2 `DEVICE_GROUP`); membership comes with the group's state.
    DeviceGroup(DeviceGroupName),
}

impl Selection {
    /// Whether the selection names `app` by itself. Always false for
    /// [`Selection::DeviceGroup`]: its apps are the ones the group's state lists.
    #[must_use]
    pub fn includes(&self, app: &AppName) -> bool {
        match self {
            Self::All => true,
            Self::Apps(names) => names.contains(app),
            Self::DeviceGroup(_) => false,
        }
    }

    /// What the worker subscribes to: a device group worker hears its group only (its
    /// changes, and the changes of the apps it lists), never the rest of the fleet.
    #[must_use]
    pub fn topics(&self) -> Vec<Topic> {
        match self {
            Self::All => vec![Topic::AllApps],
            Self::Apps(names) => names.iter().cloned().map(Topic::App).collect(),
            Self::DeviceGroup(group) => vec![Topic::DeviceGroup(group.clone())],
        }
    }
}

/// The whole desired state of a worker, as its source returns it.
#[derive(Clone, Debug, PartialEq)]
pub enum DesiredState {
    /// [`Selection::All`] or [`Selection::Apps`]: every selected app that exists.
    Apps(Vec<App>),
    /// [`Selection::DeviceGroup`]: the group's state (its apps, versions and prune id).
    Group(DeviceGroupInfo),
    /// [`Selection::DeviceGroup`]: the group does not exist.
    NoGroup,
}

/// Why the desired state could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The manager cannot be reached or failed; try again later.
    #[error("manager unavailable: {0}")]
    Unavailable(String),
    /// The manager refused the worker's credentials.
    #[error("manager refused the credentials: {0}")]
    Unauthorized(String),
}

/// Where a worker reads the whole desired state: the manager's HTTP API, or the manager
/// itself in the single-process mode.
#[async_trait]
pub trait DesiredSource: Send + Sync + 'static {
    /// The whole desired state of `selection`.
    async fn fetch(&self, selection: &Selection) -> Result<DesiredState, SourceError>;
}

/// The worker's knobs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Which apps to run.
    pub selection: Selection,
    /// How often the whole desired state is fetched (the original's check-in, 30 s).
    pub check_in: Duration,
    /// How often the host is reconciled between check-ins (drift and health; 10 s).
    pub reconcile_every: Duration,
    /// A change that replaces containers waits a random time up to this (a fleet does not
    /// pull all at once).
    pub max_restart_wait: Duration,
    /// How long a stopped container gets before it is killed.
    pub stop_grace: Duration,
    /// How many container operations run at once.
    pub parallelism: usize,
    /// Credentials for pulls.
    pub registry_auth: Option<RegistryAuth>,
    /// With [`Selection::All`] or [`Selection::DeviceGroup`], the id this worker labels its
    /// containers with: containers of apps it does not run are removed only when they carry
    /// it (or, with a device group, when their app left the group while this worker ran).
    /// A device group worker without one uses `device-group/<name>`.
    pub owner: Option<String>,
    /// After a lost bus subscription comes back, the HTTP resync waits a random time up to
    /// this, so a fleet reconnecting after a broker restart does not call its managers all
    /// at once (what was published meanwhile waits in the worker's queue). 10 s.
    pub resync_spread: Duration,
    /// The host's name, as its reports carry it: a fleet rollout's rule decides from it
    /// whether this host runs the candidate.
    pub hostname: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            selection: Selection::All,
            check_in: Duration::from_secs(30),
            reconcile_every: Duration::from_secs(10),
            max_restart_wait: Duration::ZERO,
            stop_grace: Duration::from_secs(5),
            parallelism: 16,
            registry_auth: None,
            owner: None,
            resync_spread: Duration::from_secs(10),
            hostname: String::new(),
        }
    }
}

/// What one reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Actions that succeeded.
    pub done: usize,
    /// What failed, one line per failure.
    pub errors: Vec<String>,
    /// Plan again after this long (a rollout or a restart wait is in progress).
    pub requeue_after: Option<Duration>,
}

/// The device group state a worker holds.
#[derive(Clone, Debug)]
struct HeldGroup {
    incarnation: u64,
    device_group_id: u64,
    /// The highest `prune_id` acted on (or seen first).
    prune_id: u64,
    /// The group's apps that existed at `device_group_id`.
    members: BTreeSet<AppName>,
}

impl HeldGroup {
    fn revision(&self) -> (u64, u64) {
        (self.incarnation, self.device_group_id)
    }
}

/// The worker: desired state held in memory, one host's runtime.
pub struct Worker {
    runtime: Arc<dyn Runtime>,
    source: Arc<dyn DesiredSource>,
    bus: Option<Arc<dyn Bus>>,
    config: WorkerConfig,
    desired: BTreeMap<AppName, App>,
    /// Deleted incarnations: a late `AppChanged` of a deleted app must not resurrect it.
    deleted: BTreeMap<AppName, u64>,
    synced: bool,
    host: Option<HostResources>,
    /// Where reports go after each check-in, if anywhere.
    reporter: Option<report::Reporter>,
    /// A changed app may not replace containers before this instant (restart wait).
    hold_until: BTreeMap<AppName, Instant>,
    /// Apps whose current version runs from a local image because its pull failed.
    pull_fallbacks: BTreeMap<AppName, PullFallback>,
    pruned: BTreeMap<AppName, u64>,
    /// [`Selection::DeviceGroup`]: the group as last applied.
    group: Option<HeldGroup>,
    /// The incarnation of the group seen deleted: replies of it or older are stale.
    group_deleted: Option<u64>,
    /// A prune request of the group is due at the next reconcile.
    group_prune_due: bool,
    /// Apps that left the group while this worker ran: their containers are removed whatever
    /// their labels.
    dropped: BTreeSet<AppName>,
    /// [`Selection::DeviceGroup`]: the newest documents of apps that a message said the group
    /// lists before this worker held them as members (the app's message overtook the group's);
    /// taken when the group's revision rises.
    pending: BTreeMap<AppName, App>,
    /// [`Selection::DeviceGroup`]: where each sync's cron jobs go; `run` starts the runner.
    cron: Option<tokio::sync::watch::Sender<cron::CronDesired>>,
    /// The wall clock cron jobs are scheduled by.
    cron_clock: cron::WallClock,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .field("apps", &self.desired.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Worker {
    /// A worker that has not synced yet.
    #[must_use]
    pub fn new(
        runtime: Arc<dyn Runtime>,
        source: Arc<dyn DesiredSource>,
        bus: Option<Arc<dyn Bus>>,
        mut config: WorkerConfig,
    ) -> Self {
        if let Selection::DeviceGroup(group) = &config.selection
            && config.owner.is_none()
        {
            config.owner = Some(format!("device-group/{group}"));
        }
        Self {
            runtime,
            source,
            bus,
            desired: BTreeMap::new(),
            deleted: BTreeMap::new(),
            synced: false,
            host: None,
            reporter: None,
            hold_until: BTreeMap::new(),
            pull_fallbacks: BTreeMap::new(),
            pruned: BTreeMap::new(),
            group: None,
            group_deleted: None,
            group_prune_due: false,
            dropped: BTreeSet::new(),
            pending: BTreeMap::new(),
            cron: matches!(config.selection, Selection::DeviceGroup(_))
                .then(|| tokio::sync::watch::channel(cron::CronDesired::Unsynced).0),
            cron_clock: cron::system_clock(),
            config,
        }
    }

    /// Schedules cron jobs by `clock` instead of the system's wall clock (for tests).
    #[must_use]
    pub fn with_wall_clock(mut self, clock: cron::WallClock) -> Self {
        self.cron_clock = clock;
        self
    }

    /// Hands the cron runner a group state, merged with what it has not taken yet so a
    /// stale reply never hides a newer one.
    fn send_cron(&self, desired: cron::CronDesired) {
        if let Some(tx) = &self.cron {
            tx.send_if_modified(|held| held.merge(desired));
        }
    }

    fn is_own_group(&self, group: &DeviceGroupName) -> bool {
        matches!(&self.config.selection, Selection::DeviceGroup(g) if g == group)
    }

    /// Whether this worker runs `app` now.
    fn selected(&self, app: &AppName) -> bool {
        match &self.config.selection {
            Selection::DeviceGroup(_) => {
                self.group.as_ref().is_some_and(|g| g.members.contains(app))
            }
            other => other.includes(app),
        }
    }

    /// The apps held, as last applied.
    #[must_use]
    pub fn desired(&self) -> &BTreeMap<AppName, App> {
        &self.desired
    }

    fn restart_wait(&self) -> Duration {
        let max = self.config.max_restart_wait;
        if max.is_zero() {
            return Duration::ZERO;
        }
        let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// Takes `app` if it is newer than what is held; returns whether it was taken.
    fn accept(&mut self, app: App) -> bool {
        if !self.selected(&app.app_name) {
            return false;
        }
        if self
            .deleted
            .get(&app.app_name)
            .is_some_and(|inc| app.incarnation <= *inc)
        {
            return false;
        }
        let held = self.desired.get(&app.app_name);
        if held.is_some_and(|h| h.revision() >= app.revision()) {
            return false;
        }
        let first_sight = held.is_none() && !self.synced;
        let wait = if first_sight {
            Duration::ZERO
        } else {
            self.restart_wait()
        };
        if !wait.is_zero() {
            self.hold_until
                .insert(app.app_name.clone(), Instant::now() + wait);
        }
        if first_sight || !self.pruned.contains_key(&app.app_name) {
            self.pruned
                .insert(app.app_name.clone(), app.prune_generation);
        }
        self.dropped.remove(&app.app_name);
        self.desired.insert(app.app_name.clone(), app);
        true
    }

    /// Applies one bus message; returns whether anything changed.
    ///
    /// App messages are taken by (incarnation, `app_id`); a device group's state goes through
    /// the same path as an HTTP sync, and its deletion as a sync that finds no group.
    pub fn apply(&mut self, message: BusMessage) -> bool {
        match message {
            BusMessage::AppChanged { app, device_groups } => {
                if let Selection::DeviceGroup(group) = &self.config.selection
                    && device_groups.contains(group)
                    && !self.selected(&app.app_name)
                {
                    self.keep_pending(app);
                    return false;
                }
                self.accept(app)
            }
            BusMessage::AppDeleted {
                app_name,
                incarnation,
                ..
            } => {
                let entry = self.deleted.entry(app_name.clone()).or_insert(incarnation);
                *entry = (*entry).max(incarnation);
                if self
                    .pending
                    .get(&app_name)
                    .is_some_and(|a| a.incarnation <= incarnation)
                {
                    self.pending.remove(&app_name);
                }
                match self.desired.get(&app_name) {
                    Some(held) if held.incarnation <= incarnation => {
                        self.desired.remove(&app_name);
                        true
                    }
                    _ => false,
                }
            }
            BusMessage::DeviceGroupChanged { device_group, info } => {
                self.is_own_group(&device_group) && self.sync_group(info)
            }
            BusMessage::DeviceGroupDeleted {
                device_group,
                incarnation,
            } => self.is_own_group(&device_group) && self.group_deleted_at(incarnation),
        }
    }

    /// Keeps the newest document of an app the group lists but this worker does not hold as
    /// a member yet.
    fn keep_pending(&mut self, app: App) {
        if self
            .deleted
            .get(&app.app_name)
            .is_some_and(|inc| app.incarnation <= *inc)
            || self
                .pending
                .get(&app.app_name)
                .is_some_and(|held| held.revision() >= app.revision())
        {
            return;
        }
        self.pending.insert(app.app_name.clone(), app);
    }

    /// The group's incarnation `incarnation` was deleted: its apps go, unless the worker
    /// already holds a newer incarnation. Returns whether anything changed.
    fn group_deleted_at(&mut self, incarnation: u64) -> bool {
        if self
            .group
            .as_ref()
            .is_some_and(|held| held.incarnation > incarnation)
        {
            return false;
        }
        self.group_deleted = Some(self.group_deleted.unwrap_or(0).max(incarnation));
        if self.group.is_none() {
            return false;
        }
        self.send_cron(cron::CronDesired::NoGroup);
        self.group_missing()
    }

    /// Fetches the whole desired state and takes what is newer; apps gone from the reply
    /// are dropped. Returns whether anything changed.
    ///
    /// # Errors
    /// The source's, when the manager cannot be reached (nothing changes then).
    pub async fn sync(&mut self) -> Result<bool, SourceError> {
        match self.source.fetch(&self.config.selection).await? {
            DesiredState::Apps(apps) => Ok(self.sync_apps(apps)),
            DesiredState::Group(info) => Ok(self.sync_group(info)),
            DesiredState::NoGroup => {
                self.send_cron(cron::CronDesired::NoGroup);
                Ok(self.group_missing())
            }
        }
    }

    fn sync_apps(&mut self, apps: Vec<App>) -> bool {
        let names: BTreeSet<AppName> = apps.iter().map(|a| a.app_name.clone()).collect();
        let mut changed = false;
        for app in apps {
            changed |= self.accept(app);
        }
        let gone: Vec<AppName> = self
            .desired
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(app) = self.desired.remove(&name) {
                self.deleted.insert(name, app.incarnation);
                changed = true;
            }
        }
        self.synced = true;
        changed
    }

    /// Applies a device group's state (an HTTP reply or a bus message), and hands its cron
    /// jobs to the cron runner. Membership changes only when the group's revision rose; a
    /// stale state changes nothing but newer app documents of current members.
    fn sync_group(&mut self, info: DeviceGroupInfo) -> bool {
        if self.group_deleted.is_some_and(|i| info.incarnation <= i) {
            tracing::debug!(
                incarnation = info.incarnation,
                "reply of a deleted device group ignored"
            );
            return false;
        }
        let revision = info.revision();
        let mut changed = false;
        match &mut self.group {
            Some(held) if held.incarnation == info.incarnation => {
                if info.prune_id > held.prune_id {
                    tracing::info!(prune_id = info.prune_id, "device group prune requested");
                    held.prune_id = info.prune_id;
                    self.group_prune_due = true;
                }
                if revision < held.revision() {
                    tracing::debug!(
                        device_group_id = info.device_group_id,
                        held = held.device_group_id,
                        "stale device group reply: membership kept"
                    );
                }
            }
            Some(held) if revision < held.revision() => {
                tracing::debug!("reply of an older device group incarnation ignored");
                return false;
            }
            _ => {}
        }
        self.send_cron(cron::CronDesired::of(&info));
        let rises = self
            .group
            .as_ref()
            .is_none_or(|held| revision > held.revision());
        if rises {
            let listed: BTreeSet<&AppName> = info.apps_list.iter().collect();
            let members: BTreeSet<AppName> = info
                .apps
                .iter()
                .filter(|a| listed.contains(&a.app_name))
                .map(|a| a.app_name.clone())
                .collect();
            let prune_id = match &self.group {
                Some(held) if held.incarnation == info.incarnation => held.prune_id,
                // First sight of this incarnation: its prune id is a starting point.
                _ => info.prune_id,
            };
            if self.group.is_some() {
                tracing::info!(
                    device_group_id = info.device_group_id,
                    apps = members.len(),
                    "device group changed"
                );
            }
            self.group = Some(HeldGroup {
                incarnation: info.incarnation,
                device_group_id: info.device_group_id,
                prune_id,
                members,
            });
            let gone: Vec<AppName> = self
                .desired
                .keys()
                .filter(|n| !self.selected(n))
                .cloned()
                .collect();
            for name in gone {
                self.desired.remove(&name);
                self.hold_until.remove(&name);
                tracing::info!(app = %name, "app left the device group");
                self.dropped.insert(name);
                changed = true;
            }
        }
        for app in info.apps {
            changed |= self.accept(app);
        }
        if rises {
            // Documents that came before this state: members take them when newer.
            for (_, app) in std::mem::take(&mut self.pending) {
                changed |= self.accept(app);
            }
        }
        self.synced = true;
        changed
    }

    /// The device group does not exist: before the first successful sync, wait for it;
    /// after, it was deleted, so its apps are dropped.
    fn group_missing(&mut self) -> bool {
        let Some(held) = self.group.take() else {
            if !self.synced {
                tracing::info!(selection = ?self.config.selection, "device group does not exist yet; waiting for it");
            }
            return false;
        };
        tracing::info!(
            incarnation = held.incarnation,
            "device group deleted: removing its apps"
        );
        self.group_deleted = Some(self.group_deleted.unwrap_or(0).max(held.incarnation));
        self.pending.clear();
        let names: Vec<AppName> = self.desired.keys().cloned().collect();
        for name in names {
            self.desired.remove(&name);
            self.hold_until.remove(&name);
            self.dropped.insert(name);
        }
        true
    }

    async fn host(&mut self) -> Result<HostResources, RuntimeError> {
        if let Some(h) = self.host {
            return Ok(h);
        }
        let h = self.runtime.host().await?;
        self.host = Some(h);
        Ok(h)
    }

    /// Plans every app against the containers on the host and executes the plans.
    pub async fn reconcile(&mut self) -> Outcome {
        let mut outcome = Outcome::default();
        if !self.synced {
            return outcome;
        }
        let host = match self.host().await {
            Ok(h) => h,
            Err(e) => {
                outcome.errors.push(format!("host resources: {e}"));
                return outcome;
            }
        };
        let observed = match self
            .runtime
            .list(&[
                (LABEL_ORCHESTRATOR, ORCHESTRATOR),
                (LABEL_CONTAINER_TYPE, "app"),
            ])
            .await
        {
            Ok(list) => list,
            Err(e) => {
                outcome.errors.push(format!("list containers: {e}"));
                return outcome;
            }
        };
        let mut by_app: BTreeMap<String, Vec<&ObservedContainer>> = BTreeMap::new();
        for c in &observed {
            if let Some(app) = c.app_name() {
                by_app.entry(app.to_owned()).or_default().push(c);
            }
        }
        let now = unix_now();
        let instant = Instant::now();
        let mut plans: Vec<(String, AppPlan)> = Vec::new();
        let mut requeue: Option<Duration> = None;
        let mut prune = false;
        for (name, app) in &self.desired {
            let app = &*app.resolved_for(&self.config.hostname);
            let containers = by_app.remove(name.as_str()).unwrap_or_default();
            let mut plan = plan_app(app, host, &containers, now);
            for p in &plan.problems {
                outcome.errors.push(p.clone());
            }
            if let Some(until) = self.hold_until.get(name).copied() {
                let replaces = plan
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Replace { .. }));
                if until > instant && replaces {
                    tracing::info!(app = %name, wait_ms = (until - instant).as_millis(), "restart wait before replacing containers");
                    requeue = Some(requeue.map_or(until - instant, |r| r.min(until - instant)));
                    // Only replacements wait: a missing container comes back at once.
                    plan.actions
                        .retain(|a| !matches!(a, Action::Replace { .. }));
                    if plan.pull == Pull::Always {
                        // What is left re-creates missing containers: the local image will do.
                        plan.pull = Pull::IfMissing;
                    }
                    if !plan.is_empty() {
                        plans.push((name.to_string(), plan));
                    }
                    continue;
                }
                self.hold_until.remove(name);
            }
            if let Some(secs) = plan.requeue_after_secs {
                let d = Duration::from_secs(secs);
                requeue = Some(requeue.map_or(d, |r| r.min(d)));
            }
            if app.spec.running
                && self
                    .pruned
                    .get(name)
                    .is_some_and(|g| *g < app.prune_generation)
            {
                prune = true;
                self.pruned.insert(name.clone(), app.prune_generation);
            }
            if !plan.is_empty() {
                plans.push((name.to_string(), plan));
            }
        }
        for (name, containers) in by_app {
            let ours: Vec<&ObservedContainer> = match &self.config.selection {
                Selection::All => containers
                    .into_iter()
                    .filter(|c| {
                        self.config.owner.is_none()
                            || c.label(LABEL_OWNER) == self.config.owner.as_deref()
                    })
                    .collect(),
                Selection::Apps(names) => {
                    if names.iter().any(|n| n.as_str() == name) {
                        containers
                    } else {
                        Vec::new()
                    }
                }
                Selection::DeviceGroup(_) => {
                    let left = self.dropped.iter().any(|n| n.as_str() == name);
                    containers
                        .into_iter()
                        .filter(|c| left || c.label(LABEL_OWNER) == self.config.owner.as_deref())
                        .collect()
                }
            };
            if !ours.is_empty() {
                plans.push((name, plan_removal(&ours)));
            }
        }
        outcome.requeue_after = requeue;
        if !plans.is_empty() {
            let sem = Semaphore::new(self.config.parallelism.max(1));
            let (rt, config, sem) = (&*self.runtime, &self.config, &sem);
            let desired = &self.desired;
            let results = join_all(plans.iter().map(|(name, plan)| async move {
                let app_id = AppName::parse(name)
                    .ok()
                    .and_then(|n| desired.get(&n))
                    .map_or(0, |a| a.app_id);
                (name, execute(rt, plan, app_id, config, sem).await)
            }))
            .await;
            for (name, executed) in results {
                outcome.done += executed.done;
                for e in executed.errors {
                    tracing::warn!(app = %name, error = %e, "reconcile step failed");
                    outcome.errors.push(format!("{name}: {e}"));
                }
                self.note_pull(name, executed.fallback, executed.pulled);
            }
        }
        if std::mem::take(&mut self.group_prune_due) {
            prune = true;
        }
        if prune {
            match self.runtime.prune_images().await {
                Ok(n) => tracing::info!(images = n, "pruned unused images"),
                Err(e) => outcome.errors.push(format!("prune images: {e}")),
            }
        }
        if outcome.done > 0 || !outcome.errors.is_empty() {
            tracing::info!(
                done = outcome.done,
                errors = outcome.errors.len(),
                "reconciled"
            );
        }
        outcome
    }

    /// Keeps the pull fallback of an app for its reports, warning once per change.
    fn note_pull(&mut self, name: &str, fallback: Option<PullFallback>, pulled: bool) {
        let Ok(name) = AppName::parse(name) else {
            return;
        };
        match fallback {
            Some(f) => {
                let known = self
                    .pull_fallbacks
                    .get(&name)
                    .is_some_and(|old| old.app_id == f.app_id && old.image == f.image);
                if known {
                    tracing::debug!(app = %name, image = %f.image, error = %f.error, "pull failed again; using the local image");
                } else {
                    tracing::warn!(
                        app = %name,
                        image = %f.image,
                        image_id = %f.image_id,
                        failure = ?f.failure,
                        error = %f.error,
                        "pull failed; running the image the engine holds (the next change or restart pulls again)"
                    );
                }
                self.pull_fallbacks.insert(name, f);
            }
            None if pulled => {
                self.pull_fallbacks.remove(&name);
            }
            None => {}
        }
    }

    /// Runs until `shutdown` completes: sync at start and every check-in, follow the bus,
    /// reconcile after every change and every `reconcile_every`.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        if let Some(tx) = &self.cron {
            // The runner stops when this worker (and so `tx`) is dropped.
            let mut desired = tx.subscribe();
            desired.mark_changed();
            let runner = cron::CronRunner::new(
                self.runtime.clone(),
                cron::CronConfig {
                    owner: self.config.owner.clone(),
                    registry_auth: self.config.registry_auth.clone(),
                    stop_grace: self.config.stop_grace,
                    sweep_every: self.config.reconcile_every,
                    clock: self.cron_clock.clone(),
                },
            );
            tokio::spawn(runner.run(desired));
        }
        let mut subscription: Option<Subscription> = None;
        let mut next_check_in = Instant::now();
        let mut next_reconcile = Instant::now() + self.config.reconcile_every;
        let mut resubscribe_at = Instant::now();
        let mut backoff = resubscribe_backoff();
        let mut subscribed_before = false;
        loop {
            if subscription.is_none()
                && let Some(bus) = self.bus.clone()
                && Instant::now() >= resubscribe_at
            {
                match bus.subscribe(&self.config.selection.topics()).await {
                    Ok(s) => {
                        subscription = Some(s);
                        backoff.reset();
                        // Anything published while we were away is picked up by a full
                        // resync: at once at start, spread over `resync_spread` after a loss.
                        let resync = if subscribed_before {
                            Instant::now() + self.config.resync_spread.mul_f64(rand::random())
                        } else {
                            Instant::now()
                        };
                        next_check_in = next_check_in.min(resync);
                        subscribed_before = true;
                    }
                    Err(e) => {
                        let wait = backoff.next();
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis(), "bus subscribe failed");
                        resubscribe_at = Instant::now() + wait;
                    }
                }
            }
            let event = tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(next_check_in) => Event::CheckIn,
                () = tokio::time::sleep_until(next_reconcile) => Event::Reconcile,
                d = next_delivery(subscription.as_mut()) => Event::Bus(d),
                () = tokio::time::sleep_until(resubscribe_at), if subscription.is_none() && self.bus.is_some() => Event::Reconcile,
            };
            let mut ack = None;
            let checked_in = matches!(event, Event::CheckIn);
            match event {
                Event::CheckIn => {
                    next_check_in = Instant::now() + self.config.check_in;
                    if let Err(e) = self.sync().await {
                        tracing::warn!(error = %e, "sync failed; keeping what runs");
                        continue;
                    }
                }
                Event::Reconcile => {}
                Event::Bus(Some(delivery)) => {
                    self.apply(delivery.message.clone());
                    ack = Some(delivery);
                }
                Event::Bus(None) => {
                    tracing::warn!("bus subscription lost; resubscribing");
                    subscription = None;
                    // The first attempt waits the first step; the backoff grows only
                    // when an attempt fails.
                    resubscribe_at = Instant::now() + backoff.current();
                    continue;
                }
            }
            let outcome = self.reconcile().await;
            if checked_in {
                self.report().await;
            }
            if let Some(delivery) = ack
                && let Err(e) = delivery.ack().await
            {
                tracing::warn!(error = %e, "ack failed; the message will come again");
            }
            let every = self.config.reconcile_every;
            next_reconcile = Instant::now() + outcome.requeue_after.map_or(every, |r| r.min(every));
        }
        tracing::debug!("worker stopped");
    }
}

/// The first wait before subscribing again after a loss or a failed attempt; it doubles
/// per failed attempt up to [`MAX_RESUBSCRIBE`].
const FIRST_RESUBSCRIBE: Duration = Duration::from_millis(200);
/// The longest wait between subscribe attempts.
const MAX_RESUBSCRIBE: Duration = Duration::from_secs(30);

/// The resubscribe backoff: each wait scaled by a random factor in [0.5, 1], so a fleet that
/// lost its broker at the same moment does not come back in lockstep.
fn resubscribe_backoff() -> Backoff {
    Backoff::new(FIRST_RESUBSCRIBE, MAX_RESUBSCRIBE).jitter(0.5..=1.0)
}

#[allow(clippy::large_enum_variant)] // one event at a time
enum Event {
    CheckIn,
    Reconcile,
    Bus(Option<Delivery>),
}

async fn next_delivery(sub: Option<&mut Subscription>) -> Option<Delivery> {
    match sub {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// What executing one app's plan did.
#[derive(Debug, Default)]
struct Executed {
    done: usize,
    errors: Vec<String>,
    /// The pull failed and the local image was used.
    fallback: Option<PullFallback>,
    /// The registry served the plan's pull: an earlier fallback is over.
    pulled: bool,
}

/// Executes one app's plan: the pull step first (without an image, the actions that need one
/// are dropped and running containers stay), then every action, at most `sem` at once.
async fn execute(
    rt: &dyn Runtime,
    plan: &AppPlan,
    app_id: u64,
    config: &WorkerConfig,
    sem: &Semaphore,
) -> Executed {
    let mut executed = Executed::default();
    let mut actions: Vec<&Action> = plan.actions.iter().collect();
    match pull::prepare(rt, plan, config.registry_auth.as_ref(), app_id, unix_now()).await {
        pull::Prepared::Ready => {}
        pull::Prepared::Pulled => executed.pulled = true,
        pull::Prepared::Fallback(fallback) => executed.fallback = Some(fallback),
        pull::Prepared::Missing(why) => {
            actions.retain(|a| !pull::needs_image(a));
            executed.errors.push(why);
        }
    }
    let grace = config.stop_grace;
    let results = join_all(actions.into_iter().map(|action| async move {
        let _permit = sem.acquire().await;
        tracing::info!(action = %describe(action), "applying");
        let result = match action {
            Action::Create(spec) => rt.create(&owned(spec, config)).await.map(drop),
            Action::Start { id, .. } => rt.start(id).await,
            Action::Restart { id, .. } => rt.restart(id).await,
            Action::Remove { id, .. } => ignore_missing(rt.remove(id, grace).await),
            Action::Replace { id, new, .. } => match ignore_missing(rt.remove(id, grace).await) {
                Ok(()) => rt.create(&owned(new, config)).await.map(drop),
                Err(e) => Err(e),
            },
        };
        result.map_err(|e| format!("{}: {e}", describe(action)))
    }))
    .await;
    executed.done = results.iter().filter(|r| r.is_ok()).count();
    executed
        .errors
        .extend(results.into_iter().filter_map(Result::err));
    executed
}

fn owned(spec: &ContainerSpec, config: &WorkerConfig) -> ContainerSpec {
    let mut spec = spec.clone();
    if let Some(owner) = &config.owner {
        spec.labels.insert(LABEL_OWNER.to_owned(), owner.clone());
    }
    spec
}

fn ignore_missing(r: Result<(), RuntimeError>) -> Result<(), RuntimeError> {
    match r {
        Err(RuntimeError::NotFound(_)) => Ok(()),
        other => other,
    }
}

fn describe(action: &Action) -> String {
    match action {
        Action::Create(s) => format!("create {}", s.name),
        Action::Start { name, .. } => format!("start {name}"),
        Action::Restart { name, .. } => format!("restart {name}"),
        Action::Replace { name, new, .. } => format!(
            "replace {name} (spec {})",
            new.labels.get(LABEL_SPEC_HASH).map_or("", String::as_str)
        ),
        Action::Remove { name, .. } => format!("remove {name}"),
    }
}

pub mod report;

#[cfg(test)]
mod tests;
