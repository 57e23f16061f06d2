//! The cron side of a device group worker: runs each cron job of its group on schedule.
//!
//! [`CronRunner`] is its own task, fed by the worker after every sync through a watch channel
//! ([`CronDesired`]), so a long pull or reconcile never delays a run. It sleeps until the
//! earliest next run by the wall clock and creates the run's container
//! (`<job>-<scheduled unix time>-1`, see [`crate::cron_schedule`]) at once; every host of a
//! group names a run the same, and a restarted worker never runs one twice.
//!
//! # Guarantees
//! - Nothing is scheduled or removed before the first sync.
//! - A job is (re)scheduled when its (incarnation, `cron_job_id`) rises, unscheduled when
//!   `running` is false; a container that runs is left to finish.
//! - Jobs leave the worker only when the group's (incarnation, `device_group_id`) rises (or the
//!   group is deleted), so a stale reply unschedules nothing. Containers of jobs that left are
//!   removed, whatever their state.
//! - Finished containers of the group's jobs are removed every sweep (`reconcile_every`).
//! - A run missed because the worker was not running (or was late by more than a period) is
//!   not run afterwards: the next run is computed from the time now.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::container::{LABEL_CONTAINER_TYPE, LABEL_ORCHESTRATOR, LABEL_OWNER, ORCHESTRATOR};
use crate::cron_job::CronJob;
use crate::cron_schedule::{
    CONTAINER_TYPE_CRON_JOB, CleanupReason, Schedule, cron_container, plan_cron_cleanup,
};
use crate::device_group::DeviceGroupInfo;
use crate::runtime::{RegistryAuth, Runtime, RuntimeError};

/// The wall clock: the time since the unix epoch. Tests drive it from tokio's paused clock.
pub type WallClock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The system's wall clock.
#[must_use]
pub fn system_clock() -> WallClock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    })
}

/// Longest single sleep: the wall clock is read again at least this often, so a clock step
/// (NTP, a suspended host) delays a run by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(15);

/// What the worker tells the runner after a sync.
#[derive(Clone, Debug, PartialEq)]
pub enum CronDesired {
    /// No successful sync yet.
    Unsynced,
    /// The group's cron jobs as a sync reply gave them.
    Group {
        /// The group's incarnation.
        incarnation: u64,
        /// The group's membership version.
        device_group_id: u64,
        /// The job names the group lists.
        listed: Vec<String>,
        /// The documents of the listed jobs that exist.
        jobs: Vec<CronJob>,
    },
    /// The group does not exist.
    NoGroup,
}

impl CronDesired {
    /// The cron part of a device group's state.
    #[must_use]
    pub fn of(info: &DeviceGroupInfo) -> Self {
        Self::Group {
            incarnation: info.incarnation,
            device_group_id: info.device_group_id,
            listed: info.cron_jobs_list.clone(),
            jobs: info.cron_jobs.clone(),
        }
    }

    /// Takes `newer` into what the runner has not applied yet; returns whether anything
    /// changed. A group state of a lower (incarnation, `device_group_id`) than the one held is
    /// dropped; at the same revision each job keeps its newest document, so a stale reply that
    /// arrives before the runner woke never hides a newer one. (The runner applies each state
    /// by the same rules, so what it already applied is harmless to see again.)
    pub fn merge(&mut self, newer: Self) -> bool {
        match (&mut *self, newer) {
            (_, Self::Unsynced) => false,
            (
                Self::Group {
                    incarnation,
                    device_group_id,
                    jobs,
                    ..
                },
                Self::Group {
                    incarnation: new_incarnation,
                    device_group_id: new_id,
                    listed: new_listed,
                    jobs: mut new_jobs,
                },
            ) if (new_incarnation, new_id) <= (*incarnation, *device_group_id) => {
                if (new_incarnation, new_id) < (*incarnation, *device_group_id) {
                    return false;
                }
                let mut changed = false;
                for job in &mut new_jobs {
                    if let Some(held) = jobs.iter().find(|h| h.cron_job_name == job.cron_job_name)
                        && held.revision() >= job.revision()
                    {
                        job.clone_from(held);
                    } else {
                        changed = true;
                    }
                }
                if changed {
                    *self = Self::Group {
                        incarnation: new_incarnation,
                        device_group_id: new_id,
                        listed: new_listed,
                        jobs: new_jobs,
                    };
                }
                changed
            }
            (_, newer) => {
                let changed = *self != newer;
                *self = newer;
                changed
            }
        }
    }
}

/// The runner's knobs.
#[derive(Clone)]
pub struct CronConfig {
    /// The label value the worker's containers carry (`nebula.owner`).
    pub owner: Option<String>,
    /// Credentials for pulls.
    pub registry_auth: Option<RegistryAuth>,
    /// How long a removed container gets before it is killed.
    pub stop_grace: Duration,
    /// How often finished containers are removed.
    pub sweep_every: Duration,
    /// The wall clock runs are scheduled by.
    pub clock: WallClock,
}

impl std::fmt::Debug for CronConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronConfig")
            .field("owner", &self.owner)
            .field("stop_grace", &self.stop_grace)
            .field("sweep_every", &self.sweep_every)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
struct HeldGroup {
    incarnation: u64,
    device_group_id: u64,
    members: BTreeSet<String>,
}

impl HeldGroup {
    fn revision(&self) -> (u64, u64) {
        (self.incarnation, self.device_group_id)
    }
}

/// A job the runner holds, with its next run (unix seconds) when it is scheduled.
#[derive(Clone, Debug)]
struct Held {
    job: CronJob,
    next: Option<u64>,
}

/// Runs the cron jobs of one device group on one host.
pub struct CronRunner {
    runtime: Arc<dyn Runtime>,
    config: CronConfig,
    synced: bool,
    group: Option<HeldGroup>,
    /// The incarnation of the group seen deleted: replies of it or older are stale.
    group_deleted: Option<u64>,
    jobs: BTreeMap<String, Held>,
    /// Jobs that left while this worker ran: their containers go whatever their labels.
    dropped: BTreeSet<String>,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for CronRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronRunner")
            .field("config", &self.config)
            .field("schedule", &self.schedule())
            .finish_non_exhaustive()
    }
}

impl CronRunner {
    /// A runner that has not synced yet.
    #[must_use]
    pub fn new(runtime: Arc<dyn Runtime>, config: CronConfig) -> Self {
        Self {
            runtime,
            config,
            synced: false,
            group: None,
            group_deleted: None,
            jobs: BTreeMap::new(),
            dropped: BTreeSet::new(),
            tasks: JoinSet::new(),
        }
    }

    fn now(&self) -> Duration {
        (self.config.clock)()
    }

    fn now_secs(&self) -> u64 {
        self.now().as_secs()
    }

    /// Every job held and its next run (unix seconds), `None` when it is not scheduled.
    #[must_use]
    pub fn schedule(&self) -> BTreeMap<String, Option<u64>> {
        self.jobs
            .iter()
            .map(|(name, held)| (name.clone(), held.next))
            .collect()
    }

    fn next_of(job: &CronJob, after: u64) -> Option<u64> {
        if !job.spec.running {
            return None;
        }
        match Schedule::parse(&job.spec.schedule) {
            Ok(s) => s.next_after(after),
            Err(rule) => {
                tracing::warn!(cron_job = %job.cron_job_name, %rule, "cron job has a bad schedule; not scheduled");
                None
            }
        }
    }

    /// Takes the state a sync gave; returns whether anything changed.
    pub fn apply(&mut self, desired: CronDesired) -> bool {
        match desired {
            CronDesired::Unsynced => false,
            CronDesired::NoGroup => self.group_missing(),
            CronDesired::Group {
                incarnation,
                device_group_id,
                listed,
                jobs,
            } => self.apply_group(incarnation, device_group_id, &listed, jobs),
        }
    }

    fn group_missing(&mut self) -> bool {
        let Some(held) = self.group.take() else {
            return false;
        };
        tracing::info!("device group deleted: unscheduling its cron jobs");
        self.group_deleted = Some(self.group_deleted.unwrap_or(0).max(held.incarnation));
        let names: Vec<String> = self.jobs.keys().cloned().collect();
        for name in names {
            self.jobs.remove(&name);
            self.dropped.insert(name);
        }
        true
    }

    fn apply_group(
        &mut self,
        incarnation: u64,
        device_group_id: u64,
        listed: &[String],
        jobs: Vec<CronJob>,
    ) -> bool {
        if self.group_deleted.is_some_and(|i| incarnation <= i) {
            return false;
        }
        let revision = (incarnation, device_group_id);
        if self
            .group
            .as_ref()
            .is_some_and(|g| g.incarnation > incarnation)
        {
            return false;
        }
        self.synced = true;
        let mut changed = false;
        let rises = self
            .group
            .as_ref()
            .is_none_or(|held| revision > held.revision());
        if rises {
            let listed: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
            let members: BTreeSet<String> = jobs
                .iter()
                .map(|j| j.cron_job_name.to_string())
                .filter(|n| listed.contains(n.as_str()))
                .collect();
            let gone: Vec<String> = self
                .jobs
                .keys()
                .filter(|n| !members.contains(*n))
                .cloned()
                .collect();
            for name in gone {
                tracing::info!(cron_job = %name, "cron job left the device group: unscheduled");
                self.jobs.remove(&name);
                self.dropped.insert(name);
                changed = true;
            }
            self.group = Some(HeldGroup {
                incarnation,
                device_group_id,
                members,
            });
        }
        let now = self.now_secs();
        for job in jobs {
            let name = job.cron_job_name.to_string();
            if !self
                .group
                .as_ref()
                .is_some_and(|g| g.members.contains(&name))
            {
                continue;
            }
            if self
                .jobs
                .get(&name)
                .is_some_and(|h| h.job.revision() >= job.revision())
            {
                continue;
            }
            let next = Self::next_of(&job, now);
            tracing::info!(cron_job = %name, cron_job_id = job.cron_job_id, schedule = %job.spec.schedule, running = job.spec.running, next_run = ?next, "cron job scheduled");
            if job.spec.running {
                self.pull_ahead(&job);
            }
            self.dropped.remove(&name);
            self.jobs.insert(name, Held { job, next });
            changed = true;
        }
        changed
    }

    /// Pulls a (re)scheduled job's image now, so its run starts on time and picks up a new
    /// image behind the same tag.
    fn pull_ahead(&mut self, job: &CronJob) {
        let image = cron_container(job, 0).image;
        let rt = self.runtime.clone();
        let auth = self.config.registry_auth.clone();
        self.tasks.spawn(async move {
            if let Err(error) = rt.pull(&image, auth.as_ref()).await {
                tracing::warn!(%image, %error, "cron job image pull failed; retried at its run");
            }
        });
    }

    /// The earliest next run held, in unix seconds.
    #[must_use]
    pub fn next_run(&self) -> Option<u64> {
        self.jobs.values().filter_map(|h| h.next).min()
    }

    /// Starts the run of every job that is due, each in its own task; returns how many.
    pub fn fire_due(&mut self) -> usize {
        let now = self.now();
        let now_secs = now.as_secs();
        let mut fired = 0;
        let due: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, h)| h.next.is_some_and(|n| Duration::from_secs(n) <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            let Some(held) = self.jobs.get_mut(&name) else {
                continue;
            };
            let Some(at) = held.next else { continue };
            let mut spec = cron_container(&held.job, at);
            if let Some(owner) = &self.config.owner {
                spec.labels.insert(LABEL_OWNER.to_owned(), owner.clone());
            }
            held.next = Self::next_of(&held.job, now_secs.max(at));
            let late = now_secs.saturating_sub(at);
            tracing::info!(cron_job = %name, container = %spec.name, late_secs = late, next_run = ?held.next, "cron job run");
            let rt = self.runtime.clone();
            let auth = self.config.registry_auth.clone();
            self.tasks.spawn(async move {
                if let Err(error) = run_once(&*rt, &spec, auth.as_ref()).await {
                    tracing::warn!(container = %spec.name, %error, "cron job run failed");
                }
            });
            fired += 1;
        }
        fired
    }

    /// Removes finished containers of the group's jobs and every container of jobs that
    /// left; returns how many were removed.
    pub async fn sweep(&mut self) -> usize {
        if !self.synced {
            return 0;
        }
        let observed = match self
            .runtime
            .list(&[
                (LABEL_ORCHESTRATOR, ORCHESTRATOR),
                (LABEL_CONTAINER_TYPE, CONTAINER_TYPE_CRON_JOB),
            ])
            .await
        {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(%error, "listing cron containers failed");
                return 0;
            }
        };
        let jobs: BTreeSet<&str> = self.jobs.keys().map(String::as_str).collect();
        let dropped: BTreeSet<&str> = self.dropped.iter().map(String::as_str).collect();
        let plan = plan_cron_cleanup(
            &jobs,
            &dropped,
            &observed,
            self.config.owner.as_deref(),
            self.now_secs(),
        );
        let mut removed = 0;
        for c in plan {
            match self.runtime.remove(&c.id, self.config.stop_grace).await {
                Ok(()) | Err(RuntimeError::NotFound(_)) => {
                    removed += 1;
                    match c.reason {
                        CleanupReason::Finished => {
                            tracing::debug!(container = %c.name, "finished cron container removed");
                        }
                        CleanupReason::JobGone => {
                            tracing::info!(container = %c.name, "container of a cron job that left removed");
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(container = %c.name, %error, "removing cron container failed");
                }
            }
        }
        removed
    }

    /// Runs until the worker drops its end of `desired`: applies each new state, starts each
    /// run when it is due and sweeps every `sweep_every`.
    pub async fn run(mut self, mut desired: watch::Receiver<CronDesired>) {
        let every = self.config.sweep_every.max(Duration::from_millis(100));
        let mut next_sweep = Instant::now() + every;
        loop {
            let wake = self.next_run().map(|at| {
                let wait = Duration::from_secs(at).saturating_sub(self.now());
                Instant::now() + wait.min(MAX_SLEEP)
            });
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let state = desired.borrow_and_update().clone();
                    if self.apply(state) {
                        next_sweep = Instant::now();
                    }
                }
                () = sleep_until_some(wake) => {
                    self.fire_due();
                }
                () = tokio::time::sleep_until(next_sweep) => {
                    self.sweep().await;
                    next_sweep = Instant::now() + every;
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
            }
        }
        tracing::debug!("cron runner stopped");
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Creates and starts one run's container, pulling its image first when it is missing.
async fn run_once(
    rt: &dyn Runtime,
    spec: &crate::container::ContainerSpec,
    auth: Option<&RegistryAuth>,
) -> Result<(), RuntimeError> {
    if !rt.has_image(&spec.image).await.unwrap_or(false) {
        rt.pull(&spec.image, auth).await?;
    }
    match rt.create(spec).await {
        Ok(_) => Ok(()),
        // This run exists already (a restarted worker, another worker on this engine).
        Err(RuntimeError::Conflict(_)) => Ok(()),
        Err(RuntimeError::NotFound(_)) => {
            rt.pull(&spec.image, auth).await?;
            rt.create(spec).await.map(drop)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
