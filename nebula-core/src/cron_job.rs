//! The cron job document: a container every worker of the job's device groups runs on a
//! schedule, and that schedule parsed ([`Schedule`]).
//!
//! [`CronJob`] is what the Store keeps, what `/info` carries to workers and what the API
//! returns. Its versions work as the app's: `cron_job_id` is 1 on create and +1 on every
//! change, and `incarnation` (creation time in ns) tells a re-created job from an old version
//! of a deleted one.
//!
//! Differences from the original, on purpose: `networks` defaults to `["nebula", "bridge"]`
//! on create too (the original stored `[]` and its workers crashed on it); a schedule is
//! refused unless it is 5-field cron that fires at least once; the fields are checked as an
//! app's are; `run_command`, `entrypoint` and the resource limits exist as for apps.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

use crate::healthcheck::Healthcheck;
use crate::model::{AppSpec, DEFAULT_NETWORKS};
use crate::store::StoreError;
use crate::validate::{self, FieldError};

/// Longest schedule accepted.
pub const MAX_SCHEDULE_LEN: usize = 256;
/// A parsed 5-field cron schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    text: String,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

pub(crate) fn at(unix: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(i64::try_from(unix).ok()?, 0)
}

impl Schedule {
    /// Parses a schedule: exactly 5 fields (or an alias such as `@hourly`), at most
    /// [`MAX_SCHEDULE_LEN`] characters, and one that fires at least once.
    ///
    /// # Errors
    /// The rule broken, as text.
    pub fn parse(text: &str) -> Result<Self, String> {
        const RULE: &str = "must be a 5-field cron schedule (minute hour day-of-month month day-of-week), such as \"*/5 * * * *\"";
        if text.len() > MAX_SCHEDULE_LEN {
            return Err(format!("{RULE}; at most {MAX_SCHEDULE_LEN} characters"));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            // `0/10` as `*/10` from 0, as croniter (the original's parser) accepts it.
            .sloppy_ranges(true)
            .build()
            .parse(text)
            .map_err(|e| format!("{RULE}: {e}"))?;
        let schedule = Self {
            cron,
            text: text.to_owned(),
        };
        // 2000-01-01: a leap year, so `0 0 29 2 *` fires; a date that never exists does not.
        if schedule.next_after(946_684_800).is_none() {
            return Err(format!("{RULE}; this one never fires"));
        }
        Ok(schedule)
    }

    /// The schedule as given.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first run strictly after `unix` (seconds), in unix seconds; `None` when it never
    /// runs again.
    #[must_use]
    pub fn next_after(&self, unix: u64) -> Option<u64> {
        let next = self.cron.find_next_occurrence(&at(unix)?, false).ok()?;
        u64::try_from(next.timestamp()).ok()
    }
}

/// A validated cron job name (the app name rule, on field `cron_job_name`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CronJobName(String);

impl CronJobName {
    /// Validates `name` as a cron job name.
    ///
    /// # Errors
    /// A [`FieldError`] naming `cron_job_name` and the rule broken.
    pub fn parse(name: &str) -> Result<Self, FieldError> {
        validate::object_name("cron_job_name", name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CronJobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn yes() -> bool {
    true
}

fn default_networks() -> Vec<String> {
    DEFAULT_NETWORKS.iter().map(|s| (*s).to_owned()).collect()
}

/// The fields a user sets on a cron job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CronJobSpec {
    /// 5-field cron, evaluated in UTC.
    pub schedule: String,
    /// `[registry/]name[:tag][@sha256:digest]`.
    pub docker_image: String,
    /// The container environment.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Whether the job is scheduled.
    #[serde(default = "yes")]
    pub running: bool,
    /// Networks: `host` or `none` alone, or user networks (the first is used at create).
    #[serde(default = "default_networks")]
    pub networks: Vec<String>,
    /// Binds, `host:container[:mode]`, as `docker run -v`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Devices, `host[:container[:rwm]]`.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Run privileged.
    #[serde(default)]
    pub privileged: bool,
    /// Memory limit of the container, in MB (absent: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mb: Option<u64>,
    /// CPU limit of the container, in CPUs (absent: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<f64>,
    /// Overrides the image's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_command: Option<Vec<String>>,
    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Overrides (or disables) the image's HEALTHCHECK in the run's container; absent: the
    /// image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
}

impl CronJobSpec {
    /// A spec with the defaults, the given schedule and image.
    #[must_use]
    pub fn new(schedule: &str, docker_image: &str) -> Self {
        Self {
            schedule: schedule.to_owned(),
            docker_image: docker_image.to_owned(),
            env_vars: BTreeMap::new(),
            running: true,
            networks: default_networks(),
            volumes: Vec::new(),
            devices: Vec::new(),
            privileged: false,
            memory_limit_mb: None,
            cpu_limit: None,
            run_command: None,
            entrypoint: None,
            healthcheck: None,
        }
    }

    /// The app spec with the same container fields, so the app rules check them.
    fn as_app_spec(&self) -> AppSpec {
        let mut app = AppSpec::with_image(&self.docker_image);
        app.env_vars.clone_from(&self.env_vars);
        app.networks.clone_from(&self.networks);
        app.volumes.clone_from(&self.volumes);
        app.devices.clone_from(&self.devices);
        app.privileged = self.privileged;
        app.memory_limit_mb = self.memory_limit_mb;
        app.cpu_limit = self.cpu_limit;
        app.run_command.clone_from(&self.run_command);
        app.entrypoint.clone_from(&self.entrypoint);
        app.healthcheck.clone_from(&self.healthcheck);
        app
    }

    /// The parsed schedule.
    ///
    /// # Errors
    /// A [`FieldError`] on `schedule`.
    pub fn parsed_schedule(&self) -> Result<Schedule, FieldError> {
        Schedule::parse(&self.schedule).map_err(|rule| FieldError::new("schedule", rule))
    }
}

/// Checks every field of a cron job spec: the schedule, and the container fields by the app
/// rules (image, env vars, networks, volumes, devices, limits, command).
///
/// # Errors
/// Every rule broken, each naming its field.
pub fn validate_spec(spec: &CronJobSpec) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Err(e) = spec.parsed_schedule() {
        errors.push(e);
    }
    if let Err(e) = validate::spec(&spec.as_app_spec()) {
        errors.extend(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// A cron job as stored: the spec plus its identity and versions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CronJob {
    /// The job's name.
    pub cron_job_name: CronJobName,
    /// The version: 1 on create, +1 on every change.
    pub cron_job_id: u64,
    /// Creation time in ns: a job deleted and created again has a larger one.
    #[serde(default)]
    pub incarnation: u64,
    /// The user's fields.
    #[serde(flatten)]
    pub spec: CronJobSpec,
}

impl CronJob {
    /// The (incarnation, version) pair workers compare: a document is taken only when its
    /// pair is greater than the one held.
    #[must_use]
    pub fn revision(&self) -> (u64, u64) {
        (self.incarnation, self.cron_job_id)
    }
}

/// A partial update (PUT/PATCH `/update`): only the fields given change.
#[derive(Clone, Debug, Default, PartialEq)]
#[allow(missing_docs)]
pub struct CronJobPatch {
    pub schedule: Option<String>,
    pub docker_image: Option<String>,
    pub env_vars: Option<BTreeMap<String, String>>,
    pub running: Option<bool>,
    pub networks: Option<Vec<String>>,
    pub volumes: Option<Vec<String>>,
    pub devices: Option<Vec<String>>,
    pub privileged: Option<bool>,
    pub memory_limit_mb: Option<Option<u64>>,
    pub cpu_limit: Option<Option<f64>>,
    pub run_command: Option<Option<Vec<String>>>,
    pub entrypoint: Option<Option<Vec<String>>>,
    pub healthcheck: Option<Option<Healthcheck>>,
}

impl CronJobPatch {
    /// Whether the patch changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Applies the patch to a spec.
    pub fn apply(self, spec: &mut CronJobSpec) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { spec.$f = v; } )* };
        }
        set!(
            schedule,
            docker_image,
            env_vars,
            running,
            networks,
            volumes,
            devices,
            privileged,
            memory_limit_mb,
            cpu_limit,
            run_command,
            entrypoint,
            healthcheck
        );
    }
}

/// Why a cron job command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CronJobError {
    /// Create of a job that exists.
    #[error("cron job exists")]
    Exists,
    /// Any command on a job that does not exist.
    #[error("cron job does not exist")]
    NotFound,
    /// The input broke validation rules; nothing was stored.
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The document kept changing under this write.
    #[error("too many concurrent writes to the same cron job; try again")]
    Contended,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CronJobError {
    /// Whether the schedule is one of the fields refused.
    #[must_use]
    pub fn schedule_invalid(&self) -> bool {
        matches!(self, Self::Invalid(errors) if errors.iter().any(|e| e.field == "schedule"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_job_json_shape_round_trips() {
        let job = CronJob {
            cron_job_name: CronJobName::parse("backup").unwrap(),
            cron_job_id: 2,
            incarnation: 9,
            spec: CronJobSpec::new("0 * * * *", "backup:1"),
        };
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"cron_job_name": "backup", "cron_job_id": 2, "incarnation": 9,
                "schedule": "0 * * * *", "docker_image": "backup:1", "env_vars": {}, "running": true,
                "networks": ["nebula", "bridge"], "volumes": [], "devices": [], "privileged": false})
        );
        assert_eq!(serde_json::from_value::<CronJob>(json).unwrap(), job);
        // A document of the original (no incarnation, networks []) still reads.
        let old = serde_json::json!({"cron_job_name": "b", "cron_job_id": 4, "schedule": "* * * * *",
            "docker_image": "x", "env_vars": {}, "running": false, "networks": [], "volumes": [],
            "devices": [], "privileged": false});
        let old: CronJob = serde_json::from_value(old).unwrap();
        assert_eq!((old.incarnation, old.cron_job_id), (0, 4));
    }

    #[test]
    fn validation_names_every_field() {
        assert!(validate_spec(&CronJobSpec::new("*/5 * * * *", "nginx")).is_ok());
        let mut bad = CronJobSpec::new("every minute", "BAD IMAGE");
        bad.networks = vec!["host".into(), "bridge".into()];
        bad.volumes = vec!["relative".into()];
        bad.env_vars.insert("1X".into(), "v".into());
        bad.healthcheck = Some(Healthcheck::Check(crate::healthcheck::Probe {
            retries: Some(0),
            ..crate::healthcheck::Probe::default()
        }));
        let errors = validate_spec(&bad).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "schedule",
                "docker_image",
                "env_vars",
                "networks",
                "volumes[0]",
                "healthcheck.retries"
            ]
        );
        let e = CronJobError::Invalid(errors);
        assert!(e.schedule_invalid());
        assert!(
            !CronJobError::Invalid(vec![FieldError::new("docker_image", "x")]).schedule_invalid()
        );
        assert!(CronJobName::parse("a b").is_err_and(|e| e.field == "cron_job_name"));
    }

    #[test]
    fn patch_changes_only_what_it_names() {
        let mut spec = CronJobSpec::new("* * * * *", "a");
        let patch = CronJobPatch {
            schedule: Some("0 0 * * *".into()),
            run_command: Some(Some(vec!["true".into()])),
            ..CronJobPatch::default()
        };
        assert!(!patch.is_empty());
        patch.apply(&mut spec);
        assert_eq!(spec.schedule, "0 0 * * *");
        assert_eq!(spec.docker_image, "a");
        assert_eq!(spec.run_command, Some(vec!["true".into()]));
        assert!(CronJobPatch::default().is_empty());
    }
}
