//! `RabbitBus` with `Topology::Streams` against a real RabbitMQ on 127.0.0.1:5672
//! (guest/guest), as `.ci/rabbitmq.sh` starts it.
//!
//! Without a broker every test prints `SKIPPED: ...` and returns; with
//! `NEBULA_REQUIRE_BROKER=1` it fails instead. Each test publishes to an exchange of its own
//! (`nebula-it-<random>.apps`), so its streams (`nebula.stream.<exchange>.<key>`) are its own
//! too; both are deleted at the end.

use std::time::Duration;

use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use nebula_core::bus::{Bus, BusMessage, Topic};
use nebula_core::device_group::DeviceGroupName;
use nebula_core::model::{App, AppName, AppSpec, RestartMode};
use nebula_rabbit::{RabbitConfig, Topology, stream_arguments, stream_name};

mod common;
use common::{WITHIN, broker_up, bus, next, nothing_more, raw, unique_prefix};

/// The defaults with streams, on an exchange of this test's own, with a short retention.
fn config(prefix: &str, worker_id: Option<&str>) -> RabbitConfig {
    RabbitConfig {
        exchange: format!("{prefix}.apps"),
        worker_id: worker_id.map(str::to_owned),
        queue_expiry: Duration::from_secs(120),
        stream_max_bytes: 16 * 1024 * 1024,
        topology: Topology::Streams,
        ..RabbitConfig::default()
    }
}

fn name(n: &str) -> AppName {
    AppName::parse(n).unwrap()
}

fn group(g: &str) -> DeviceGroupName {
    DeviceGroupName::parse(g).unwrap()
}

fn changed(app: &str, app_id: u64) -> BusMessage {
    BusMessage::app_changed(App {
        app_name: name(app),
        app_id,
        incarnation: 1,
        restart_generation: 0,
        restart_mode: RestartMode::AsConfigured,
        prune_generation: 0,
        spec: AppSpec::with_image("busybox"),
        fleet_rollout: None,
    })
}

/// Deletes the exchange of `config` and the streams of `topics` on it.
async fn clean_up(config: &RabbitConfig, topics: &[Topic]) {
    let conn = raw().await;
    let channel = conn.create_channel().await.unwrap();
    for topic in topics {
        let _ = channel
            .queue_delete(
                ShortString::from(stream_name(config, topic)),
                QueueDeleteOptions::default(),
            )
            .await;
    }
    let _ = channel
        .exchange_delete(
            ShortString::from(config.exchange.as_str()),
            ExchangeDeleteOptions::default(),
        )
        .await;
}

/// Every topic the contract suite subscribes to with `prefix`, for the clean-up.
fn contract_topics(prefix: &str) -> Vec<Topic> {
    let mut topics = vec![Topic::AllApps];
    for a in ["a", "c", "x"] {
        topics.push(Topic::App(name(&format!("{prefix}-{a}"))));
    }
    for g in ["g", "h", "other"] {
        topics.push(Topic::DeviceGroup(group(&format!("{prefix}-{g}"))));
    }
    topics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_contract_with_streams() {
    if !broker_up().await {
        return;
    }
    for worker_id in [None, Some("w")] {
        let prefix = unique_prefix();
        let config = config(&prefix, worker_id);
        nebula_core::testing::contract::bus(&bus(&config), &prefix).await;
        clean_up(&config, &contract_topics(&prefix)).await;
    }
}

/// A subscriber whose connection closed resumes right after the last delivery it
/// acknowledged: what it held unacknowledged and what was published meanwhile come, in
/// order; what it acknowledged does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_after_what_it_acknowledged() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let id = format!("{prefix}-w");
    let worker = config(&prefix, Some(&id));
    let app = format!("{prefix}-a");
    let topics = [Topic::App(name(&app))];
    let publisher = bus(&config(&prefix, None));
    let subscriber = bus(&worker);

    let mut sub = subscriber.subscribe(&topics).await.unwrap();
    for app_id in 1..=3 {
        publisher.publish(&changed(&app, app_id)).await.unwrap();
    }
    for app_id in 1..=2 {
        let d = next(&mut sub).await;
        assert_eq!(d.message, changed(&app, app_id));
        d.ack().await.unwrap();
    }
    let held = next(&mut sub).await;
    assert_eq!(held.message, changed(&app, 3));
    drop(held); // applied halfway when the connection went
    subscriber.close().await;
    let end = tokio::time::timeout(WITHIN, sub.next()).await;
    assert!(matches!(end, Ok(None)), "the subscription ends: {end:?}");

    for app_id in 4..=5 {
        publisher.publish(&changed(&app, app_id)).await.unwrap();
    }
    let mut sub = subscriber.subscribe(&topics).await.unwrap();
    for app_id in 3..=5 {
        let d = next(&mut sub).await;
        assert_eq!(
            d.message,
            changed(&app, app_id),
            "everything after the last ack, in order"
        );
        d.ack().await.unwrap();
    }
    nothing_more(&mut sub).await;

    // Again, with the connection closed by the broker (as on a network cut) when
    // `rabbitmqctl` can reach it.
    drop(sub);
    let mut sub = subscriber.subscribe(&topics).await.unwrap();
    if close_connection_of(&format!("nebula/{id}")).await {
        let end = tokio::time::timeout(WITHIN, sub.next()).await;
        assert!(matches!(end, Ok(None)), "the subscription ends: {end:?}");
        publisher.publish(&changed(&app, 6)).await.unwrap();
        let mut sub = subscriber.subscribe(&topics).await.unwrap();
        let d = next(&mut sub).await;
        assert_eq!(d.message, changed(&app, 6), "only what came after the acks");
        d.ack().await.unwrap();
        nothing_more(&mut sub).await;
    } else {
        println!("SKIPPED (part): rabbitmqctl cannot reach the local broker");
    }
    clean_up(&worker, &topics).await;
}

/// Closes the broker side of the connection named `name` (with `rabbitmqctl`); false when
/// `rabbitmqctl` cannot reach the broker.
async fn close_connection_of(name: &str) -> bool {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let ctl = |args: &[&str]| {
            std::process::Command::new("rabbitmqctl")
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let Some(listing) = ctl(&["-q", "list_connections", "pid", "client_properties"]) else {
            return false;
        };
        let pids: Vec<String> = listing
            .lines()
            .filter(|l| l.contains(&name))
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        assert!(!pids.is_empty(), "our connection in:\n{listing}");
        for pid in pids {
            ctl(&["close_connection", &pid, "nebula test"]).expect("closed");
        }
        true
    })
    .await
    .unwrap()
}

/// A bus that subscribed but acknowledged nothing on a stream still gets, after a
/// reconnect, what was published while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_acknowledged_nothing_loses_nothing_either() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let worker = config(&prefix, None);
    let topics = [Topic::DeviceGroup(group(&format!("{prefix}-g")))];
    let app = format!("{prefix}-a");
    let subscriber = bus(&worker);
    let mut sub = subscriber.subscribe(&topics).await.unwrap();
    subscriber.close().await;
    let end = tokio::time::timeout(WITHIN, sub.next()).await;
    assert!(matches!(end, Ok(None)), "the subscription ends: {end:?}");

    let publisher = bus(&config(&prefix, None));
    let in_group = |app_id| match changed(&app, app_id) {
        BusMessage::AppChanged { app, .. } => BusMessage::AppChanged {
            app,
            device_groups: vec![group(&format!("{prefix}-g"))],
        },
        other => other,
    };
    for app_id in 1..=3 {
        publisher.publish(&in_group(app_id)).await.unwrap();
    }
    let mut sub = subscriber.subscribe(&topics).await.unwrap();
    for app_id in 1..=3 {
        let d = next(&mut sub).await;
        assert_eq!(d.message, in_group(app_id), "in publish order");
        d.ack().await.unwrap();
    }
    nothing_more(&mut sub).await;
    clean_up(&worker, &topics).await;
}

/// Streams are shared: two workers of one topic (and one of every app) each get every
/// message, in order, from the one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_of_one_topic_each_get_every_message() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let app = format!("{prefix}-a");
    let topic = Topic::App(name(&app));
    let first = bus(&config(&prefix, Some("host-1")));
    let second = bus(&config(&prefix, Some("host-2")));
    let every = bus(&config(&prefix, Some("host-3")));
    let mut subs = vec![
        first.subscribe(std::slice::from_ref(&topic)).await.unwrap(),
        second
            .subscribe(std::slice::from_ref(&topic))
            .await
            .unwrap(),
        every.subscribe(&[Topic::AllApps]).await.unwrap(),
    ];
    let publisher = bus(&config(&prefix, None));
    for app_id in 1..=5 {
        publisher.publish(&changed(&app, app_id)).await.unwrap();
    }
    for sub in &mut subs {
        for app_id in 1..=5 {
            let d = next(sub).await;
            assert_eq!(d.message, changed(&app, app_id), "every worker, in order");
            d.ack().await.unwrap();
        }
        nothing_more(sub).await;
    }
    let stream = stream_name(first.config(), &topic);
    assert_eq!(
        stream,
        format!("nebula.stream.{prefix}.apps.app.{app}"),
        "named after the exchange and the key"
    );
    clean_up(first.config(), &[topic, Topic::AllApps]).await;
}

/// The broker holds the stream with the configured retention: the same declaration again
/// succeeds, one with another retention is refused, and the broker lists the arguments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_carry_the_configured_retention() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let config = config(&prefix, None);
    let topic = Topic::App(name(&format!("{prefix}-a")));
    let stream = stream_name(&config, &topic);
    let _sub = bus(&config)
        .subscribe(std::slice::from_ref(&topic))
        .await
        .unwrap();
    // Another worker with the same configuration.
    let _other = bus(&config)
        .subscribe(std::slice::from_ref(&topic))
        .await
        .unwrap();

    let conn = raw().await;
    let declare = |args: FieldTable| {
        let conn = &conn;
        let stream = stream.clone();
        async move {
            let channel = conn.create_channel().await.unwrap();
            channel
                .queue_declare(
                    ShortString::from(stream),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    args,
                )
                .await
        }
    };
    let mut expected = FieldTable::default();
    expected.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("stream")),
    );
    expected.insert(
        ShortString::from("x-max-age"),
        AMQPValue::LongString(LongString::from("120s")),
    );
    expected.insert(
        ShortString::from("x-max-length-bytes"),
        AMQPValue::LongLongInt(16 * 1024 * 1024),
    );
    expected.insert(
        ShortString::from("x-stream-max-segment-size-bytes"),
        AMQPValue::LongLongInt(2 * 1024 * 1024),
    );
    assert_eq!(stream_arguments(&config), expected);
    declare(expected.clone())
        .await
        .expect("the same declaration again");
    let mut longer = expected.clone();
    longer.insert(
        ShortString::from("x-max-age"),
        AMQPValue::LongString(LongString::from("7200s")),
    );
    let refused = declare(longer).await;
    assert!(
        refused.is_err(),
        "another retention is refused: {refused:?}"
    );

    let listed = tokio::task::spawn_blocking(|| {
        std::process::Command::new("rabbitmqctl")
            .args(["-q", "list_queues", "name", "arguments"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    })
    .await
    .unwrap();
    match listed {
        Some(listing) => {
            let line = listing
                .lines()
                .find(|l| l.split_whitespace().next() == Some(stream.as_str()))
                .unwrap_or_else(|| panic!("{stream} in:\n{listing}"));
            for want in [
                "x-max-age",
                "120s",
                "x-max-length-bytes",
                "16777216",
                "x-stream-max-segment-size-bytes",
                "2097152",
                "stream",
            ] {
                assert!(line.contains(want), "{want} in {line}");
            }
        }
        None => println!("SKIPPED (part): rabbitmqctl cannot reach the local broker"),
    }
    clean_up(&config, &[topic]).await;
}
