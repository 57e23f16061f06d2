//! Cron schedules and the pure decisions about cron containers: when a job runs next, what
//! container one run is, and which finished containers go.
//!
//! Schedules are standard 5-field cron (`minute hour day-of-month month day-of-week`, with
//! names, ranges, lists, steps and `@hourly`-style aliases), parsed by `croner` and evaluated
//! in UTC. As with Vixie cron, when both day fields are restricted a day matching either runs.
//! [`Schedule`] itself lives with the cron job document (`cron_job`, which validates it) and
//! is re-exported here, so this module builds on `cron_job` and never the other way round.
//!
//! Nothing here reads a clock: `now` is always an argument.

use std::collections::{BTreeMap, BTreeSet};

use crate::container::{
    ContainerId, ContainerSpec, ContainerState, LABEL_CONTAINER_TYPE, LABEL_INCARNATION,
    LABEL_ORCHESTRATOR, LABEL_OWNER, NetworkMode, ORCHESTRATOR, ObservedContainer,
};
use crate::cron_job::CronJob;
pub use crate::cron_job::{MAX_SCHEDULE_LEN, Schedule};
use crate::model::DEFAULT_NETWORKS;

/// Label: the cron job's name (as the original's `cron_job_name` label).
pub const LABEL_CRON_JOB_NAME: &str = "cron_job_name";
/// Value of [`LABEL_CONTAINER_TYPE`] on cron containers.
pub const CONTAINER_TYPE_CRON_JOB: &str = "cron_job";
/// Label: the cron job version the container was created for (informational).
pub const LABEL_CRON_JOB_ID: &str = "nebula.cron_job_id";
/// Label: the scheduled run (unix seconds) the container is for.
pub const LABEL_SCHEDULED_AT: &str = "nebula.scheduled_at";
/// A cron container still `created` (never started) this long after its creation is
/// treated as finished.
pub const CREATED_GRACE_SECS: u64 = 60;

/// The container name of the run of `job` scheduled at `unix`: `<job>-<unix>-1`. Every host
/// of a group names the same run the same, and a restarted worker never runs it twice.
#[must_use]
pub fn cron_container_name(job: &str, unix: u64) -> String {
    format!("{job}-{unix}-1")
}

/// The container of the run of `job` scheduled at `unix`: the job's image, environment,
/// binds, devices and networks, no ports and no restart policy, labelled
/// `orchestrator=nebula`, `cron_job_name=<job>`, `container_type=cron_job`.
#[must_use]
pub fn cron_container(job: &CronJob, unix: u64) -> ContainerSpec {
    let s = &job.spec;
    let image = crate::image::ImageRef::parse(&s.docker_image)
        .map_or_else(|_| s.docker_image.clone(), |r| r.canonical());
    // The original stored `networks: []` for jobs created without them and then crashed; an
    // empty list means the defaults here.
    let networks = if s.networks.is_empty() {
        DEFAULT_NETWORKS.iter().map(|n| (*n).to_owned()).collect()
    } else {
        s.networks.clone()
    };
    let network = match networks.first().map(String::as_str) {
        Some("host") => NetworkMode::Host,
        Some("none") => NetworkMode::None,
        _ => NetworkMode::Networks(networks),
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    ContainerSpec {
        name: cron_container_name(job.cron_job_name.as_str(), unix),
        image,
        env: s.env_vars.clone(),
        ports: Vec::new(),
        binds: s.volumes.clone(),
        devices: s.devices.clone(),
        privileged: s.privileged,
        network,
        restart_unless_stopped: false,
        memory_bytes: s.memory_limit_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
        nano_cpus: s.cpu_limit.map(|c| (c * 1e9) as u64),
        command: s.run_command.clone(),
        entrypoint: s.entrypoint.clone(),
        healthcheck: s.healthcheck.clone(),
        labels: BTreeMap::from([
            (LABEL_ORCHESTRATOR.to_owned(), ORCHESTRATOR.to_owned()),
            (
                LABEL_CRON_JOB_NAME.to_owned(),
                job.cron_job_name.to_string(),
            ),
            (
                LABEL_CONTAINER_TYPE.to_owned(),
                CONTAINER_TYPE_CRON_JOB.to_owned(),
            ),
            (LABEL_CRON_JOB_ID.to_owned(), job.cron_job_id.to_string()),
            (LABEL_INCARNATION.to_owned(), job.incarnation.to_string()),
            (LABEL_SCHEDULED_AT.to_owned(), unix.to_string()),
        ]),
    }
}

/// The cron job a container belongs to, if Nebula manages it as a cron container.
#[must_use]
pub fn cron_job_of(container: &ObservedContainer) -> Option<&str> {
    if container.label(LABEL_ORCHESTRATOR) == Some(ORCHESTRATOR)
        && container.label(LABEL_CONTAINER_TYPE) == Some(CONTAINER_TYPE_CRON_JOB)
    {
        container.label(LABEL_CRON_JOB_NAME)
    } else {
        None
    }
}

/// Whether a cron container is done: exited or dead, or never started for
/// [`CREATED_GRACE_SECS`].
#[must_use]
pub fn finished(container: &ObservedContainer, now: u64) -> bool {
    match container.state {
        ContainerState::Exited | ContainerState::Dead => true,
        ContainerState::Created => now.saturating_sub(container.created_at) >= CREATED_GRACE_SECS,
        ContainerState::Running
        | ContainerState::Paused
        | ContainerState::Restarting
        | ContainerState::Removing => false,
    }
}

/// Why a cron container is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupReason {
    /// Its run is over.
    Finished,
    /// Its job is no longer one this worker runs.
    JobGone,
}

/// One cron container to remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronCleanup {
    /// The engine's id.
    pub id: ContainerId,
    /// The container's name.
    pub name: String,
    /// Why.
    pub reason: CleanupReason,
}

/// Which cron containers to remove, given the jobs this worker runs (`jobs`, whatever their
/// `running` flag), the jobs that left it while it ran (`dropped`), its owner label and the
/// time:
/// - finished containers of `jobs` (a running one is left to finish, even when its job was
///   stopped);
/// - every container of a job not in `jobs` that carries `owner` (any container when `owner`
///   is `None`) or whose job is in `dropped`.
///
/// Containers of other jobs without this worker's owner label are never touched.
#[must_use]
pub fn plan_cron_cleanup(
    jobs: &BTreeSet<&str>,
    dropped: &BTreeSet<&str>,
    observed: &[ObservedContainer],
    owner: Option<&str>,
    now: u64,
) -> Vec<CronCleanup> {
    observed
        .iter()
        .filter_map(|c| {
            let job = cron_job_of(c)?;
            let reason = if jobs.contains(job) {
                finished(c, now).then_some(CleanupReason::Finished)?
            } else if dropped.contains(job) || owner.is_none_or(|o| c.label(LABEL_OWNER) == Some(o))
            {
                CleanupReason::JobGone
            } else {
                return None;
            };
            Some(CronCleanup {
                id: c.id.clone(),
                name: c.name.clone(),
                reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Health;
    use crate::cron_job::at;
    use crate::cron_job::{CronJobName, CronJobSpec};
    use proptest::prelude::*;

    /// 2023-11-14T22:13:20Z.
    const T: u64 = 1_700_000_000;

    fn sched(s: &str) -> Schedule {
        Schedule::parse(s).unwrap()
    }

    #[test]
    fn every_minute_runs_at_the_next_minute_boundary() {
        let s = sched("* * * * *");
        assert_eq!(s.next_after(T), Some(T + 40));
        assert_eq!(s.next_after(T + 40), Some(T + 100), "strictly after");
        assert_eq!(s.next_after(T + 39), Some(T + 40));
    }

    #[test]
    fn fields_aliases_and_names() {
        // 22:13:20 -> 22:15
        assert_eq!(sched("*/5 * * * *").next_after(T), Some(T + 100));
        // 0/10 is croniter's spelling of */10.
        assert_eq!(sched("0/10 * * * *").next_after(T), Some(T + 400));
        assert_eq!(sched("@hourly").next_after(T), Some(1_700_002_800));
        // Tuesday 2023-11-14 22:13 -> Wednesday 12:00 UTC.
        assert_eq!(sched("0 12 * * MON-FRI").next_after(T), Some(1_700_049_600));
        assert_eq!(sched("0 0 1 jan *").next_after(T), Some(1_704_067_200));
        // Vixie OR of the two day fields: the 1st of the month or any Sunday.
        assert_eq!(sched("0 0 1 * 0").next_after(T), Some(1_700_352_000));
        assert_eq!(sched("0 0 29 2 *").next_after(T), Some(1_709_164_800));
    }

    #[test]
    fn bad_schedules_are_refused_with_the_rule() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "61 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "a b c d e",
            "0 0 30 2 *",
            "0 0 31 4 *",
            "@reboot",
        ] {
            let e = Schedule::parse(bad).expect_err(bad);
            assert!(e.contains("5-field cron schedule"), "{bad}: {e}");
        }
        assert!(Schedule::parse(&"1,".repeat(200)).is_err());
    }

    fn job(name: &str) -> CronJob {
        CronJob {
            cron_job_name: CronJobName::parse(name).unwrap(),
            cron_job_id: 3,
            incarnation: 7,
            spec: CronJobSpec::new("* * * * *", "127.0.0.1:5000/tools/backup"),
        }
    }

    #[test]
    fn the_container_of_a_run() {
        let mut j = job("backup");
        j.spec.env_vars.insert("A".into(), "1".into());
        j.spec.run_command = Some(vec!["sh".into(), "-c".into(), "echo ran".into()]);
        let c = cron_container(&j, T);
        assert_eq!(c.name, "backup-1700000000-1");
        assert_eq!(c.image, "127.0.0.1:5000/tools/backup:latest");
        assert!(!c.restart_unless_stopped);
        assert!(c.ports.is_empty());
        assert_eq!(c.env["A"], "1");
        assert_eq!(c.command.as_deref().map(<[String]>::len), Some(3));
        assert_eq!(
            c.network,
            NetworkMode::Networks(vec!["nebula".into(), "bridge".into()])
        );
        assert_eq!(c.labels[LABEL_ORCHESTRATOR], "nebula");
        assert_eq!(c.labels[LABEL_CRON_JOB_NAME], "backup");
        assert_eq!(c.labels[LABEL_CONTAINER_TYPE], "cron_job");
        assert_eq!(c.labels[LABEL_SCHEDULED_AT], "1700000000");
        assert_eq!(c.healthcheck, None, "absent: the image's HEALTHCHECK");
        j.spec.healthcheck = Some(crate::healthcheck::Healthcheck::Disable);
        assert_eq!(
            cron_container(&j, T).healthcheck,
            Some(crate::healthcheck::Healthcheck::Disable)
        );
        // The original's stored `networks: []` means the defaults, never a crash.
        j.spec.networks.clear();
        assert_eq!(
            cron_container(&j, T).network,
            NetworkMode::Networks(vec!["nebula".into(), "bridge".into()])
        );
        j.spec.networks = vec!["host".into()];
        assert_eq!(cron_container(&j, T).network, NetworkMode::Host);
    }

    fn observed(
        name: &str,
        job: &str,
        state: ContainerState,
        owner: Option<&str>,
    ) -> ObservedContainer {
        let mut labels = cron_container(&self::job(job), T).labels;
        if let Some(o) = owner {
            labels.insert(LABEL_OWNER.into(), o.into());
        }
        ObservedContainer {
            id: ContainerId(format!("id-{name}")),
            name: name.into(),
            labels,
            state,
            health: Health::None,
            created_at: T,
        }
    }

    #[test]
    fn cleanup_removes_finished_runs_and_jobs_that_left() {
        use ContainerState::{Created, Dead, Exited, Running};
        let me = Some("dg/edge");
        let c = [
            observed("a-1", "a", Running, me),
            observed("a-2", "a", Exited, me),
            observed("a-3", "a", Dead, None),
            observed("a-4", "a", Created, me),
            observed("gone-1", "gone", Running, me),
            observed("foreign-1", "foreign", Exited, Some("other")),
            observed("left-1", "left", Running, Some("other")),
        ];
        let jobs = BTreeSet::from(["a"]);
        let dropped = BTreeSet::from(["left"]);
        let names = |now| -> Vec<(String, CleanupReason)> {
            plan_cron_cleanup(&jobs, &dropped, &c, me, now)
                .into_iter()
                .map(|x| (x.name, x.reason))
                .collect()
        };
        use CleanupReason::{Finished, JobGone};
        assert_eq!(
            names(T + 1),
            [
                ("a-2".into(), Finished),
                ("a-3".into(), Finished),
                ("gone-1".into(), JobGone),
                ("left-1".into(), JobGone),
            ]
        );
        // A container that never started is finished after the grace.
        assert!(names(T + CREATED_GRACE_SECS).contains(&("a-4".into(), Finished)));
        // Without an owner every container of a job not run here is this worker's.
        let all = plan_cron_cleanup(&jobs, &BTreeSet::new(), &c, None, T);
        assert_eq!(all.len(), 5);
        // Apps are never touched.
        let mut app = observed("x-1", "x", Exited, me);
        app.labels.insert(LABEL_CONTAINER_TYPE.into(), "app".into());
        assert!(plan_cron_cleanup(&jobs, &dropped, &[app], me, T).is_empty());
    }

    /// An independent matcher for the subset the property test generates.
    fn field_matches(field: &str, value: u32, min: u32, max: u32) -> bool {
        field.split(',').any(|part| {
            if part == "*" {
                return true;
            }
            if let Some(step) = part.strip_prefix("*/") {
                let step: u32 = step.parse().unwrap();
                return (value - min).is_multiple_of(step) && value <= max;
            }
            if let Some((a, b)) = part.split_once('-') {
                let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
                return (a..=b).contains(&value);
            }
            part.parse::<u32>().unwrap() == value
        })
    }

    fn fires(fields: [&str; 5], unix: u64) -> bool {
        use chrono::{Datelike, Timelike};
        let t = at(unix).unwrap();
        let dom = field_matches(fields[2], t.day(), 1, 31);
        let dow = field_matches(fields[4], t.weekday().num_days_from_sunday(), 0, 6);
        let day = if fields[2] != "*" && fields[4] != "*" {
            dom || dow
        } else {
            dom && dow
        };
        unix.is_multiple_of(60)
            && field_matches(fields[0], t.minute(), 0, 59)
            && field_matches(fields[1], t.hour(), 0, 23)
            && field_matches(fields[3], t.month(), 1, 12)
            && day
    }

    proptest! {
        #[test]
        fn next_run_is_the_first_matching_minute_after_start(
            minute in prop::sample::select(vec!["*", "0", "*/7", "5-10", "15,45", "59"]),
            hour in prop::sample::select(vec!["*", "0", "*/3", "9-17", "23"]),
            dom in prop::sample::select(vec!["*", "1", "15", "28", "1-7"]),
            month in prop::sample::select(vec!["*", "1", "*/2", "6-8"]),
            dow in prop::sample::select(vec!["*", "0", "1-5", "6"]),
            start in 1_600_000_000u64..1_900_000_000,
        ) {
            let fields = [minute, hour, dom, month, dow];
            let s = Schedule::parse(&fields.join(" ")).unwrap();
            let next = s.next_after(start).unwrap();
            prop_assert!(next > start);
            prop_assert!(fires(fields, next), "{:?} does not fire at {}", fields, next);
            // No earlier minute fires (scanned up to two days after start).
            let first = (start / 60 + 1) * 60;
            for t in (first..next.min(start + 2 * 86_400)).step_by(60) {
                prop_assert!(!fires(fields, t), "{:?} fires at {} before {}", fields, t, next);
            }
        }
    }
}
