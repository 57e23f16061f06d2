//! `RabbitBus` against a real RabbitMQ on 127.0.0.1:5672 (guest/guest), as `.ci/rabbitmq.sh`
//! starts it.
//!
//! Without a broker every test that needs one prints `SKIPPED: ...` and returns; with
//! `NEBULA_REQUIRE_BROKER=1` it fails instead. Each test publishes to an exchange of its own
//! (`nebula-it-<random>.apps`, deleted at the end) so concurrent tests never hear each other.

use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection};
use nebula_core::bus::{Bus, BusError, BusMessage, Topic};
use nebula_core::device_group::DeviceGroupName;
use nebula_core::model::{App, AppName, AppSpec, RestartMode};
use nebula_rabbit::{RabbitConfig, wire};

mod common;
use common::{WITHIN, broker_up, bus, next, nothing_more, raw, unique_prefix};

/// The defaults, on an exchange of this test's own, with short-lived worker queues.
fn config(prefix: &str, worker_id: Option<&str>) -> RabbitConfig {
    RabbitConfig {
        exchange: format!("{prefix}.apps"),
        worker_id: worker_id.map(str::to_owned),
        queue_expiry: Duration::from_secs(60),
        ..RabbitConfig::default()
    }
}

fn name(n: &str) -> AppName {
    AppName::parse(n).unwrap()
}

fn changed(app: &str, app_id: u64) -> BusMessage {
    in_groups(app, app_id, &[])
}

/// A change of `app` for the device groups named too.
fn in_groups(app: &str, app_id: u64, groups: &[String]) -> BusMessage {
    BusMessage::AppChanged {
        app: App {
            app_name: name(app),
            app_id,
            incarnation: 1,
            restart_generation: 0,
            restart_mode: RestartMode::AsConfigured,
            prune_generation: 0,
            spec: AppSpec::with_image("busybox"),
            fleet_rollout: None,
        },
        device_groups: groups.iter().map(|g| group(g)).collect(),
    }
}

fn group(g: &str) -> DeviceGroupName {
    DeviceGroupName::parse(g).unwrap()
}

/// A private queue on `conn` bound to `keys` of `exchange`, for looking at what the broker
/// routes; returns its channel and name.
async fn raw_queue(conn: &Connection, exchange: &str, keys: &[&str]) -> (lapin::Channel, String) {
    let channel = conn.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            ShortString::from(""),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .name()
        .as_str()
        .to_owned();
    for key in keys {
        channel
            .queue_bind(
                ShortString::from(queue.as_str()),
                ShortString::from(exchange),
                ShortString::from(*key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    (channel, queue)
}

/// Every message waiting in `queue`, taken off it.
async fn drain(channel: &lapin::Channel, queue: &str) -> Vec<lapin::message::Delivery> {
    let mut got = Vec::new();
    while let Some(m) = channel
        .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        got.push(m.delivery);
    }
    got
}

async fn raw_publish(conn: &Connection, exchange: &str, key: &str, body: &[u8]) {
    let channel = conn.create_channel().await.unwrap();
    channel
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(key),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    channel.close(200, ShortString::from("done")).await.unwrap();
}

/// Messages waiting (ready, not unacked) in `queue`.
async fn ready_in(conn: &Connection, queue: &str) -> u32 {
    let channel = conn.create_channel().await.unwrap();
    let q = channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    q.message_count()
}

async fn delete_exchange(exchange: &str) {
    let conn = raw().await;
    let channel = conn.create_channel().await.unwrap();
    let _ = channel
        .exchange_delete(
            ShortString::from(exchange),
            ExchangeDeleteOptions::default(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_contract_with_private_queues() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let config = config(&prefix, None);
    nebula_core::testing::contract::bus(&bus(&config), &prefix).await;
    delete_exchange(&config.exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_contract_with_worker_queues() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let config = config(&prefix, Some(&prefix));
    nebula_core::testing::contract::bus(&bus(&config), &prefix).await;
    delete_exchange(&config.exchange).await;
}

/// A message for an app and three groups is one publish (a queue bound to `#` sees one
/// copy) that reaches a worker bound to two of its keys once, and the `BCC` keys are not
/// delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_an_app_and_groups_is_published_once_and_delivered_once() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let worker = config(&prefix, Some(&format!("{prefix}-w")));
    let publisher = bus(&config(&prefix, None));
    publisher.connect().await.unwrap();
    let app = format!("{prefix}-x");
    let groups: Vec<String> = ["g", "h", "k"]
        .iter()
        .map(|g| format!("{prefix}-{g}"))
        .collect();
    let conn = raw().await;
    let (channel, everything) = raw_queue(&conn, &worker.exchange, &["#"]).await;
    let g_key = wire::group_routing_key(&group(&groups[0]));
    let h_key = wire::group_routing_key(&group(&groups[1]));
    let (_, two_groups) = raw_queue(&conn, &worker.exchange, &[&g_key, &h_key]).await;

    let two = [
        Topic::DeviceGroup(group(&groups[0])),
        Topic::DeviceGroup(group(&groups[1])),
    ];
    let worker_bus = bus(&worker);
    let mut sub = worker_bus.subscribe(&two).await.unwrap();
    let mut app_and_group = bus(&config(&prefix, None))
        .subscribe(&[
            Topic::App(name(&app)),
            Topic::DeviceGroup(group(&groups[2])),
        ])
        .await
        .unwrap();
    let mut other_group = bus(&config(&prefix, None))
        .subscribe(&[Topic::DeviceGroup(group(&format!("{prefix}-z")))])
        .await
        .unwrap();

    let message = in_groups(&app, 1, &groups);
    publisher.publish(&message).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message, message);
    d.ack().await.unwrap();
    nothing_more(&mut sub).await;
    assert_eq!(next(&mut app_and_group).await.message, message);
    nothing_more(&mut app_and_group).await;
    nothing_more(&mut other_group).await;

    let seen = drain(&channel, &everything).await;
    assert_eq!(
        seen.len(),
        1,
        "one publish for the app and its three groups"
    );
    assert_eq!(seen[0].routing_key.as_str(), format!("app.{app}"));
    let headers = seen[0].properties.headers().clone().unwrap_or_default();
    assert!(
        !headers.inner().contains_key("BCC"),
        "the broker removes BCC before delivery: {headers:?}"
    );
    assert_eq!(
        drain(&channel, &two_groups).await.len(),
        1,
        "one copy per queue"
    );
    drop(sub);
    delete_exchange(&worker.exchange).await;
}

/// An app listed by more groups than one content header frame holds (frame_max 4096) is
/// published in as few parts as fit, each group's key in one part: every group's subscriber
/// gets it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_of_more_groups_than_a_header_holds_reaches_each_group_once() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let small = RabbitConfig {
        frame_max: 4096,
        ..config(&prefix, None)
    };
    let app = format!("{prefix}-x");
    // 63-character names, the longest allowed: 300 of them need about 21 KB of header.
    let groups: Vec<String> = (0..300)
        .map(|i| format!("{prefix}-{i:03}-{}", "g".repeat(63 - prefix.len() - 5)))
        .collect();
    assert!(groups.iter().all(|g| g.len() == 63));
    let publisher = bus(&small);
    publisher.connect().await.unwrap();
    let conn = raw().await;
    let (channel, everything) = raw_queue(&conn, &small.exchange, &["#"]).await;
    let subscriber = bus(&small);
    let mut first = subscriber
        .subscribe(&[Topic::DeviceGroup(group(&groups[0]))])
        .await
        .unwrap();
    let mut last = subscriber
        .subscribe(&[Topic::DeviceGroup(group(&groups[299]))])
        .await
        .unwrap();
    let mut app_only = subscriber
        .subscribe(&[Topic::App(name(&app))])
        .await
        .unwrap();
    let message = in_groups(&app, 1, &groups);
    publisher.publish(&message).await.unwrap();
    for sub in [&mut first, &mut last, &mut app_only] {
        assert_eq!(next(sub).await.message, message);
        nothing_more(sub).await;
    }
    let seen = drain(&channel, &everything).await;
    assert!(
        (2..=12).contains(&seen.len()),
        "a few publishes, not one per group: {}",
        seen.len()
    );
    delete_exchange(&small.exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_queue_survives_a_short_disconnect() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let worker = config(&prefix, Some(&format!("{prefix}-w")));
    let app = format!("{prefix}-a");
    let topics = [Topic::App(name(&app))];

    let first = bus(&worker);
    let mut sub = first.subscribe(&topics).await.unwrap();
    first.close().await;
    let end = tokio::time::timeout(WITHIN, sub.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "a subscription whose connection closed ends: {end:?}"
    );

    // Published while no worker listens: the queue keeps it.
    let publisher = bus(&config(&prefix, None));
    publisher.publish(&changed(&app, 1)).await.unwrap();
    publisher.publish(&changed(&app, 2)).await.unwrap();

    let second = bus(&worker);
    let mut sub = second.subscribe(&topics).await.unwrap();
    for app_id in [1, 2] {
        let d = next(&mut sub).await;
        assert_eq!(d.message, changed(&app, app_id), "in publish order");
        d.ack().await.unwrap();
    }
    nothing_more(&mut sub).await;

    // The closed bus connects again by itself.
    let mut again = first.subscribe(&[Topic::AllApps]).await.unwrap();
    publisher.publish(&changed(&app, 3)).await.unwrap();
    assert_eq!(next(&mut again).await.message, changed(&app, 3));
    delete_exchange(&worker.exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_come_again_after_the_subscriber_drops() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let worker = config(&prefix, Some(&format!("{prefix}-w")));
    let app = format!("{prefix}-a");
    let topics = [Topic::App(name(&app))];
    let bus = bus(&worker);

    let mut sub = bus.subscribe(&topics).await.unwrap();
    bus.publish(&changed(&app, 1)).await.unwrap();
    let unacked = next(&mut sub).await;
    assert_eq!(unacked.message, changed(&app, 1));
    drop(unacked);
    drop(sub);

    // Resubscribing at once also shows the exclusive consumer of the old subscription is
    // waited for, not reported as a second worker.
    let mut sub = bus.subscribe(&topics).await.unwrap();
    let again = next(&mut sub).await;
    assert_eq!(again.message, changed(&app, 1), "redelivered");
    again.ack().await.unwrap();
    bus.publish(&changed(&app, 2)).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(
        d.message,
        changed(&app, 2),
        "an acked message does not come back"
    );
    d.ack().await.unwrap();
    nothing_more(&mut sub).await;
    delete_exchange(&worker.exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_with_one_id_are_refused() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let worker = config(&prefix, Some(&format!("{prefix}-w")));
    let topics = [Topic::AllApps];
    let _first = bus(&worker).subscribe(&topics).await.unwrap();
    let err = bus(&worker).subscribe(&topics).await.unwrap_err();
    let BusError::Unavailable(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.contains("used by two workers"), "{text}");
    delete_exchange(&worker.exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_waits_for_the_brokers_confirm() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let config = config(&prefix, None);
    let app = format!("{prefix}-a");
    let bus = bus(&config);
    bus.connect().await.unwrap();

    // A queue that holds one message and makes the broker nack the next: only a publisher
    // that waits for confirms (and checks them) can tell.
    let conn = raw().await;
    let channel = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(ShortString::from("x-max-length"), AMQPValue::LongLongInt(1));
    args.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    let queue = format!("{prefix}-full");
    channel
        .queue_declare(
            ShortString::from(queue.as_str()),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            ShortString::from(queue.as_str()),
            ShortString::from(config.exchange.as_str()),
            ShortString::from(wire::routing_key(&name(&app)).as_str()),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    bus.publish(&changed(&app, 1)).await.unwrap();
    assert_eq!(ready_in(&conn, &queue).await, 1, "confirmed means enqueued");
    let err = bus.publish(&changed(&app, 2)).await.unwrap_err();
    let BusError::Unavailable(text) = &err else {
        panic!("{err:?}")
    };
    assert!(text.contains("nack"), "{text}");
    // The channel stays usable after a nack.
    bus.publish(&changed(&format!("{prefix}-other"), 1))
        .await
        .unwrap();
    delete_exchange(&config.exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_foreign_messages_are_acked_and_skipped() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let worker = config(&prefix, Some(&format!("{prefix}-w")));
    let app = format!("{prefix}-a");
    let topics = [Topic::App(name(&app))];
    let key = wire::routing_key(&name(&app));
    let bus = bus(&worker);
    let mut sub = bus.subscribe(&topics).await.unwrap();

    let conn = raw().await;
    let ex = worker.exchange.as_str();
    raw_publish(&conn, ex, &key, b"\x00 not json").await;
    raw_publish(&conn, ex, &key, br#"{"v":2,"kind":"app_deleted"}"#).await;
    raw_publish(&conn, ex, &key, br#"{"v":1,"kind":"unknown"}"#).await;
    // Valid, but about an app this worker did not select.
    raw_publish(
        &conn,
        ex,
        &key,
        &wire::encode(&changed(&format!("{prefix}-b"), 1)).unwrap(),
    )
    .await;
    bus.publish(&changed(&app, 1)).await.unwrap();

    let d = next(&mut sub).await;
    assert_eq!(d.message, changed(&app, 1), "the bad ones were skipped");
    d.ack().await.unwrap();
    nothing_more(&mut sub).await;

    // Skipped means acked: nothing comes back once the subscription's channel is gone.
    bus.close().await;
    assert!(
        tokio::time::timeout(WITHIN, sub.next())
            .await
            .unwrap()
            .is_none()
    );
    let queue = worker.queue_name(&topics).unwrap();
    assert_eq!(ready_in(&conn, &queue).await, 0, "nothing left in {queue}");
    delete_exchange(ex).await;
}

/// The broker closing the connection (as on a broker restart or a network cut) ends the
/// subscription; the same bus then publishes and subscribes on a new connection. Needs
/// `rabbitmqctl` on this machine (skipped otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_by_the_broker_ends_the_subscription() {
    if !broker_up().await {
        return;
    }
    let ctl = |args: &[&str]| {
        std::process::Command::new("rabbitmqctl")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    if ctl(&["-q", "status"]).is_none() {
        println!("SKIPPED: rabbitmqctl cannot reach the local broker");
        return;
    }
    let prefix = unique_prefix();
    let id = format!("{prefix}-w");
    let worker = config(&prefix, Some(&id));
    let app = format!("{prefix}-a");
    let topics = [Topic::App(name(&app))];
    let bus = bus(&worker);
    let mut sub = bus.subscribe(&topics).await.unwrap();

    let listing = ctl(&["-q", "list_connections", "pid", "client_properties"]).unwrap();
    let pid = listing
        .lines()
        .find(|l| l.contains(&format!("nebula/{id}")))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("our connection in:\n{listing}"))
        .to_owned();
    ctl(&["close_connection", &pid, "nebula test"]).expect("closed");
    let end = tokio::time::timeout(WITHIN, sub.next()).await;
    assert!(matches!(end, Ok(None)), "the subscription ends: {end:?}");

    bus.publish(&changed(&app, 1)).await.unwrap();
    let mut sub = bus.subscribe(&topics).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message, changed(&app, 1));
    d.ack().await.unwrap();
    delete_exchange(&worker.exchange).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_reported_without_the_password() {
    if !broker_up().await {
        return;
    }
    let bus = bus(&RabbitConfig {
        user: "nebula-nobody".to_owned(),
        password: "hunter2-secret".to_owned(),
        ..config(&unique_prefix(), None)
    });
    let err = bus.publish(&changed("x", 1)).await.unwrap_err();
    let text = err.to_string();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("nebula-nobody@127.0.0.1:5672"), "{text}");
}

/// Needs no broker: nothing listens on port 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_calls_fail_fast_with_the_reason() {
    let bus = bus(&RabbitConfig {
        port: 1,
        password: "hunter2-secret".to_owned(),
        ..RabbitConfig::default()
    });
    let started = std::time::Instant::now();
    let first = bus.publish(&changed("x", 1)).await.unwrap_err().to_string();
    assert!(first.contains("127.0.0.1:1"), "{first}");
    let second = bus
        .subscribe(&[Topic::AllApps])
        .await
        .unwrap_err()
        .to_string();
    assert!(second.contains("next connection attempt"), "{second}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!format!("{first}{second}{bus:?}").contains("hunter2"));
}
