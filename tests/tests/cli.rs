//! The client CLI: the real `nebula` binary driving a real `nebula-api-manager` (embedded
//! store, authentication on) over HTTP, as an operator would.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nebula_tests::procs::ApiManager;
use nebula_tests::{binary, free_port, scratch_dir, unique};
use serde_json::{Value, json};

const PASSWORD: &str = "cli-secret-pw";

/// A `nebula` command with the manager's address and credentials in its environment, and no
/// other client setting inherited from the test's.
fn nebula(uri: &str, args: &[&str]) -> Command {
    let mut c = Command::new(binary("nebula"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NEBULA_") {
            c.env_remove(k);
        }
    }
    c.args(args)
        .args(["--timeout", "20"])
        .env("NEBULA_MANAGER_URI", uri)
        .env("NEBULA_MANAGER_AUTH_USER", "admin")
        .env("NEBULA_MANAGER_AUTH_PASSWORD", PASSWORD)
        .stdin(Stdio::null());
    c
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn finish(out: Output, outputs: &mut Vec<String>) -> Run {
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    outputs.push(run.stdout.clone());
    outputs.push(run.stderr.clone());
    run
}

fn run(cmd: &mut Command, outputs: &mut Vec<String>) -> Run {
    finish(cmd.output().expect("nebula runs"), outputs)
}

/// Runs and expects exit status 0.
fn ok(cmd: &mut Command, outputs: &mut Vec<String>) -> Run {
    let r = run(cmd, outputs);
    assert_eq!(
        r.code, 0,
        "{cmd:?}: stdout {} stderr {}",
        r.stdout, r.stderr
    );
    r
}

fn json_of(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

fn write(path: &Path, value: &Value) -> String {
    std::fs::write(path, value.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_cli_drives_a_manager() {
    let dir = scratch_dir("nebula-cli-");
    let (_manager, api, uri) = ApiManager::new("admin", PASSWORD).start(&dir);
    tokio::time::timeout(Duration::from_secs(40), api.wait_ready())
        .await
        .expect("manager ready");
    let mut outputs = Vec::new();
    let out = &mut outputs;

    // ping
    let r = ok(&mut nebula(&uri, &["ping"]), out);
    assert_eq!(r.stdout.trim(), format!("{uri}: api_available=true"));

    // create an app from a file
    let app = unique("cliapp");
    let file = write(
        &dir.join("app.json"),
        &json!({"docker_image": "127.0.0.1:5000/cli/web:1", "starting_ports": [18080],
            "containers_per": {"server": 2}, "env_vars": {"MESSAGE": "hi"}}),
    );
    let r = ok(
        &mut nebula(&uri, &["apps", "create", &app, "--file", &file]),
        out,
    );
    let doc = json_of(&r);
    assert_eq!(
        (doc["app_name"].as_str(), doc["app_id"].as_u64()),
        (Some(app.as_str()), Some(1))
    );
    assert_eq!(doc["containers_per"], json!({"server": 2}));

    // list: a table by default, the manager's JSON with --output json
    let r = ok(&mut nebula(&uri, &["apps", "list"]), out);
    let mut lines = r.stdout.lines();
    assert_eq!(lines.next(), Some("NAME"));
    assert!(lines.any(|l| l == app), "{}", r.stdout);
    let r = ok(
        &mut nebula(&uri, &["apps", "list", "--output", "json"]),
        out,
    );
    assert!(
        json_of(&r)["apps"]
            .as_array()
            .unwrap()
            .contains(&json!(app))
    );

    // get
    let r = ok(&mut nebula(&uri, &["apps", "get", &app]), out);
    assert_eq!(json_of(&r)["env_vars"], json!({"MESSAGE": "hi"}));

    // update with --patch, the document on standard input: only the field given changes
    let mut child = nebula(&uri, &["apps", "update", &app, "--patch", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"env_vars": {"MESSAGE": "patched"}}"#)
        .unwrap();
    let r = finish(child.wait_with_output().unwrap(), out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc = json_of(&r);
    assert_eq!(doc["env_vars"], json!({"MESSAGE": "patched"}));
    assert_eq!(doc["containers_per"], json!({"server": 2}), "kept");
    assert_eq!(doc["app_id"], 2);

    // stop, start, status
    let r = ok(&mut nebula(&uri, &["apps", "stop", &app]), out);
    assert_eq!(
        (
            json_of(&r)["running"].clone(),
            json_of(&r)["app_id"].clone()
        ),
        (json!(false), json!(3))
    );
    let r = ok(&mut nebula(&uri, &["apps", "start", &app]), out);
    assert_eq!(json_of(&r)["running"], true);
    let r = ok(&mut nebula(&uri, &["apps", "status", &app]), out);
    let status = json_of(&r);
    assert_eq!(
        (status["app_name"].as_str(), status["app_id"].as_u64()),
        (Some(app.as_str()), Some(4))
    );
    assert_eq!(status["hosts"], 0, "no worker reports");

    // device groups: create with the app, list, info, delete
    let group = unique("clidg");
    let file = write(&dir.join("dg.json"), &json!({"apps": [app]}));
    let r = ok(
        &mut nebula(&uri, &["device-groups", "create", &group, "-f", &file]),
        out,
    );
    assert_eq!(json_of(&r)["device_group_id"], 1);
    let r = ok(&mut nebula(&uri, &["device-groups", "list"]), out);
    assert!(r.stdout.lines().any(|l| l == group), "{}", r.stdout);
    let r = ok(&mut nebula(&uri, &["device-groups", "info", &group]), out);
    let info = json_of(&r);
    assert_eq!(info["apps_list"], json!([app]));
    assert_eq!(info["apps"][0]["env_vars"], json!({"MESSAGE": "patched"}));

    // reports: a worker's report, listed as a table and as JSON, filtered by group
    let (code, _) = api
        .call(
            "POST",
            "/api/v2/reports",
            Some(json!({"hostname": "cli-host-1", "device_group": group,
                "report_creation_time": 1_764_500_000_u64})),
        )
        .await;
    assert_eq!(code, 200);
    let r = ok(
        &mut nebula(
            &uri,
            &[
                "reports",
                "list",
                "--device-group",
                &group,
                "--page-size",
                "5",
            ],
        ),
        out,
    );
    let mut lines = r.stdout.lines();
    assert!(
        lines.next().unwrap().starts_with("HOSTNAME"),
        "{}",
        r.stdout
    );
    let row = lines.next().unwrap_or_default();
    assert!(row.starts_with("cli-host-1"), "{}", r.stdout);
    assert!(row.contains(&format!("group {group}")), "{row}");
    assert!(row.contains("2025-11-30 10:53:20"), "{row}");
    assert_eq!(lines.next(), None);
    assert!(r.stderr.contains("next page: --last-id "), "{}", r.stderr);
    let r = ok(
        &mut nebula(
            &uri,
            &[
                "reports",
                "list",
                "--hostname",
                "cli-host-1",
                "--output",
                "json",
            ],
        ),
        out,
    );
    assert_eq!(json_of(&r)["data"][0]["device_group"], json!(group));

    let r = ok(&mut nebula(&uri, &["device-groups", "delete", &group]), out);
    assert_eq!(r.stdout.trim(), format!("deleted device group {group}"));
    let r = run(&mut nebula(&uri, &["device-groups", "get", &group]), out);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with("nebula: 403 Forbidden: "),
        "{}",
        r.stderr
    );

    // a bad document: exit 1 with the server's error naming the field; nothing stored
    let bad_app = unique("clibad");
    let file = write(
        &dir.join("bad.json"),
        &json!({"docker_image": "x", "containers_per": {"server": "many"}}),
    );
    let r = run(
        &mut nebula(&uri, &["apps", "create", &bad_app, "-f", &file]),
        out,
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("nebula: 400 Bad Request: {"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("\"containers_per\""), "{}", r.stderr);
    assert!(r.stdout.is_empty());
    let r = run(&mut nebula(&uri, &["apps", "get", &bad_app]), out);
    assert_eq!(r.code, 1);

    // a document that is not JSON: a usage error, nothing sent
    std::fs::write(dir.join("broken.json"), "{not json").unwrap();
    let broken = dir.join("broken.json");
    let r = run(
        &mut nebula(
            &uri,
            &["apps", "create", &bad_app, "-f", broken.to_str().unwrap()],
        ),
        out,
    );
    assert_eq!(r.code, 2, "{}", r.stderr);

    // a wrong password, given on the command line: 401, exit 1
    let r = run(
        &mut nebula(&uri, &["apps", "list", "--password", "not-the-password"]),
        out,
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.starts_with("nebula: 401 Unauthorized"),
        "{}",
        r.stderr
    );
    // ... and the right one on the command line
    ok(
        &mut nebula(&uri, &["ping", "--user", "admin", "--password", PASSWORD]),
        out,
    );

    // an unreachable manager: exit 3, the address and the reason, no credentials
    let closed = format!("http://admin:{PASSWORD}@127.0.0.1:{}", free_port());
    let r = run(
        &mut nebula(&uri, &["apps", "list", "--manager-uri", &closed]),
        out,
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("nebula: cannot reach the manager at http://127.0.0.1:"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.to_lowercase().contains("refused"), "{}", r.stderr);

    // usage errors: exit 2
    let r = run(&mut nebula(&uri, &["apps", "frobnicate"]), out);
    assert_eq!(r.code, 2);
    let r = run(&mut nebula(&uri, &["apps", "list", "--timeout", "0"]), out);
    assert_eq!(r.code, 2, "{}", r.stderr);

    // cron jobs, users and user groups
    let cron = unique("clicron");
    let file = write(
        &dir.join("cron.json"),
        &json!({"schedule": "*/5 * * * *", "docker_image": "127.0.0.1:5000/cli/job:1"}),
    );
    let r = ok(
        &mut nebula(&uri, &["cron-jobs", "create", &cron, "-f", &file]),
        out,
    );
    assert_eq!(json_of(&r)["cron_job_id"], 1);
    let r = ok(&mut nebula(&uri, &["cron-jobs", "list"]), out);
    assert!(r.stdout.lines().any(|l| l == cron), "{}", r.stdout);
    let file = write(
        &dir.join("cron-patch.json"),
        &json!({"schedule": "0 * * * *"}),
    );
    let r = ok(
        &mut nebula(
            &uri,
            &["cron-jobs", "update", &cron, "--patch", "-f", &file],
        ),
        out,
    );
    assert_eq!(json_of(&r)["schedule"], "0 * * * *");
    ok(&mut nebula(&uri, &["cron-jobs", "delete", &cron]), out);

    let user = unique("cliuser");
    let token = unique("cli-token-");
    let file = write(
        &dir.join("user.json"),
        &json!({"password": "user-pw", "token": token}),
    );
    ok(
        &mut nebula(&uri, &["users", "create", &user, "-f", &file]),
        out,
    );
    let r = ok(&mut nebula(&uri, &["users", "list"]), out);
    assert!(r.stdout.lines().any(|l| l == user), "{}", r.stdout);
    // the user's token authenticates (a token wins over the user and password set)
    let r = ok(&mut nebula(&uri, &["ping", "--token", &token]), out);
    assert!(r.stdout.contains("api_available=true"));
    let r = run(&mut nebula(&uri, &["ping", "--token", "wrong-token"]), out);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("401"), "{}", r.stderr);
    let r = ok(&mut nebula(&uri, &["users", "refresh", &user]), out);
    let fresh = json_of(&r)["token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, token);
    ok(&mut nebula(&uri, &["ping", "--token", &fresh]), out);
    ok(&mut nebula(&uri, &["users", "delete", &user]), out);

    let ug = unique("cliug");
    let file = write(
        &dir.join("ug.json"),
        &json!({"group_members": [], "pruning_allowed": true}),
    );
    ok(
        &mut nebula(&uri, &["user-groups", "create", &ug, "-f", &file]),
        out,
    );
    let r = ok(&mut nebula(&uri, &["user-groups", "get", &ug]), out);
    assert_eq!(json_of(&r)["pruning_allowed"], true);
    let r = ok(
        &mut nebula(&uri, &["user-groups", "list", "--output", "json"]),
        out,
    );
    assert!(
        json_of(&r)["user_groups"]
            .as_array()
            .unwrap()
            .contains(&json!(ug))
    );
    ok(&mut nebula(&uri, &["user-groups", "delete", &ug]), out);

    // prune, delete
    let r = ok(&mut nebula(&uri, &["prune", "--output", "json"]), out);
    assert!(json_of(&r)["prune_ids"].is_object());
    let r = ok(&mut nebula(&uri, &["apps", "delete", &app]), out);
    assert_eq!(r.stdout.trim(), format!("deleted app {app}"));
    let r = ok(&mut nebula(&uri, &["apps", "list"]), out);
    assert!(!r.stdout.lines().any(|l| l == app));

    // the password never shows
    for text in &outputs {
        assert!(!text.contains(PASSWORD), "the password was printed: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
