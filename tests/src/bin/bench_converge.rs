//! Benchmark: time from the create call to k containers answering HTTP, against the engine's
//! floor measured in the same run (`docker run -d` of the same k containers, serially and in
//! parallel).
//!
//! Run with (see docs/benchmarks.md):
//!   cargo build --release --workspace --bins && .ci/images.sh &&
//!   target/release/bench_converge [k ...]      (default k = 4 8 16, 3 rounds each)
//!
//! By default the app has the v2 default networks `["nebula", "bridge"]` and the floor makes the
//! same containers with the docker CLI (create on `nebula`, connect `bridge`, start). With
//! `NETWORKS=bridge` both use the single default bridge and the floor is a plain `docker run -d`.

use std::process::Command;
use std::time::{Duration, Instant};

use nebula_tests::{Api, Process, free_port, free_port_range, http_get, unique};
use serde_json::json;

const IMAGE: &str = "nebula-test/busybox:latest";
const ROUNDS: usize = 3;

async fn all_answer(base: u16, k: u16) -> bool {
    let checks = (0..k).map(|i| http_get(base + i));
    futures_all(checks).await.into_iter().all(|r| r.is_some())
}

async fn futures_all<F: std::future::Future>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = fs.into_iter().collect();
    let mut out = Vec::with_capacity(handles.len());
    for f in handles {
        out.push(f.await);
    }
    out
}

async fn until_answering(base: u16, k: u16, start: Instant) -> Duration {
    let deadline = start + Duration::from_secs(120);
    loop {
        if all_answer(base, k).await {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "containers did not answer in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The floor's command for one container: the same container Nebula makes. With the default
/// networks that is `docker create --network nebula` + `docker network connect bridge` +
/// `docker start` (what a v2 app with `["nebula", "bridge"]` is); with `NETWORKS=bridge`, a
/// plain `docker run -d`.
fn docker_run(name: &str, port: u16) -> Command {
    let publish = format!("{port}:80");
    let mut c = if std::env::var("NETWORKS").is_ok_and(|n| n == "bridge") {
        let mut c = Command::new("docker");
        c.args([
            "run",
            "-d",
            "--name",
            name,
            "-p",
            &publish,
            "-e",
            "MESSAGE=floor",
            "--restart",
            "unless-stopped",
            IMAGE,
        ]);
        c
    } else {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!(
            "docker create --name {name} --network nebula -p {publish} -e MESSAGE=floor --restart unless-stopped {IMAGE} \
             && docker network connect bridge {name} && docker start {name}"
        ));
        c
    };
    c.stdout(std::process::Stdio::null());
    c
}

fn remove_all(names: &[String]) {
    if names.is_empty() {
        return;
    }
    let mut c = Command::new("docker");
    c.args(["rm", "-f"])
        .args(names)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _ = c.status();
}

async fn floor_serial(k: u16) -> Duration {
    let base = free_port_range(k);
    let names: Vec<String> = (0..k).map(|i| unique(&format!("floor{i}-"))).collect();
    let start = Instant::now();
    for (i, name) in names.iter().enumerate() {
        let ok = docker_run(name, base + u16::try_from(i).unwrap_or(0))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "docker run failed");
    }
    let t = until_answering(base, k, start).await;
    remove_all(&names);
    t
}

async fn floor_parallel(k: u16) -> Duration {
    let base = free_port_range(k);
    let names: Vec<String> = (0..k).map(|i| unique(&format!("floor{i}-"))).collect();
    let start = Instant::now();
    let mut children: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            docker_run(name, base + u16::try_from(i).unwrap_or(0))
                .spawn()
                .expect("docker run")
        })
        .collect();
    for c in &mut children {
        assert!(c.wait().is_ok_and(|s| s.success()), "docker run failed");
    }
    let t = until_answering(base, k, start).await;
    remove_all(&names);
    t
}

async fn nebula(api: &Api, k: u16) -> Duration {
    let base = free_port_range(k);
    let app = unique("bench");
    let mut body = json!({"docker_image": IMAGE, "starting_ports": [{base.to_string(): "80"}],
        "containers_per": {"server": k}, "env_vars": {"MESSAGE": "nebula"}});
    if let Ok(networks) = std::env::var("NETWORKS") {
        body["networks"] = json!(networks.split(',').collect::<Vec<_>>());
    }
    let start = Instant::now();
    let (code, reply) = api
        .call("POST", &format!("/api/v2/apps/{app}"), Some(body))
        .await;
    assert_eq!(code, 200, "{reply}");
    let t = until_answering(base, k, start).await;
    let (code, _) = api
        .call("DELETE", &format!("/api/v2/apps/{app}"), None)
        .await;
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !nebula_tests::containers(&app).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let ks: Vec<u16> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ks = if ks.is_empty() { vec![4, 8, 16] } else { ks };
    let dir = std::env::temp_dir().join(unique("nebula-bench-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let exe = std::env::current_exe().expect("exe");
    let nebula_bin = exe.with_file_name("nebula");
    assert!(
        nebula_bin.exists(),
        "{} missing: cargo build --release --workspace --bins",
        nebula_bin.display()
    );
    let _nebula = Process::start(
        nebula_bin,
        &[
            "standalone",
            "--bind",
            &bind,
            "--data-dir",
            dir.join("data").to_str().unwrap_or("data"),
        ],
        &[
            ("AUTH_ENABLED", "false"),
            ("NEBULA_STOP_GRACE", "1"),
            ("RUST_LOG", "warn"),
        ],
        dir.join("nebula.log"),
    );
    let api = Api::new(port, "", "");
    api.wait_ready().await;
    // Warm up: the nebula network and the image cache.
    nebula(&api, 1).await;
    println!(
        "| k | docker run serial (ms) | docker run parallel (ms) | nebula create -> all answering (ms) | nebula / parallel |"
    );
    println!("|---|---|---|---|---|");
    for k in ks {
        let (mut s, mut p, mut n) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            s.push(floor_serial(k).await);
            p.push(floor_parallel(k).await);
            n.push(nebula(&api, k).await);
        }
        let (s, p, n) = (median(s), median(p), median(n));
        println!(
            "| {k} | {} | {} | {} | {:.2} |",
            ms(s),
            ms(p),
            ms(n),
            n.as_secs_f64() / p.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
