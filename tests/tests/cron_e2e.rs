//! Cron jobs end to end: `nebula-api-manager` + a `nebula-worker-manager` with `DEVICE_GROUP`,
//! on the real engine. A job scheduled every minute runs its container within a couple of
//! seconds of the minute, as `<job>-<unix time>-1` with the cron labels and no restart policy,
//! and the container is removed once it exits. Bounded at 150 s.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nebula_tests::procs::{ApiManager, Worker};
use nebula_tests::{IMAGE, Process, engine_ready, scratch_dir, unique};
use serde_json::json;

const USER: &str = "admin";
const PASSWORD: &str = "cron-pw";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Names of the containers labelled `cron_job_name=<job>`, any state.
fn cron_containers(job: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=cron_job_name={job}"),
        "--format",
        "{{.Names}}",
    ]);
    let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
    names.sort();
    names
}

/// Seconds since the epoch of an RFC 3339 UTC time as Docker writes it
/// (`2024-01-02T03:04:05.123456789Z`).
fn rfc3339_utc(s: &str) -> Option<f64> {
    let (date, time) = s.trim().trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from 1970-01-01 to y-m-d (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    #[allow(clippy::cast_precision_loss)]
    Some((days * 86_400 + h * 3_600 + min * 60) as f64 + sec)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn worker(dir: &Path, manager_uri: &str, group: &str) -> Process {
    Worker::of(manager_uri, USER, PASSWORD)
        .envs(&[
            ("DEVICE_GROUP", group),
            ("NEBULA_MANAGER_CHECK_IN_TIME", "2"),
        ])
        .start(dir.join("worker.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_job_runs_on_the_minute_and_is_removed_once_it_exits() {
    if !engine_ready("a_cron_job_runs_on_the_minute_and_is_removed_once_it_exits") {
        return;
    }
    let started = Instant::now();
    let dir = scratch_dir("nebula-cron-");
    let (_manager, api, uri) = ApiManager::new(USER, PASSWORD).ready(&dir).await;

    let job = unique("tick");
    let group = unique("cronedge");
    let doc = api
        .expect(
            "POST",
            &format!("/api/v2/cron_jobs/{job}"),
            Some(json!({"docker_image": IMAGE, "schedule": "* * * * *",
            "run_command": ["sh", "-c", "echo ran; sleep 3"]})),
            200,
        )
        .await;
    assert_eq!(doc["networks"], json!(["nebula", "bridge"]));
    api.expect(
        "POST",
        &format!("/api/v2/device_groups/{group}"),
        Some(json!({"cron_jobs": [job]})),
        200,
    )
    .await;
    let mut worker = worker(&dir, &uri, &group);

    // The first run: within 62 s of the worker's start (the next minute, or the one after if
    // the worker was not up in time).
    let deadline = Instant::now() + Duration::from_secs(75);
    let (name, seen_at) = loop {
        if let Some(name) = cron_containers(&job).into_iter().next() {
            break (name, now_secs());
        }
        assert!(
            Instant::now() < deadline,
            "no run of {job} in 75 s; worker log:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let scheduled: u64 = name
        .strip_prefix(&format!("{job}-"))
        .and_then(|rest| rest.strip_suffix("-1"))
        .and_then(|unix| unix.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not <job>-<unix time>-1"));
    assert_eq!(scheduled % 60, 0, "{name}: on a minute");
    // `docker ps` can list the run between its create and its start: wait for the start.
    let started_by = Instant::now() + Duration::from_secs(10);
    let inspect = loop {
        let inspect = docker(&[
            "inspect",
            "--format",
            "{{.State.StartedAt}}|{{.HostConfig.RestartPolicy.Name}}|{{index .Config.Labels \"orchestrator\"}}|{{index .Config.Labels \"container_type\"}}",
            &name,
        ]);
        if !inspect.starts_with("0001-") || Instant::now() > started_by {
            break inspect;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let parts: Vec<&str> = inspect.split('|').collect();
    assert_eq!(parts.len(), 4, "{inspect}");
    #[allow(clippy::cast_precision_loss)]
    let scheduled_f = scheduled as f64;
    let started_at = rfc3339_utc(parts[0]).unwrap_or(seen_at);
    let late = started_at - scheduled_f;
    println!(
        "{name}: started {late:.3} s after its minute (seen {:.3} s after)",
        seen_at - scheduled_f
    );
    assert!(
        (-0.5..=2.5).contains(&late),
        "{name} started {late:.3} s after its minute"
    );
    assert!(
        parts[1].is_empty() || parts[1] == "no",
        "no restart policy, got {:?}",
        parts[1]
    );
    assert_eq!((parts[2], parts[3]), ("nebula", "cron_job"));
    let logs = Command::new("docker")
        .args(["logs", &name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(logs.contains("ran"), "the job's command ran: {logs:?}");

    // It exits after ~3 s and is removed at the next sweep.
    let deadline = Instant::now() + Duration::from_secs(30);
    while cron_containers(&job).contains(&name) {
        assert!(
            Instant::now() < deadline,
            "{name} still there 30 s later; worker log:\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(150));

    // Deleting the job takes it out of the group; the worker schedules it no more.
    api.expect("DELETE", &format!("/api/v2/cron_jobs/{job}"), None, 200)
        .await;
    let (_, g) = api
        .call("GET", &format!("/api/v2/device_groups/{group}"), None)
        .await;
    assert_eq!(g["cron_jobs"], json!([]));
    worker.kill9();
    for leftover in cron_containers(&job) {
        docker(&["rm", "-f", &leftover]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
