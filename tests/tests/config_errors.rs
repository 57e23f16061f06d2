//! Configuration mistakes as a user makes them, against the real binaries: each stops the
//! binary at once with a message naming the flag, variable or file key the user wrote (and
//! never a credential), and the exit status tells a bad configuration (2) from a failed start
//! (1). None of these needs an engine or a broker: the binaries stop before reaching them.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nebula_tests::{binary, free_port, scratch_dir};

/// What a binary printed and how it ended, killed if still running after `limit`.
struct Ended {
    code: Option<i32>,
    stderr: String,
    took: Duration,
}

fn run(name: &str, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Ended {
    let started = Instant::now();
    let mut child = Command::new(binary(name))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr text");
    Ended {
        code,
        stderr,
        took: started.elapsed(),
    }
}

fn assert_says(ended: &Ended, code: i32, needles: &[&str]) {
    assert_eq!(
        ended.code,
        Some(code),
        "exit status; stderr:\n{}",
        ended.stderr
    );
    for needle in needles {
        assert!(
            ended.stderr.contains(needle),
            "{needle:?} missing from stderr:\n{}",
            ended.stderr
        );
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config file");
    path.to_str().expect("utf-8 path").to_owned()
}

/// The status line of a plain HTTP/1.0 GET, or `None` when nothing listens.
fn get_status_line(port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.lines().next().map(str::to_owned)
}

const QUICK: Duration = Duration::from_secs(10);

#[test]
fn standalone_flags_are_named_as_typed() {
    let data = scratch_dir("cfg-flags");
    let data = data.to_str().unwrap();
    let ended = run(
        "nebula",
        &["standalone", "--bind", "127.0.0.1:abc", "--data-dir", data],
        &[],
        QUICK,
    );
    assert_says(
        &ended,
        2,
        &["--bind=\"127.0.0.1:abc\": invalid socket address"],
    );
    let ended = run(
        "nebula",
        &[
            "standalone",
            "--check-in-time",
            "0",
            "--reconcile-interval",
            "often",
            "--data-dir",
            data,
        ],
        &[],
        QUICK,
    );
    assert_says(
        &ended,
        2,
        &[
            "--check-in-time=0: must be at least 1",
            "--reconcile-interval=\"often\"",
        ],
    );
    assert!(!ended.stderr.contains("--nebula-"), "{}", ended.stderr);
    let ended = run(
        "nebula-api-manager",
        &["--bind", "nowhere"],
        &[("AUTH_ENABLED", "false")],
        QUICK,
    );
    assert_says(&ended, 2, &["--bind=\"nowhere\""]);
}

#[test]
fn a_misspelled_file_key_is_refused_with_the_key_meant() {
    let dir = scratch_dir("cfg-file");
    let port = free_port();
    let file = write(
        &dir,
        "conf.json",
        &format!(r#"{{"bind": "127.0.0.1:{port}", "auth_enabled": false}}"#),
    );
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let expected =
        format!("config file {file}: unknown setting \"bind\" (did you mean \"nebula_bind\"?)");
    let ended = run(
        "nebula-api-manager",
        &["--config", &file, "--data-dir", data],
        &[],
        QUICK,
    );
    assert_says(&ended, 2, &[&expected]);
    // The same file named by NEBULA_CONFIG, as a container image would be configured.
    let ended = run(
        "nebula-api-manager",
        &["--data-dir", data],
        &[("NEBULA_CONFIG", &file)],
        QUICK,
    );
    assert_says(&ended, 2, &[&expected]);
    let toml = write(
        &dir,
        "worker.toml",
        "app_names = \"site\"\nnebula_manager_uri = \"http://127.0.0.1:1\"\n",
    );
    let ended = run(
        "nebula-worker-manager",
        &[],
        &[("NEBULA_CONFIG", &toml)],
        QUICK,
    );
    assert_says(
        &ended,
        2,
        &["unknown setting \"app_names\" (did you mean \"app_name\"?)"],
    );
}

#[test]
fn a_file_shared_with_the_worker_starts_the_api_manager_with_warnings() {
    let dir = scratch_dir("cfg-shared");
    let port = free_port();
    let data = dir.join("data");
    let file = write(
        &dir,
        "config.json",
        &format!(
            r#"{{"nebula_bind": "127.0.0.1:{port}", "auth_enabled": false, "nebula_data_dir": {:?},
                "device_group": "edge", "kafka_bootstrap_servers": "kafka:9092"}}"#,
            data.to_str().unwrap()
        ),
    );
    let started = Instant::now();
    let mut child = Command::new(binary("nebula-api-manager"))
        .env_clear()
        .env("NEBULA_CONFIG", &file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut answered = false;
    while started.elapsed() < QUICK {
        if let Some(status_line) = get_status_line(port, "/api/v2/status") {
            answered = status_line.contains(" 200 ");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        answered,
        "the API did not answer on {port}; stderr:\n{stderr}"
    );
    for needle in [
        "warning: config file",
        "device_group is a setting of nebula-worker-manager, not of nebula-api-manager",
        "kafka_bootstrap_servers is a setting of the original Nebula",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} missing from:\n{stderr}"
        );
    }
}

#[test]
fn broker_and_manager_settings_are_named_and_credentials_are_not_echoed() {
    let dir = scratch_dir("cfg-rabbit");
    let data = dir.to_str().unwrap();
    let ended = run(
        "nebula-api-manager",
        &["--data-dir", data],
        &[
            ("AUTH_ENABLED", "false"),
            ("RABBIT_HOST", "127.0.0.1"),
            ("NEBULA_RABBIT_FRAME_MAX", "100"),
        ],
        QUICK,
    );
    assert_says(
        &ended,
        2,
        &["NEBULA_RABBIT_FRAME_MAX=\"100\": frame_max must be 4096 to 1048576 bytes"],
    );
    let ended = run(
        "nebula-worker-manager",
        &[],
        &[
            ("APP_NAME", "site"),
            (
                "NEBULA_MANAGER_URI",
                "ftp://admin:hunter2@manager.example/nebula",
            ),
        ],
        QUICK,
    );
    assert_says(
        &ended,
        2,
        &[
            "NEBULA_MANAGER_URI=\"ftp://admin:***@manager.example/nebula\": must start with http:// or https://",
        ],
    );
    assert!(!ended.stderr.contains("hunter2"), "{}", ended.stderr);
    let ended = run(
        "nebula-worker-manager",
        &["--manager-uri", "manager:80"],
        &[("APP_NAME", "site")],
        QUICK,
    );
    assert_says(
        &ended,
        2,
        &["--manager-uri=\"manager:80\": must start with http://"],
    );
}

#[test]
fn a_taken_address_stops_standalone_and_the_api_manager_at_once() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().unwrap().to_string();
    let dir = scratch_dir("cfg-taken");
    let data = dir.to_str().unwrap();
    let ended = run(
        "nebula",
        &["standalone", "--bind", &addr, "--data-dir", data],
        &[("AUTH_ENABLED", "false")],
        QUICK,
    );
    assert_says(&ended, 1, &[&format!("cannot listen on {addr} (--bind)")]);
    assert!(ended.took < Duration::from_secs(5), "took {:?}", ended.took);
    let ended = run(
        "nebula-api-manager",
        &["--data-dir", data],
        &[("AUTH_ENABLED", "false"), ("NEBULA_BIND", &addr)],
        QUICK,
    );
    assert_says(
        &ended,
        1,
        &[&format!("cannot listen on {addr} (NEBULA_BIND)")],
    );
    assert!(ended.took < Duration::from_secs(5), "took {:?}", ended.took);
    drop(taken);
}
