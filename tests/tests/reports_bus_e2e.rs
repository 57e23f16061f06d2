//! Reports over RabbitMQ, end to end: a real `nebula-worker-manager` on the local engine
//! publishes its reports on the broker, a real `nebula-api-manager` on the broker stores them,
//! reports published while no manager runs wait in the broker and are stored once it is back,
//! and a worker whose broker does not answer reports over HTTP instead.
//!
//! Each test that uses the broker runs in a RabbitMQ vhost of its own (made and deleted with
//! `rabbitmqctl`), so its report queue is shared with no other test or fleet. Needs the engine
//! with the test images, RabbitMQ on 127.0.0.1:5672 and `rabbitmqctl`; prints `SKIPPED`
//! otherwise (and fails when `NEBULA_REQUIRE_ENGINE=1` or `NEBULA_REQUIRE_BROKER=1` says the
//! missing part is required).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::uri::{AMQPAuthority, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use nebula_tests::procs::{ApiManager, Worker, broker_answers};
use nebula_tests::{
    Api, IMAGE, Process, binary, cleanup, engine_ready, free_port_range, running, scratch_dir,
    unique, unix_now, wait_for,
};
use serde_json::{Value, json};

const USER: &str = "admin";
const PASSWORD: &str = "bus-reports-pw";

fn rabbitmqctl(args: &[&str]) -> bool {
    Command::new("rabbitmqctl")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A RabbitMQ vhost of this test's own, on which guest may do everything; deleted on drop.
struct Vhost(String);

impl Vhost {
    /// The vhost, or `None` (after printing `SKIPPED`) without a broker or `rabbitmqctl`.
    fn create(test: &str) -> Option<Self> {
        let required = std::env::var("NEBULA_REQUIRE_BROKER").as_deref() == Ok("1");
        if !broker_answers() {
            assert!(
                !required,
                "{test}: NEBULA_REQUIRE_BROKER=1 but no RabbitMQ answers"
            );
            println!("SKIPPED {test}: no RabbitMQ on 127.0.0.1:5672; run .ci/rabbitmq.sh");
            return None;
        }
        let name = unique("nebula-e2e-");
        let made = rabbitmqctl(&["-q", "add_vhost", &name])
            && rabbitmqctl(&[
                "-q",
                "set_permissions",
                "-p",
                &name,
                "guest",
                ".*",
                ".*",
                ".*",
            ]);
        if !made {
            assert!(!required, "{test}: rabbitmqctl cannot make a vhost");
            println!("SKIPPED {test}: rabbitmqctl cannot make a vhost on the local broker");
            return None;
        }
        Some(Self(name))
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.0)
    }

    /// Reports ready in the vhost's report queue (0 while it does not exist).
    async fn reports_waiting(&self) -> u32 {
        let uri = AMQPUri {
            authority: AMQPAuthority {
                host: "127.0.0.1".to_owned(),
                ..AMQPAuthority::default()
            },
            vhost: self.0.clone(),
            ..AMQPUri::default()
        };
        let Ok(conn) = Connection::connect_uri(uri, ConnectionProperties::default()).await else {
            return 0;
        };
        let Ok(channel) = conn.create_channel().await else {
            return 0;
        };
        let count = channel
            .queue_declare(
                ShortString::from(nebula_rabbit::DEFAULT_REPORT_QUEUE),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_or(0, |q| q.message_count());
        let _ = conn.close(200, ShortString::from("done")).await;
        count
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        rabbitmqctl(&["-q", "delete_vhost", &self.0]);
    }
}

/// An API manager on the embedded store in `dir`, its files named after `name`, with `env`
/// added.
async fn api_manager(dir: &Path, name: &str, env: &[(&str, &str)]) -> (Process, Api, String) {
    ApiManager::new(USER, PASSWORD)
        .named(name)
        .envs(env)
        .ready(dir)
        .await
}

/// A worker manager selecting `app`, syncing from `uri` every second, with `env` added.
fn worker(dir: &Path, uri: &str, app: &str, env: &[(&str, &str)]) -> Process {
    Worker::of(uri, USER, PASSWORD)
        .env("APP_NAME", app)
        .envs(env)
        .start(dir.join("worker.log"))
}

/// The reports of `host` the manager keeps (one page of up to 1000).
async fn reports_of(api: &Api, host: &str) -> Vec<Value> {
    api.reports_page(&format!("hostname={host}&page_size=1000"))
        .await
}

/// The worker syncs from manager A, which is not on the broker; manager B is on the broker
/// and never hears from the worker over HTTP. So every report B holds came over RabbitMQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_reports_reach_the_manager_over_rabbitmq_and_wait_while_it_is_down() {
    let test = "worker_reports_reach_the_manager_over_rabbitmq_and_wait_while_it_is_down";
    if !engine_ready(test) {
        return;
    }
    let Some(vhost) = Vhost::create(test) else {
        return;
    };
    let dir = scratch_dir("nebula-bus-reports-");
    let rabbit = vhost.url();
    let (_a, api_a, uri_a) = api_manager(&dir, "manager-a", &[]).await;
    let (mut b, api_b, _) = api_manager(&dir, "manager-b", &[("RABBIT_URL", &rabbit)]).await;

    let app = unique("busrep");
    let host = unique("bus-host-");
    let port = free_port_range(1);
    let (code, reply) = api_a
        .call(
            "POST",
            &format!("/api/v2/apps/{app}"),
            Some(
                json!({"docker_image": IMAGE, "starting_ports": [{port.to_string(): "80"}],
                "containers_per": {"server": 1}}),
            ),
        )
        .await;
    assert_eq!(code, 200, "{reply}");
    let worker_id = unique("bus-w-");
    let w = worker(
        &dir,
        &uri_a,
        &app,
        &[
            ("RABBIT_URL", &rabbit),
            ("NEBULA_WORKER_ID", &worker_id),
            ("NEBULA_REPORT_HOSTNAME", &host),
        ],
    );
    wait_for("the app runs", Duration::from_secs(60), || async {
        running(&app).len() == 1
    })
    .await;

    // The worker's report, whole, in the manager that only hears it over the broker.
    let converged = |r: &Value| r["apps_status"][&app]["converged"] == true;
    wait_for(
        "a report of the converged host in manager B",
        Duration::from_secs(30),
        || async { reports_of(&api_b, &host).await.iter().any(converged) },
    )
    .await;
    let report = reports_of(&api_b, &host)
        .await
        .into_iter()
        .find(converged)
        .unwrap();
    assert_eq!(report["hostname"], host.as_str());
    assert_eq!(report["app_names"], json!([app]));
    assert_eq!(report["apps_containers"][0]["name"], format!("{app}-1"));
    assert_eq!(report["apps_containers"][0]["image"], IMAGE);
    assert!(report["report_insert_date"]["$date"].as_u64().is_some());

    // Manager B down: the worker goes on reporting, and the broker keeps the reports.
    let stopped_at = unix_now();
    b.kill9();
    wait_for(
        "reports waiting in the broker while no manager runs",
        Duration::from_secs(30),
        || async { vhost.reports_waiting().await >= 3 && unix_now() >= stopped_at + 2 },
    )
    .await;
    let restarted_at = unix_now();
    b.restart();
    api_b.wait_ready().await;
    let made_while_down = |r: &Value| {
        r["report_creation_time"]
            .as_u64()
            .is_some_and(|t| t > stopped_at && t <= restarted_at)
    };
    wait_for(
        "a report made while manager B was down, stored after it came back",
        Duration::from_secs(30),
        || async { reports_of(&api_b, &host).await.iter().any(made_while_down) },
    )
    .await;
    wait_for(
        "manager B takes every waiting report",
        Duration::from_secs(30),
        || async { vhost.reports_waiting().await == 0 },
    )
    .await;

    assert!(
        reports_of(&api_a, &host).await.is_empty(),
        "no report went over HTTP"
    );
    let log = w.log();
    assert!(log.contains("reports over RabbitMQ"), "{log}");
    assert!(!log.contains("sending them over HTTP"), "{log}");
    drop(w);
    cleanup(&app);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker whose broker does not answer reports over HTTP: no report is lost to the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_the_worker_reports_over_http() {
    if !engine_ready("without_a_broker_the_worker_reports_over_http") {
        return;
    }
    let dir = scratch_dir("nebula-bus-fallback-");
    let (_manager, api, uri) = api_manager(&dir, "manager", &[]).await;
    let host = unique("fallback-host-");
    // Nothing listens on port 1.
    let w = worker(
        &dir,
        &uri,
        &unique("nothing"),
        &[
            ("RABBIT_URL", "amqp://guest:guest@127.0.0.1:1/"),
            ("NEBULA_WORKER_ID", &unique("fallback-w-")),
            ("NEBULA_REPORT_HOSTNAME", &host),
        ],
    );
    wait_for(
        "the report, sent over HTTP",
        Duration::from_secs(30),
        || async { !reports_of(&api, &host).await.is_empty() },
    )
    .await;
    let log = w.log();
    assert!(log.contains("reports over RabbitMQ"), "{log}");
    assert!(log.contains("sending them over HTTP"), "{log}");
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_report_transport_stops_the_worker_at_start() {
    for (env, needle) in [
        (
            &[
                ("NEBULA_REPORT_TRANSPORT", "pigeon"),
                ("RABBIT_HOST", "127.0.0.1"),
            ][..],
            "NEBULA_REPORT_TRANSPORT=\"pigeon\": must be bus or http",
        ),
        (
            &[("NEBULA_REPORT_TRANSPORT", "bus")][..],
            "NEBULA_REPORT_TRANSPORT=bus needs RabbitMQ",
        ),
    ] {
        let out = Command::new(binary("nebula-worker-manager"))
            .env_clear()
            .env("APP_NAME", "a")
            .env("NEBULA_MANAGER_URI", "http://127.0.0.1:1")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
}
