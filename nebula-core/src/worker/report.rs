//! The worker's report: what it holds, what its host runs, and the host's usage, sent to its
//! manager at every check-in (or only when something changed).
//!
//! # Guarantees
//! - Reporting never stops or fails the worker: a report that cannot be built or sent is
//!   logged, and the next check-in tries again (the original's `reporting_fail_hard` is not
//!   kept).
//! - `updated` is true when anything but the usage figures and the time differs from the last
//!   report the manager accepted (so the first report, and the one after a failed send, say
//!   true). With `on_update_only`, a report that would say false is not sent.
//! - A send waits at most [`ReportConfig::timeout`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::{Selection, SourceError, Worker, unix_now};
use crate::bus::ReportBus;
use crate::container::{LABEL_ORCHESTRATOR, LABEL_OWNER, LABEL_SPEC_HASH, ORCHESTRATOR};
use crate::container::{ObservedContainer, app_container};
use crate::cron_schedule::cron_job_of;
use crate::report::{
    ConfigSummary, ContainerReport, CpuUsage, DiskUsage, HeldApp, HostRollout, MemoryUsage,
    WorkerReport, app_status, container_report,
};
use crate::runtime::RuntimeError;
use crate::schedule::slot_of;

/// Where a worker sends its reports: the manager's API (`POST /api/v2/reports`), or the
/// manager itself in the single-process mode.
#[async_trait]
pub trait ReportSink: Send + Sync + 'static {
    /// Delivers one report.
    async fn send(&self, report: &WorkerReport) -> Result<(), SourceError>;
}

/// Reports over the bus, and through `fallback` (the manager's HTTP API) whenever the bus does
/// not take one, so a broker outage loses no report.
///
/// A publish that fails, or is not confirmed within the bus timeout, goes to the fallback at
/// once. (A publish the broker took although its confirm came too late is then stored twice:
/// a harmless duplicate of a snapshot.) The switch to the fallback and back is logged once.
pub struct BusReportSink {
    bus: Arc<dyn ReportBus>,
    fallback: Arc<dyn ReportSink>,
    bus_timeout: Duration,
    /// Whether the last report went to the fallback.
    falling_back: AtomicBool,
}

impl std::fmt::Debug for BusReportSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusReportSink")
            .field("bus_timeout", &self.bus_timeout)
            .field("falling_back", &self.falling_back)
            .finish_non_exhaustive()
    }
}

impl BusReportSink {
    /// Publishes on `bus`, waiting at most `bus_timeout` (keep it well under the report
    /// timeout, so the fallback has time), else sends through `fallback`.
    #[must_use]
    pub fn new(
        bus: Arc<dyn ReportBus>,
        fallback: Arc<dyn ReportSink>,
        bus_timeout: Duration,
    ) -> Self {
        Self {
            bus,
            fallback,
            bus_timeout,
            falling_back: AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl ReportSink for BusReportSink {
    async fn send(&self, report: &WorkerReport) -> Result<(), SourceError> {
        let failure =
            match tokio::time::timeout(self.bus_timeout, self.bus.publish_report(report)).await {
                Ok(Ok(())) => {
                    if self.falling_back.swap(false, Ordering::Relaxed) {
                        tracing::info!("reports travel over the bus again");
                    }
                    return Ok(());
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("not confirmed within {} ms", self.bus_timeout.as_millis()),
            };
        if self.falling_back.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %failure, "report sent over HTTP: the bus does not take it");
        } else {
            tracing::warn!(error = %failure, "the bus does not take reports; sending them over HTTP until it does");
        }
        self.fallback.send(report).await
    }
}

/// The host's usage figures, read at the edge (`/proc` and `statvfs` on the worker's host).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostUsage {
    /// Memory, when readable.
    pub memory: Option<MemoryUsage>,
    /// The root filesystem, when readable.
    pub root_disk: Option<DiskUsage>,
    /// Busy share of all CPUs since the previous reading, 0 to 100.
    pub cpu_used_percent: Option<f64>,
}

/// Reads the host's usage figures.
pub trait HostProbe: Send + Sync + 'static {
    /// The figures now; what cannot be read is `None`.
    fn usage(&self) -> HostUsage;
}

/// Fixed figures (tests, or a host whose usage is not read).
impl HostProbe for HostUsage {
    fn usage(&self) -> HostUsage {
        *self
    }
}

/// How a worker reports.
#[derive(Clone, Debug)]
pub struct ReportConfig {
    /// The hostname the reports carry.
    pub hostname: String,
    /// Send only reports whose `updated` is true (`REPORT_ON_UPDATE_ONLY`).
    pub on_update_only: bool,
    /// Longest wait for one send.
    pub timeout: Duration,
}

/// What one report attempt did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The worker has no reporter.
    Off,
    /// Sent and accepted; `updated` is what it said.
    Sent {
        /// The report's `updated`.
        updated: bool,
    },
    /// Nothing changed and only updates are sent.
    Unchanged,
    /// Could not be built or sent (logged).
    Failed,
}

/// A worker's reporting: where to, what usage probe, and the last report accepted.
pub struct Reporter {
    sink: Arc<dyn ReportSink>,
    probe: Arc<dyn HostProbe>,
    config: ReportConfig,
    /// The normal form of the last report the sink accepted.
    last_sent: Option<WorkerReport>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// Reports to `sink` with the usage `probe` reads.
    #[must_use]
    pub fn new(sink: Arc<dyn ReportSink>, probe: Arc<dyn HostProbe>, config: ReportConfig) -> Self {
        Self {
            sink,
            probe,
            config,
            last_sent: None,
        }
    }
}

impl Worker {
    /// This worker, reporting through `reporter` after every check-in.
    #[must_use]
    pub fn with_reporter(mut self, reporter: Reporter) -> Self {
        self.reporter = Some(reporter);
        self
    }

    /// Whether the worker manages `c`: a container of an app it holds, one carrying its owner
    /// label, or, without an owner label, every Nebula container of its selection.
    fn reports_on(&self, c: &ObservedContainer) -> bool {
        let owner = self.config.owner.as_deref();
        if owner.is_some() && c.label(LABEL_OWNER) == owner {
            return true;
        }
        if let Some(app) = c.app_name() {
            return self.desired.keys().any(|n| n.as_str() == app)
                || (owner.is_none() && self.config.selection == Selection::All);
        }
        cron_job_of(c).is_some()
            && owner.is_none()
            && !matches!(self.config.selection, Selection::Apps(_))
    }

    /// The report of this worker's state and host at `now` (unix seconds), with `updated`
    /// false (the reporter sets it).
    ///
    /// # Errors
    /// When the engine cannot list the containers or tell the host's resources.
    pub async fn build_report(
        &mut self,
        hostname: &str,
        usage: HostUsage,
        now: u64,
    ) -> Result<WorkerReport, RuntimeError> {
        let host = self.host().await?;
        let observed = self
            .runtime
            .list(&[(LABEL_ORCHESTRATOR, ORCHESTRATOR)])
            .await?;
        let mut by_app: BTreeMap<&str, Vec<&ObservedContainer>> = BTreeMap::new();
        for c in &observed {
            if let Some(app) = c.app_name() {
                by_app.entry(app).or_default().push(c);
            }
        }
        let mut apps_containers: Vec<ContainerReport> = Vec::new();
        let mut cron_jobs_containers: Vec<ContainerReport> = Vec::new();
        for c in observed.iter().filter(|c| self.reports_on(c)) {
            if let Some(app) = c.app_name() {
                let image = self
                    .desired
                    .iter()
                    .find(|(n, _)| n.as_str() == app)
                    .and_then(|(_, held)| {
                        let spec = app_container(held, slot_of(app, &c.name)?)?;
                        (c.label(LABEL_SPEC_HASH) == Some(spec.hash())).then_some(spec.image)
                    });
                apps_containers.push(container_report(c, image));
            } else {
                cron_jobs_containers.push(container_report(c, None));
            }
        }
        apps_containers.sort_by(|a, b| a.name.cmp(&b.name));
        cron_jobs_containers.sort_by(|a, b| a.name.cmp(&b.name));
        let mut apps_status = BTreeMap::new();
        let mut held = BTreeMap::new();
        for (name, app) in &self.desired {
            let containers = by_app.get(name.as_str()).map_or(&[][..], Vec::as_slice);
            let app = &*app.resolved_for(hostname);
            let mut status = app_status(app, host, containers);
            status.pull_fallback = self.pull_fallbacks.get(name).cloned();
            status.fleet_rollout = app.fleet_rollout.as_ref().map(|rule| {
                let on_candidate = rule.runs_candidate(hostname);
                HostRollout {
                    rollout_id: rule.rollout_id,
                    on_candidate,
                    // Running candidate containers prove the image is here.
                    candidate_image_present: on_candidate && status.converged,
                }
            });
            apps_status.insert(name.to_string(), status);
            held.insert(
                name.to_string(),
                HeldApp {
                    app_id: app.app_id,
                    incarnation: app.incarnation,
                    running: app.spec.running,
                },
            );
        }
        let group = self.group.as_ref();
        Ok(WorkerReport {
            memory_usage: usage.memory,
            root_disk_usage: usage.root_disk,
            cpu_usage: CpuUsage {
                cores: host.cpus,
                used_percent: usage.cpu_used_percent,
            },
            apps_containers,
            cron_jobs_containers,
            current_device_group_config: ConfigSummary {
                apps_list: held.keys().cloned().collect(),
                apps: held,
                device_group_id: group.map(|g| g.device_group_id),
                prune_id: group.map(|g| g.prune_id),
                incarnation: group.map(|g| g.incarnation),
            },
            device_group: match &self.config.selection {
                Selection::DeviceGroup(g) => Some(g.to_string()),
                _ => None,
            },
            app_names: match &self.config.selection {
                Selection::Apps(names) => Some(names.iter().map(ToString::to_string).collect()),
                _ => None,
            },
            report_creation_time: now,
            hostname: hostname.to_owned(),
            updated: false,
            apps_status,
        })
    }

    /// Builds and sends a report, if this worker has a reporter. Never fails: problems are
    /// logged and the next check-in tries again.
    pub async fn report(&mut self) -> ReportOutcome {
        let Some(mut reporter) = self.reporter.take() else {
            return ReportOutcome::Off;
        };
        let outcome = self.report_with(&mut reporter).await;
        self.reporter = Some(reporter);
        outcome
    }

    async fn report_with(&mut self, r: &mut Reporter) -> ReportOutcome {
        let usage = r.probe.usage();
        let mut report = match self
            .build_report(&r.config.hostname, usage, unix_now())
            .await
        {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!(error = %e, "report not built; the worker goes on");
                return ReportOutcome::Failed;
            }
        };
        let normal = report.normalized();
        report.updated = r.last_sent.as_ref() != Some(&normal);
        if r.config.on_update_only && !report.updated {
            tracing::debug!("nothing changed since the last report; not sent");
            return ReportOutcome::Unchanged;
        }
        match tokio::time::timeout(r.config.timeout, r.sink.send(&report)).await {
            Ok(Ok(())) => {
                tracing::debug!(updated = report.updated, "report sent");
                r.last_sent = Some(normal);
                ReportOutcome::Sent {
                    updated: report.updated,
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "report not sent; the worker goes on");
                ReportOutcome::Failed
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = r.config.timeout.as_millis(),
                    "report not sent in time; the worker goes on"
                );
                ReportOutcome::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests;
