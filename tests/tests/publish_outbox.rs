//! A change the broker did not take still reaches a subscribed worker within seconds: an API
//! manager on RabbitMQ with a broker user of its own, refused while three updates are made,
//! then allowed again; an APP_NAME worker with a 300 s check-in runs the last update within
//! 5 s of the restore, its containers replaced once.

use std::process::Command;
use std::time::{Duration, Instant};

use nebula_tests::procs::{ApiManager, Worker, broker_ready};
use nebula_tests::{
    cleanup, containers, engine_ready, free_port_range, running, scratch_dir, unique, unix_now,
    wait_for,
};
use serde_json::json;

/// Runs `rabbitmqctl -q <args>`; its output, or why it failed.
fn rabbitmqctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A RabbitMQ user of the test's own, deleted (with its connections) when dropped.
struct BrokerUser {
    name: String,
    password: String,
}

impl BrokerUser {
    fn create() -> Result<Self, String> {
        let user = Self {
            name: unique("nebula-outbox-"),
            password: unique("pw-"),
        };
        rabbitmqctl(&["add_user", &user.name, &user.password])?;
        user.allow()?;
        Ok(user)
    }

    /// Full rights on vhost `/`.
    fn allow(&self) -> Result<(), String> {
        rabbitmqctl(&["set_permissions", "-p", "/", &self.name, ".*", ".*", ".*"]).map(drop)
    }

    /// No rights on vhost `/`, and this user's connections (only) closed, so every
    /// connection attempt is refused.
    fn refuse(&self) -> Result<(), String> {
        rabbitmqctl(&["clear_permissions", "-p", "/", &self.name])?;
        for line in rabbitmqctl(&["list_connections", "user", "pid"])?.lines() {
            if let Some((user, pid)) = line.split_once('\t')
                && user == self.name
            {
                rabbitmqctl(&[
                    "close_connection",
                    pid.trim(),
                    "nebula test refuses the manager",
                ])?;
            }
        }
        Ok(())
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_user", &self.name]);
    }
}

/// Removes an app's containers when dropped, also when the test fails.
struct RemoveContainers<'a>(&'a str);

impl Drop for RemoveContainers<'_> {
    fn drop(&mut self) {
        cleanup(self.0);
    }
}

/// The `MESSAGE` each of `app`'s running containers has in its environment.
fn messages(app: &str) -> Vec<String> {
    running(app)
        .iter()
        .map(|c| {
            let out = Command::new("docker")
                .args([
                    "inspect",
                    "--format",
                    "{{range .Config.Env}}{{println .}}{{end}}",
                    &c.id,
                ])
                .output()
                .expect("docker CLI");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("MESSAGE="))
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// How many containers of `app` the engine created between the two unix times.
fn created(app: &str, since: u64, until: u64) -> usize {
    let out = Command::new("docker")
        .args([
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            "type=container",
            "--filter",
            "event=create",
            "--filter",
            &format!("label=app_name={app}"),
            "--format",
            "{{.ID}}",
        ])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_the_broker_refused_reach_the_worker_once_it_takes_them_again() {
    let test = "changes_the_broker_refused_reach_the_worker_once_it_takes_them_again";
    if !engine_ready(test) || !broker_ready(test) {
        return;
    }
    let user = match BrokerUser::create() {
        Ok(user) => user,
        Err(e) => {
            assert!(
                std::env::var_os("NEBULA_REQUIRE_BROKER").is_none(),
                "{test}: NEBULA_REQUIRE_BROKER is set and {e}"
            );
            println!("SKIPPED {test}: cannot make a broker user: {e}");
            return;
        }
    };
    let dir = scratch_dir("nebula-outbox-");
    let (manager, api, uri) = ApiManager::new("admin", "pw")
        .envs(&[
            ("RABBIT_HOST", "127.0.0.1"),
            ("RABBIT_USER", &user.name),
            ("RABBIT_PASSWORD", &user.password),
        ])
        .ready(&dir)
        .await;
    let app = unique("outbox");
    let _remove = RemoveContainers(&app);
    let ports = free_port_range(2);
    let worker_id = unique("w");
    let worker = Worker::of(&uri, "admin", "pw")
        .without("NEBULA_RECONCILE_INTERVAL")
        .envs(&[
            ("APP_NAME", &app),
            ("NEBULA_MANAGER_CHECK_IN_TIME", "300"),
            ("RABBIT_HOST", "127.0.0.1"),
            ("NEBULA_WORKER_ID", &worker_id),
        ])
        .start(dir.join("worker.log"));
    wait_for("worker subscribed", Duration::from_secs(30), || async {
        worker.log().contains("worker starting")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spec = json!({"starting_ports": [{ports.to_string(): "80"}],
        "containers_per": {"server": 2}, "env_vars": {"MESSAGE": "v0"},
        "docker_image": nebula_tests::IMAGE, "running": true,
        "networks": ["nebula", "bridge"], "volumes": [], "devices": [], "privileged": false});
    assert_eq!(
        api.call("POST", &format!("/api/apps/{app}"), Some(spec))
            .await
            .0,
        202
    );
    wait_for(
        "the pushed create runs",
        Duration::from_secs(30),
        || async { messages(&app) == ["v0", "v0"] },
    )
    .await;
    let before: Vec<String> = running(&app).into_iter().map(|c| c.id).collect();

    user.refuse().expect("refuse the manager's broker user");
    let refused_at = unix_now();
    for message in ["v1", "v2", "v3"] {
        let (code, body) = api
            .call(
                "PUT",
                &format!("/api/v2/apps/{app}/update"),
                Some(json!({"env_vars": {"MESSAGE": message}})),
            )
            .await;
        assert_eq!(code, 202, "acknowledged with the broker refusing: {body}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = manager.log();
    assert!(
        log.contains("publish failed"),
        "the refusal is logged:\n{log}"
    );
    assert!(
        log.contains("changes pending publish"),
        "pending publishes are logged:\n{log}"
    );
    assert_eq!(
        messages(&app),
        ["v0", "v0"],
        "the host still runs the old version"
    );

    user.allow().expect("allow the manager's broker user again");
    let restored = Instant::now();
    wait_for(
        "the last update runs within 5 s of the restore",
        Duration::from_secs(5),
        || async { messages(&app) == ["v3", "v3"] },
    )
    .await;
    let delay = restored.elapsed();
    println!("{test}: the last update ran {delay:?} after the restore");

    // Nothing else comes after it: each container was replaced once, by the last version.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(messages(&app), ["v3", "v3"]);
    let after: Vec<String> = running(&app).into_iter().map(|c| c.id).collect();
    assert!(
        after.iter().all(|id| !before.contains(id)),
        "replaced: {before:?} -> {after:?}"
    );
    assert_eq!(
        created(&app, refused_at, unix_now() + 1),
        2,
        "two containers created since the refusal: one replacement each, not one per update"
    );
    let log = manager.log();
    assert!(
        log.contains("published 1 pending changes"),
        "the drain is logged:\n{log}"
    );

    assert_eq!(
        api.call("DELETE", &format!("/api/v2/apps/{app}"), None)
            .await
            .0,
        200
    );
    wait_for(
        "the pushed delete removes the app",
        Duration::from_secs(20),
        || async { containers(&app).is_empty() },
    )
    .await;
    drop(worker);
    drop(manager);
    drop(user);
    let _ = std::fs::remove_dir_all(&dir);
}
