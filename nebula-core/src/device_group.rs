//! Device groups: named sets of apps (and, later, cron jobs) that a fleet of workers runs.
//!
//! A [`DeviceGroup`] is what the Store keeps and the API returns; [`DeviceGroupInfo`] is the
//! whole desired state of a group (`GET /api/v2/device_groups/<dg>/info`), what a worker with
//! `DEVICE_GROUP` syncs from.
//!
//! # Versions
//! - `device_group_id`: 1 on create, +1 on every membership update (and when a deleted app is
//!   taken out of the group). Workers remove apps that left the group only when it rises, so a
//!   stale reply never removes anything.
//! - `prune_id`: 1 on create, +1 on every prune request. A worker removes unused images when it
//!   rises above the value it last applied.
//! - `incarnation`: creation time in ns, so a group deleted and created again (ids back at 1)
//!   is never mistaken for an old version of the deleted one.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cron_job::CronJob;
use crate::model::{App, AppName};
use crate::store::StoreError;
use crate::validate::{self, FieldError};

/// A validated device group name (the app name rule, on field `device_group`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceGroupName(String);

impl DeviceGroupName {
    /// Validates `name` as a device group name.
    ///
    /// # Errors
    /// A [`FieldError`] naming `device_group` and the rule broken.
    pub fn parse(name: &str) -> Result<Self, FieldError> {
        validate::object_name("device_group", name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceGroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a device group holds: the names of its apps and cron jobs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// App names; each must name an existing app when written.
    pub apps: Vec<AppName>,
    /// Cron job names; each must name an existing cron job when written.
    pub cron_jobs: Vec<String>,
}

impl Members {
    /// Drops repeated names, keeping the first of each.
    #[must_use]
    pub fn deduplicated(mut self) -> Self {
        dedup(&mut self.apps);
        dedup(&mut self.cron_jobs);
        self
    }
}

fn dedup<T: Ord + Clone>(items: &mut Vec<T>) {
    let mut seen = std::collections::BTreeSet::new();
    items.retain(|i| seen.insert(i.clone()));
}

/// A partial membership update (PUT/PATCH `/update`): only the lists given change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembersPatch {
    /// New app list.
    pub apps: Option<Vec<AppName>>,
    /// New cron job list.
    pub cron_jobs: Option<Vec<String>>,
}

impl MembersPatch {
    /// Whether the patch changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.apps.is_none() && self.cron_jobs.is_none()
    }
}

/// A device group as stored and returned by `GET /api/v2/device_groups/<dg>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceGroup {
    /// The group's name.
    pub device_group: DeviceGroupName,
    /// The apps every worker of the group runs.
    pub apps: Vec<AppName>,
    /// The cron jobs every worker of the group runs.
    #[serde(default)]
    pub cron_jobs: Vec<String>,
    /// Membership version: 1 on create, +1 per update.
    pub device_group_id: u64,
    /// Prune version: 1 on create, +1 per prune request.
    pub prune_id: u64,
    /// Creation time in ns; a re-created group has a larger one.
    pub incarnation: u64,
}

impl DeviceGroup {
    /// The (incarnation, version) pair workers compare.
    #[must_use]
    pub fn revision(&self) -> (u64, u64) {
        (self.incarnation, self.device_group_id)
    }
}

/// The whole desired state of a device group: what `/info` returns and workers apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceGroupInfo {
    /// The full documents of the group's apps that exist, in the group's order.
    pub apps: Vec<App>,
    /// The app names the group lists.
    pub apps_list: Vec<AppName>,
    /// The full documents of the group's cron jobs that exist, in the group's order.
    #[serde(default)]
    pub cron_jobs: Vec<CronJob>,
    /// The cron job names the group lists.
    #[serde(default)]
    pub cron_jobs_list: Vec<String>,
    /// The group's prune version.
    pub prune_id: u64,
    /// The group's membership version.
    pub device_group_id: u64,
    /// The group's incarnation.
    pub incarnation: u64,
}

impl DeviceGroupInfo {
    /// The (incarnation, version) pair workers compare.
    #[must_use]
    pub fn revision(&self) -> (u64, u64) {
        (self.incarnation, self.device_group_id)
    }
}

/// Why a device group command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceGroupError {
    /// Create of a group that exists.
    #[error("device group exists")]
    Exists,
    /// Any command on a group that does not exist.
    #[error("device group does not exist")]
    NotFound,
    /// The members name an app that does not exist; nothing was stored.
    #[error("app {0} does not exist")]
    AppNotFound(String),
    /// The members name a cron job that does not exist; nothing was stored.
    #[error("cron job {0} does not exist")]
    CronJobNotFound(String),
    /// The input broke validation rules; nothing was stored.
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The document kept changing under this write.
    #[error("too many concurrent writes to the same device group; try again")]
    Contended,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks a members list: at most [`validate::MAX_LIST_LEN`] entries each, cron job names
/// well-formed.
///
/// # Errors
/// The rules broken, naming `apps` or `cron_jobs`.
pub fn validate_members(
    apps: Option<&[AppName]>,
    cron_jobs: Option<&[String]>,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let too_long = format!("must have at most {} entries", validate::MAX_LIST_LEN);
    if apps.is_some_and(|a| a.len() > validate::MAX_LIST_LEN) {
        errors.push(FieldError::new("apps", &too_long));
    }
    if let Some(jobs) = cron_jobs {
        if jobs.len() > validate::MAX_LIST_LEN {
            errors.push(FieldError::new("cron_jobs", &too_long));
        }
        for job in jobs {
            if let Err(e) = validate::object_name("cron_jobs", job) {
                errors.push(FieldError::new(e.field, format!("{job:?}: {}", e.rule)));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_json_shape_round_trips() {
        let group = DeviceGroup {
            device_group: DeviceGroupName::parse("edge").unwrap(),
            apps: vec![AppName::parse("site").unwrap()],
            cron_jobs: vec!["backup".into()],
            device_group_id: 2,
            prune_id: 1,
            incarnation: 9,
        };
        let json = serde_json::to_value(&group).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"device_group": "edge", "apps": ["site"], "cron_jobs": ["backup"],
                "device_group_id": 2, "prune_id": 1, "incarnation": 9})
        );
        assert_eq!(serde_json::from_value::<DeviceGroup>(json).unwrap(), group);
    }

    #[test]
    fn names_and_members_are_checked() {
        assert!(DeviceGroupName::parse("a b").is_err_and(|e| e.field == "device_group"));
        assert!(validate_members(None, Some(&["ok".into()])).is_ok());
        let errors = validate_members(None, Some(&["bad name".into()])).unwrap_err();
        assert_eq!(errors[0].field, "cron_jobs");
        let many: Vec<AppName> = (0..=validate::MAX_LIST_LEN)
            .map(|i| AppName::parse(&format!("a{i}")).unwrap())
            .collect();
        assert_eq!(
            validate_members(Some(&many), None).unwrap_err()[0].field,
            "apps"
        );
        let m = Members {
            apps: vec![AppName::parse("a").unwrap(), AppName::parse("a").unwrap()],
            cron_jobs: vec![],
        };
        assert_eq!(m.deduplicated().apps.len(), 1);
    }
}
