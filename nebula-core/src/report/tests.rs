use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::container::{ContainerId, LABEL_APP_NAME, LABEL_CONTAINER_TYPE, LABEL_ORCHESTRATOR};
use crate::model::{AppName, AppSpec, ContainersPer, RestartMode};

const SEC: u64 = 1_000_000_000;
const TTL: Duration = Duration::from_secs(3600);

fn report(host: &str, group: Option<&str>, time: u64, updated: bool) -> WorkerReport {
    WorkerReport {
        hostname: host.into(),
        device_group: group.map(str::to_owned),
        report_creation_time: time,
        updated,
        ..WorkerReport::default()
    }
}

fn stored(r: WorkerReport) -> StoredReport {
    StoredReport {
        report: r,
        report_insert_date: InsertDate { millis: 0 },
    }
}

fn id(sec: u64, salt: u32) -> ReportId {
    ReportId::new(sec * SEC, salt)
}

fn ids(page: &ReportPage) -> Vec<String> {
    page.data.iter().map(|(i, _)| i.to_string()).collect()
}

#[test]
fn ids_sort_by_insertion_and_carry_their_time() {
    let a = ReportId::new(5, 0xffff_ffff);
    let b = ReportId::new(6, 0);
    assert!(a < b);
    assert_eq!(a.as_str().len(), 24);
    assert_eq!(b.inserted_ns(), 6);
    assert_eq!(
        ReportId::parse("last_id", &a.to_string().to_uppercase()).unwrap(),
        a
    );
    for bad in [
        "",
        "xyz",
        "0000000000000000000000000",
        "00000000000000000000000g",
    ] {
        assert_eq!(
            ReportId::parse("last_id", bad).unwrap_err().field,
            "last_id"
        );
    }
    let t = id(100, 1);
    assert!(!t.expired(100 * SEC + TTL.as_nanos() as u64 - 1, TTL));
    assert!(t.expired(100 * SEC + TTL.as_nanos() as u64, TTL));
}

#[test]
fn time_filters_compare_as_the_reference() {
    assert_eq!(TimeFilter::parse("gte").unwrap(), TimeFilter::Gte);
    assert_eq!(
        TimeFilter::parse("GT").unwrap_err().field,
        "report_creation_time_filter"
    );
    let cases = [
        (TimeFilter::Eq, [false, true, false]),
        (TimeFilter::Gt, [false, false, true]),
        (TimeFilter::Lt, [true, false, false]),
        (TimeFilter::Gte, [false, true, true]),
        (TimeFilter::Lte, [true, true, false]),
        (TimeFilter::Ne, [true, false, true]),
    ];
    for (f, expect) in cases {
        let got: Vec<bool> = [9, 10, 11].iter().map(|v| f.admits(*v, 10)).collect();
        assert_eq!(got, expect, "{f:?}");
    }
    assert!(TimeFilter::Gt.admits(0, -1), "negative bounds compare too");
}

#[test]
fn filters_are_exact_and_all_must_match() {
    let r = report("h1", Some("edge"), 100, true);
    let mut f = ReportFilter::default();
    assert!(f.matches(&r));
    f.hostname = Some("h1".into());
    f.device_group = Some("edge".into());
    f.creation_time = Some((TimeFilter::Gte, 100));
    f.updated = Some(true);
    assert!(f.matches(&r));
    for broken in [
        ReportFilter {
            hostname: Some("h".into()),
            ..f.clone()
        },
        ReportFilter {
            device_group: Some("edg".into()),
            ..f.clone()
        },
        ReportFilter {
            creation_time: Some((TimeFilter::Gt, 100)),
            ..f.clone()
        },
        ReportFilter {
            updated: Some(false),
            ..f.clone()
        },
    ] {
        assert!(!broken.matches(&r), "{broken:?}");
    }
    let by_name = report("h1", None, 100, true);
    assert!(
        !ReportFilter {
            device_group: Some("edge".into()),
            ..ReportFilter::default()
        }
        .matches(&by_name),
        "a worker without a group never matches a group filter"
    );
}

#[test]
fn pages_follow_ids_skip_expired_and_end_empty() {
    let now = 10_000 * SEC;
    let all: Vec<(ReportId, StoredReport)> = vec![
        // Expired: inserted more than an hour before now.
        (
            id(10_000 - 3600, 1),
            stored(report("a", Some("g"), 1, true)),
        ),
        (
            id(10_000 - 3599, 1),
            stored(report("a", Some("g"), 2, true)),
        ),
        (id(10_000 - 30, 1), stored(report("b", Some("g"), 3, false))),
        (id(10_000 - 20, 1), stored(report("a", Some("h"), 4, false))),
        (id(10_000 - 10, 1), stored(report("a", Some("g"), 5, true))),
    ];
    let run = |q: &ReportQuery| page(all.clone(), q, now, TTL, Some);
    let mut q = ReportQuery {
        page_size: 2,
        ..ReportQuery::default()
    };
    let first = run(&q);
    assert_eq!(
        ids(&first),
        vec![all[1].0.to_string(), all[2].0.to_string()]
    );
    q.last_id = first.last_id().cloned();
    let second = run(&q);
    assert_eq!(
        ids(&second),
        vec![all[3].0.to_string(), all[4].0.to_string()]
    );
    q.last_id = second.last_id().cloned();
    let end = run(&q);
    assert!(end.data.is_empty());
    assert_eq!(end.last_id(), None);

    let filtered = run(&ReportQuery {
        filter: ReportFilter {
            hostname: Some("a".into()),
            device_group: Some("g".into()),
            ..ReportFilter::default()
        },
        ..ReportQuery::default()
    });
    let times: Vec<u64> = filtered
        .data
        .iter()
        .map(|(_, s)| s.report.report_creation_time)
        .collect();
    assert_eq!(times, vec![2, 5], "expired report 1 is never returned");

    let later = page(
        all.clone(),
        &ReportQuery::default(),
        now + 3600 * SEC,
        TTL,
        Some,
    );
    assert!(later.data.is_empty(), "everything expires");
    let undecodable = page(all, &ReportQuery::default(), now, TTL, |_: StoredReport| {
        None
    });
    assert!(undecodable.data.is_empty());
}

fn app(app_id: u64, incarnation: u64, servers: u32) -> App {
    let mut spec = AppSpec::with_image("site");
    spec.containers_per = ContainersPer::Server(servers);
    App {
        app_name: AppName::parse("site").unwrap(),
        app_id,
        incarnation,
        restart_generation: 0,
        restart_mode: RestartMode::AsConfigured,
        prune_generation: 0,
        spec,
        fleet_rollout: None,
    }
}

fn status(app_id: u64, incarnation: u64, converged: bool) -> BTreeMap<String, AppStatus> {
    BTreeMap::from([(
        "site".to_owned(),
        AppStatus {
            app_id,
            incarnation,
            running: true,
            desired_containers: 1,
            running_containers: 1,
            converged,
            pull_fallback: None,
            fleet_rollout: None,
        },
    )])
}

#[test]
fn status_view_counts_the_latest_report_of_each_host() {
    let now = 10_000 * SEC;
    let current = app(3, 7, 1);
    let with = |host: &str, st| WorkerReport {
        apps_status: st,
        ..report(host, Some("g"), 0, false)
    };
    let reports = vec![
        // h1: an old report at version 2, then the latest at 3, converged.
        (id(9_000, 1), with("h1", status(2, 7, true))),
        (id(9_500, 1), with("h1", status(3, 7, true))),
        // h2: at 3 but not converged yet.
        (id(9_600, 1), with("h2", status(3, 7, false))),
        // h3: converged at 2.
        (id(9_700, 1), with("h3", status(2, 7, true))),
        // h4: version 3 of an older incarnation: not converged to the current app.
        (id(9_800, 1), with("h4", status(3, 6, true))),
        // h5: does not hold the app.
        (id(9_900, 1), with("h5", BTreeMap::new())),
        // h6: only an expired report.
        (id(10_000 - 3600, 1), with("h6", status(3, 7, true))),
    ];
    let view = app_status_view(&current, reports, now, TTL);
    assert_eq!(
        serde_json::to_value(&view).unwrap(),
        json!({"app_name": "site", "app_id": 3, "hosts": 4, "by_app_id": {"3": 3, "2": 1},
            "converged": 1, "reports_considered_since": 10_000 - 3600})
    );
}

fn container(
    name: &str,
    spec_hash: &str,
    state: ContainerState,
    health: Health,
) -> ObservedContainer {
    ObservedContainer {
        id: ContainerId(format!("id-{name}")),
        name: name.into(),
        labels: BTreeMap::from([
            (LABEL_ORCHESTRATOR.to_owned(), "nebula".to_owned()),
            (LABEL_CONTAINER_TYPE.to_owned(), "app".to_owned()),
            (LABEL_APP_NAME.to_owned(), "site".to_owned()),
            (LABEL_SPEC_HASH.to_owned(), spec_hash.to_owned()),
            (LABEL_APP_ID.to_owned(), "2".to_owned()),
        ]),
        state,
        health,
        created_at: 5,
    }
}

#[test]
fn convergence_needs_exactly_the_current_containers_up() {
    let host = HostResources {
        cpus: 2,
        memory_mb: 1024,
    };
    let a = app(3, 7, 2);
    let h1 = app_container(&a, 1).unwrap().hash().to_owned();
    let h2 = app_container(&a, 2).unwrap().hash().to_owned();
    let up1 = container("site-1", &h1, ContainerState::Running, Health::None);
    let up2 = container("site-2", &h2, ContainerState::Running, Health::Healthy);
    let st = app_status(&a, host, &[&up1, &up2]);
    assert_eq!(
        st,
        AppStatus {
            app_id: 3,
            incarnation: 7,
            running: true,
            desired_containers: 2,
            running_containers: 2,
            converged: true,
            pull_fallback: None,
            fleet_rollout: None,
        }
    );
    assert!(!app_status(&a, host, &[&up1]).converged, "one missing");
    let old = container("site-2", "old", ContainerState::Running, Health::None);
    assert!(
        !app_status(&a, host, &[&up1, &old]).converged,
        "outdated spec"
    );
    let sick = container("site-2", &h2, ContainerState::Running, Health::Unhealthy);
    assert!(!app_status(&a, host, &[&up1, &sick]).converged, "unhealthy");
    let starting = container("site-2", &h2, ContainerState::Running, Health::Starting);
    assert!(!app_status(&a, host, &[&up1, &starting]).converged);
    let exited = container("site-2", &h2, ContainerState::Exited, Health::None);
    let st = app_status(&a, host, &[&up1, &exited]);
    assert_eq!((st.running_containers, st.converged), (1, false));
    let extra = container("site-3", "x", ContainerState::Running, Health::None);
    assert!(
        !app_status(&a, host, &[&up1, &up2, &extra]).converged,
        "extra"
    );

    let mut stopped = a;
    stopped.spec.running = false;
    assert!(app_status(&stopped, host, &[]).converged);
    let st = app_status(&stopped, host, &[&up1]);
    assert_eq!((st.desired_containers, st.converged), (0, false));
}

#[test]
fn container_entries_name_their_app_and_version() {
    let c = container("site-1", "h", ContainerState::Exited, Health::Unhealthy);
    let entry = container_report(&c, Some("site:latest".into()));
    assert_eq!(
        serde_json::to_value(&entry).unwrap(),
        json!({"name": "site-1", "id": "id-site-1", "state": "exited", "health": "unhealthy",
            "image": "site:latest", "app_name": "site", "app_id": 2, "created": 5})
    );
}

#[test]
fn stored_reports_keep_the_original_field_names() {
    let mut r = report("h1", Some("edge"), 1_551_252_013, true);
    r.memory_usage = Some(MemoryUsage {
        total: 8,
        used: 3,
        free: 1,
        available: 5,
    });
    r.cpu_usage = CpuUsage {
        cores: 4,
        used_percent: Some(12.5),
    };
    let s = stored(r);
    let v = serde_json::to_value(&s).unwrap();
    for key in [
        "memory_usage",
        "root_disk_usage",
        "cpu_usage",
        "apps_containers",
        "cron_jobs_containers",
        "current_device_group_config",
        "device_group",
        "report_creation_time",
        "hostname",
        "updated",
        "apps_status",
    ] {
        assert!(v.get(key).is_some(), "{key} missing from {v}");
    }
    assert_eq!(v["report_insert_date"], json!({"$date": 0}));
    assert_eq!(v["memory_usage"]["available"], 5);
    assert!(v.get("app_names").is_none());
    assert_eq!(serde_json::from_value::<StoredReport>(v).unwrap(), s);
    let minimal: WorkerReport =
        serde_json::from_value(json!({"hostname": "h", "report_creation_time": 1})).unwrap();
    assert_eq!(minimal.validate(), Ok(()));
}

#[test]
fn validation_names_the_field() {
    let mut r = report(" ", None, 1, false);
    assert_eq!(r.validate().unwrap_err()[0].field, "hostname");
    r.hostname = "h".repeat(MAX_HOSTNAME_LEN + 1);
    assert_eq!(r.validate().unwrap_err()[0].field, "hostname");
    r.hostname = "h".into();
    r.device_group = Some(String::new());
    assert_eq!(r.validate().unwrap_err()[0].field, "device_group");
    r.device_group = None;
    let fallback = PullFallback {
        image: "site:1".into(),
        image_id: "sha256:00".into(),
        failure: PullFailure::Unreachable,
        error: "x".repeat(MAX_PULL_ERROR_LEN + 1),
        app_id: 1,
        at: 1,
    };
    r.apps_status.insert(
        "site".into(),
        AppStatus {
            pull_fallback: Some(fallback),
            fleet_rollout: None,
            ..AppStatus::default()
        },
    );
    assert_eq!(
        r.validate().unwrap_err()[0].field,
        "apps_status.site.pull_fallback.error"
    );
}

#[test]
fn the_normal_form_ignores_usage_time_and_the_flag() {
    let a = report("h", None, 1, true);
    let mut b = report("h", None, 2, false);
    b.memory_usage = Some(MemoryUsage::default());
    b.cpu_usage.used_percent = Some(3.0);
    assert_eq!(a.normalized(), b.normalized());
    b.apps_containers.push(ContainerReport::default());
    assert_ne!(a.normalized(), b.normalized());
}
