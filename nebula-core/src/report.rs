//! Worker reports: what a worker tells its manager about its host, and how the manager keeps,
//! filters and pages them (`GET /api/v2/reports`) and sums them up per app
//! (`GET /api/v2/apps/<app>/status`).
//!
//! Everything here is pure: times are arguments (`now_ns`, unix nanoseconds), never read.
//!
//! # The report
//! [`WorkerReport`] keeps the original's field names (`memory_usage`, `root_disk_usage`,
//! `cpu_usage`, `apps_containers`, `cron_jobs_containers`, `current_device_group_config`,
//! `device_group`, `report_creation_time`, `hostname`, `updated`); the container entries and
//! the config summary have our own, documented shape, and `apps_status` is new: per app, the
//! version the worker holds and whether the host matches it.
//!
//! # Storage
//! A stored report ([`StoredReport`]) is the worker's report plus `report_insert_date`, keyed by
//! a [`ReportId`]: 24 lowercase hex digits (the size of a MongoDB ObjectId), the first 16 the
//! insertion time in nanoseconds, the last 8 random. Ids sort as they were inserted, so paging
//! by `last_id` is "ids greater than the last one", as the original's `_id > last_id`. A report
//! expires `ttl` after its insertion (the original's TTL index on the insert date): expired
//! reports are never returned, whatever the sweep has removed yet.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::container::{
    ContainerState, Health, LABEL_APP_ID, LABEL_SPEC_HASH, ObservedContainer, app_container,
};
use crate::model::App;
use crate::schedule::{HostResources, container_count};
use crate::store::StoreError;
use crate::validate::FieldError;

/// Page size when the query gives none.
pub const DEFAULT_PAGE_SIZE: usize = 10;
/// Largest page size accepted (the original had none: MongoDB's `limit(0)` meant "all").
pub const MAX_PAGE_SIZE: usize = 1000;
/// Longest hostname accepted in a report.
pub const MAX_HOSTNAME_LEN: usize = 255;
/// Most container entries accepted in one report list.
pub const MAX_CONTAINERS: usize = 10_000;

/// Memory of the host, in MiB (the original's `memory_usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryUsage {
    /// Total memory.
    pub total: u64,
    /// In use: `total - available`.
    pub used: u64,
    /// Unused (not even as cache).
    pub free: u64,
    /// Available to new programs without swapping.
    pub available: u64,
}

/// The root filesystem of the worker, in MiB (the original's `root_disk_usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// Size.
    pub total: u64,
    /// In use.
    pub used: u64,
    /// Available to unprivileged users.
    pub free: u64,
}

/// CPUs of the host (the original's `cpu_usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    /// Logical CPUs, as the engine counts them (the number the scheduler uses).
    pub cores: u32,
    /// Busy share of all CPUs since the previous report, 0 to 100; `null` when unknown.
    pub used_percent: Option<f64>,
}

/// One Nebula container on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerReport {
    /// Container name (`<app>-<slot>`, or `<job>-<unix time>-1`).
    pub name: String,
    /// The engine's id.
    pub id: String,
    /// `created`, `running`, `paused`, `restarting`, `exited`, `removing` or `dead`.
    pub state: String,
    /// `none` (no HEALTHCHECK), `starting`, `healthy` or `unhealthy`.
    pub health: String,
    /// The image, when known: the image of the app version the container matches; `null` for
    /// a container that matches no version the worker holds.
    #[serde(default)]
    pub image: Option<String>,
    /// The app it belongs to (app containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// The app version it was created for (its `nebula.app_id` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<u64>,
    /// The cron job it belongs to (cron job containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_job_name: Option<String>,
    /// Unix seconds when it was created.
    #[serde(default)]
    pub created: u64,
}

/// The version of one app a worker holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldApp {
    /// The app's version.
    pub app_id: u64,
    /// The app's incarnation.
    pub incarnation: u64,
    /// Whether it should run.
    pub running: bool,
}

/// The desired state a worker holds (the original sent its whole local `/info` here; this is
/// a summary of it: versions, not documents).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSummary {
    /// App name -> the version held.
    #[serde(default)]
    pub apps: BTreeMap<String, HeldApp>,
    /// The app names held, sorted.
    #[serde(default)]
    pub apps_list: Vec<String>,
    /// The device group's membership version (device group workers).
    #[serde(default)]
    pub device_group_id: Option<u64>,
    /// The highest prune version applied (device group workers).
    #[serde(default)]
    pub prune_id: Option<u64>,
    /// The device group's incarnation (device group workers).
    #[serde(default)]
    pub incarnation: Option<u64>,
}

/// Why the registry did not serve a pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullFailure {
    /// The registry could not be reached (name resolution, connection, timeout, 5xx).
    Unreachable,
    /// The registry answered no (unknown manifest, denied, unauthorized), or the engine did.
    Refused,
}

/// The longest pull error a report carries, in bytes.
pub const MAX_PULL_ERROR_LEN: usize = 512;

/// A change an app's worker applied with the image the engine already held, because the pull
/// its `pull_policy` asked for failed. The next change or restart pulls again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullFallback {
    /// The image reference.
    pub image: String,
    /// The id of the local image the containers were created from.
    pub image_id: String,
    /// Why the pull failed.
    pub failure: PullFailure,
    /// The engine's error, at most [`MAX_PULL_ERROR_LEN`] bytes.
    pub error: String,
    /// The app version the fallback happened for.
    pub app_id: u64,
    /// When, unix seconds.
    pub at: u64,
}

/// Whether one app on the host matches the version the worker holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    /// The version held.
    pub app_id: u64,
    /// The incarnation held.
    pub incarnation: u64,
    /// Whether it should run.
    pub running: bool,
    /// How many containers the version asks for on this host (0 when stopped).
    pub desired_containers: u32,
    /// How many of the app's containers run (whatever their version).
    pub running_containers: u32,
    /// The host matches the version: exactly the desired containers, each of the current spec,
    /// running, and healthy or without a HEALTHCHECK.
    pub converged: bool,
    /// Set when the host runs this version from a local image because its pull failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_fallback: Option<PullFallback>,
    /// Set while a fleet rollout moves the app: where this host stands in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_rollout: Option<HostRollout>,
}

/// Where one host stands in an app's fleet rollout, as it reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRollout {
    /// The rollout whose rule the host applied.
    pub rollout_id: u64,
    /// Whether the host runs the candidate.
    pub on_candidate: bool,
    /// Whether the host holds the candidate's image.
    pub candidate_image_present: bool,
}

/// What a worker reports at check-in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Host memory; `null` when it could not be read.
    #[serde(default)]
    pub memory_usage: Option<MemoryUsage>,
    /// The worker's root filesystem; `null` when it could not be read.
    #[serde(default)]
    pub root_disk_usage: Option<DiskUsage>,
    /// Host CPUs.
    #[serde(default)]
    pub cpu_usage: CpuUsage,
    /// The app containers on the host.
    #[serde(default)]
    pub apps_containers: Vec<ContainerReport>,
    /// The cron job containers on the host.
    #[serde(default)]
    pub cron_jobs_containers: Vec<ContainerReport>,
    /// The desired state the worker holds.
    #[serde(default)]
    pub current_device_group_config: ConfigSummary,
    /// The worker's device group; `null` for a worker selecting apps by name.
    #[serde(default)]
    pub device_group: Option<String>,
    /// The apps a worker selecting by name (`APP_NAME`) runs; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_names: Option<Vec<String>>,
    /// When the worker made the report, unix seconds.
    pub report_creation_time: u64,
    /// The worker's hostname.
    pub hostname: String,
    /// Whether anything but the usage figures and the time changed since the worker's last
    /// report that reached the manager.
    #[serde(default)]
    pub updated: bool,
    /// Per app held: its version and whether the host matches it.
    #[serde(default)]
    pub apps_status: BTreeMap<String, AppStatus>,
}

impl WorkerReport {
    /// Checks what the manager must be able to rely on.
    ///
    /// # Errors
    /// The rules broken, naming the field.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.hostname.trim().is_empty() {
            errors.push(FieldError::new("hostname", "must not be empty"));
        } else if self.hostname.len() > MAX_HOSTNAME_LEN {
            errors.push(FieldError::new(
                "hostname",
                format!("must be at most {MAX_HOSTNAME_LEN} bytes"),
            ));
        }
        if self.device_group.as_ref().is_some_and(String::is_empty) {
            errors.push(FieldError::new(
                "device_group",
                "must be a device group name or null",
            ));
        }
        for (field, list) in [
            ("apps_containers", &self.apps_containers),
            ("cron_jobs_containers", &self.cron_jobs_containers),
        ] {
            if list.len() > MAX_CONTAINERS {
                errors.push(FieldError::new(
                    field,
                    format!("must have at most {MAX_CONTAINERS} entries"),
                ));
            }
        }
        for (app, status) in &self.apps_status {
            if let Some(fallback) = &status.pull_fallback
                && fallback.error.len() > MAX_PULL_ERROR_LEN
            {
                errors.push(FieldError::new(
                    format!("apps_status.{app}.pull_fallback.error"),
                    format!("must be at most {MAX_PULL_ERROR_LEN} bytes"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The report without what changes at every report (usage figures, time, `updated`):
    /// two reports with equal normal forms say the same about the host's state.
    #[must_use]
    pub fn normalized(&self) -> Self {
        Self {
            memory_usage: None,
            root_disk_usage: None,
            cpu_usage: CpuUsage {
                cores: self.cpu_usage.cores,
                used_percent: None,
            },
            report_creation_time: 0,
            updated: false,
            ..self.clone()
        }
    }

    /// Who made the report: its hostname and selection. A host's latest report is the latest
    /// one of this key.
    #[must_use]
    pub fn reporter(&self) -> (String, Option<String>, Option<Vec<String>>) {
        (
            self.hostname.clone(),
            self.device_group.clone(),
            self.app_names.clone(),
        )
    }
}

/// `report_insert_date` as the original's MongoDB JSON rendered a date: `{"$date": <ms>}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsertDate {
    /// Unix milliseconds.
    #[serde(rename = "$date")]
    pub millis: u64,
}

/// A report as the manager stores and returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredReport {
    /// The worker's report.
    #[serde(flatten)]
    pub report: WorkerReport,
    /// When the manager stored it.
    pub report_insert_date: InsertDate,
}

/// A report's key: 16 hex digits of insertion time (ns) + 8 random hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReportId(String);

impl ReportId {
    /// The id of a report inserted at `inserted_ns` with the random `salt`.
    #[must_use]
    pub fn new(inserted_ns: u64, salt: u32) -> Self {
        Self(format!("{inserted_ns:016x}{salt:08x}"))
    }

    /// Parses an id (24 hex digits, any case).
    ///
    /// # Errors
    /// A [`FieldError`] naming `field` when it is not one.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        if raw.len() == 24 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err(FieldError::new(
                field,
                "must be a report id: 24 hexadecimal digits",
            ))
        }
    }

    /// When the report was inserted, unix nanoseconds.
    #[must_use]
    pub fn inserted_ns(&self) -> u64 {
        u64::from_str_radix(&self.0[..16], 16).unwrap_or(0)
    }

    /// Whether a report of this id has expired at `now_ns`.
    #[must_use]
    pub fn expired(&self, now_ns: u64, ttl: Duration) -> bool {
        let ttl_ns = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        self.inserted_ns().saturating_add(ttl_ns) <= now_ns
    }

    /// The id as a string.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `report_creation_time_filter`: how `report_creation_time` compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeFilter {
    /// Equal (the default).
    #[default]
    Eq,
    /// Greater.
    Gt,
    /// Less.
    Lt,
    /// Greater or equal.
    Gte,
    /// Less or equal.
    Lte,
    /// Not equal.
    Ne,
}

impl TimeFilter {
    /// Parses `eq`, `gt`, `lt`, `gte`, `lte` or `ne`.
    ///
    /// # Errors
    /// A [`FieldError`] naming `report_creation_time_filter`.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Ok(match raw {
            "eq" => Self::Eq,
            "gt" => Self::Gt,
            "lt" => Self::Lt,
            "gte" => Self::Gte,
            "lte" => Self::Lte,
            "ne" => Self::Ne,
            _ => {
                return Err(FieldError::new(
                    "report_creation_time_filter",
                    "must be one of eq, gt, lt, gte, lte, ne",
                ));
            }
        })
    }

    fn admits(self, value: u64, bound: i64) -> bool {
        let (v, b) = (i128::from(value), i128::from(bound));
        match self {
            Self::Eq => v == b,
            Self::Gt => v > b,
            Self::Lt => v < b,
            Self::Gte => v >= b,
            Self::Lte => v <= b,
            Self::Ne => v != b,
        }
    }
}

/// The filters of `GET /api/v2/reports`; every one given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportFilter {
    /// Exact hostname.
    pub hostname: Option<String>,
    /// Exact device group.
    pub device_group: Option<String>,
    /// `report_creation_time` compared with this bound.
    pub creation_time: Option<(TimeFilter, i64)>,
    /// `updated` equal to this.
    pub updated: Option<bool>,
}

impl ReportFilter {
    /// Whether `report` matches every filter given.
    #[must_use]
    pub fn matches(&self, report: &WorkerReport) -> bool {
        self.hostname.as_ref().is_none_or(|h| *h == report.hostname)
            && self
                .device_group
                .as_ref()
                .is_none_or(|g| report.device_group.as_ref() == Some(g))
            && self
                .creation_time
                .is_none_or(|(f, bound)| f.admits(report.report_creation_time, bound))
            && self.updated.is_none_or(|u| u == report.updated)
    }
}

/// One page request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportQuery {
    /// The filters.
    pub filter: ReportFilter,
    /// Most reports returned (1 to [`MAX_PAGE_SIZE`]).
    pub page_size: usize,
    /// Only reports after this id (the previous page's `last_id`).
    pub last_id: Option<ReportId>,
}

impl Default for ReportQuery {
    fn default() -> Self {
        Self {
            filter: ReportFilter::default(),
            page_size: DEFAULT_PAGE_SIZE,
            last_id: None,
        }
    }
}

/// One page of reports, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportPage {
    /// The reports; empty at the end of the data.
    pub data: Vec<(ReportId, StoredReport)>,
}

impl ReportPage {
    /// The id to pass as `last_id` for the next page; `None` at the end of the data.
    #[must_use]
    pub fn last_id(&self) -> Option<&ReportId> {
        self.data.last().map(|(id, _)| id)
    }
}

/// The page `query` asks for among `reports` (sorted by id, as the store lists them): the
/// first `page_size` reports after `last_id` that have not expired at `now_ns` and match the
/// filters. `decode` turns a stored document into a report; undecodable ones are skipped.
pub fn page<D>(
    reports: impl IntoIterator<Item = (ReportId, D)>,
    query: &ReportQuery,
    now_ns: u64,
    ttl: Duration,
    mut decode: impl FnMut(D) -> Option<StoredReport>,
) -> ReportPage {
    let mut data = Vec::new();
    for (id, doc) in reports {
        if data.len() >= query.page_size {
            break;
        }
        if query.last_id.as_ref().is_some_and(|last| id <= *last) || id.expired(now_ns, ttl) {
            continue;
        }
        if let Some(stored) = decode(doc)
            && query.filter.matches(&stored.report)
        {
            data.push((id, stored));
        }
    }
    ReportPage { data }
}

/// `GET /api/v2/apps/<app>/status`: how the hosts that reported recently run one app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatusView {
    /// The app.
    pub app_name: String,
    /// Its current version.
    pub app_id: u64,
    /// Hosts whose latest report holds the app.
    pub hosts: u64,
    /// Version held -> number of hosts.
    pub by_app_id: BTreeMap<String, u64>,
    /// Hosts that hold the current version (and incarnation) and match it.
    pub converged: u64,
    /// Reports inserted before this time (unix seconds) have expired and do not count.
    pub reports_considered_since: u64,
}

/// Sums up the latest unexpired report of each reporter (hostname and selection) for `app`.
pub fn app_status_view(
    app: &App,
    reports: impl IntoIterator<Item = (ReportId, WorkerReport)>,
    now_ns: u64,
    ttl: Duration,
) -> AppStatusView {
    type Key = (String, Option<String>, Option<Vec<String>>);
    let mut latest: BTreeMap<Key, (ReportId, WorkerReport)> = BTreeMap::new();
    for (id, report) in reports {
        if id.expired(now_ns, ttl) {
            continue;
        }
        match latest.entry(report.reporter()) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                if e.get().0 < id {
                    e.insert((id, report));
                }
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert((id, report));
            }
        }
    }
    let mut view = AppStatusView {
        app_name: app.app_name.to_string(),
        app_id: app.app_id,
        reports_considered_since: now_ns
            .saturating_sub(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
            / 1_000_000_000,
        ..AppStatusView::default()
    };
    for (_, report) in latest.values() {
        let Some(status) = report.apps_status.get(app.app_name.as_str()) else {
            continue;
        };
        view.hosts += 1;
        *view.by_app_id.entry(status.app_id.to_string()).or_default() += 1;
        if status.converged && (status.incarnation, status.app_id) == app.revision() {
            view.converged += 1;
        }
    }
    view
}

/// Whether the host's containers of `app` (`containers`, every container labelled with its
/// name) match the version held.
#[must_use]
pub fn app_status(app: &App, host: HostResources, containers: &[&ObservedContainer]) -> AppStatus {
    let desired: Vec<_> = if app.spec.running {
        (1..=container_count(app.spec.containers_per, host))
            .filter_map(|slot| app_container(app, slot))
            .collect()
    } else {
        Vec::new()
    };
    let running = |c: &ObservedContainer| c.state == ContainerState::Running;
    let up =
        |c: &ObservedContainer| running(c) && matches!(c.health, Health::None | Health::Healthy);
    let converged = containers.len() == desired.len()
        && desired.iter().all(|spec| {
            containers.iter().any(|c| {
                c.name == spec.name && c.label(LABEL_SPEC_HASH) == Some(spec.hash()) && up(c)
            })
        });
    AppStatus {
        app_id: app.app_id,
        incarnation: app.incarnation,
        running: app.spec.running,
        desired_containers: u32::try_from(desired.len()).unwrap_or(u32::MAX),
        running_containers: u32::try_from(containers.iter().filter(|c| running(c)).count())
            .unwrap_or(u32::MAX),
        converged,
        pull_fallback: None,
        fleet_rollout: None,
    }
}

/// A container's entry in a report; `image` is the caller's (the engine's list does not say).
#[must_use]
pub fn container_report(c: &ObservedContainer, image: Option<String>) -> ContainerReport {
    let state = match c.state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Paused => "paused",
        ContainerState::Restarting => "restarting",
        ContainerState::Exited => "exited",
        ContainerState::Removing => "removing",
        ContainerState::Dead => "dead",
    };
    let health = match c.health {
        Health::None => "none",
        Health::Starting => "starting",
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
    };
    ContainerReport {
        name: c.name.clone(),
        id: c.id.to_string(),
        state: state.to_owned(),
        health: health.to_owned(),
        image,
        app_name: c.app_name().map(str::to_owned),
        app_id: c.label(LABEL_APP_ID).and_then(|v| v.parse().ok()),
        cron_job_name: crate::cron_schedule::cron_job_of(c).map(str::to_owned),
        created: c.created_at,
    }
}

/// Why a report command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The report broke validation rules; nothing was stored.
    #[error("invalid report: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The status of an app that does not exist.
    #[error("app does not exist")]
    AppNotFound,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests;
