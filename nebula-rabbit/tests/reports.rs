//! Worker reports through a real RabbitMQ on 127.0.0.1:5672 (guest/guest), as
//! `.ci/rabbitmq.sh` starts it: the `ReportBus` contract, and what only a broker can show.
//!
//! Without a broker every test that needs one prints `SKIPPED: ...` and returns; with
//! `NEBULA_REQUIRE_BROKER=1` it fails instead. Each test uses a report exchange and queue of
//! its own (`nebula-it-<random>.reports`, deleted at the end), so tests never share reports,
//! neither with each other nor with a fleet on the same broker.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{
    BasicPublishOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use nebula_core::bus::ReportBus;
use nebula_core::report::WorkerReport;
use nebula_rabbit::{RabbitConfig, wire};

mod common;
use common::{WITHIN, broker_up, bus, next, nothing_more, raw, unique_prefix};

/// The defaults, with exchanges and a report queue of this test's own.
fn config(prefix: &str) -> RabbitConfig {
    RabbitConfig {
        exchange: format!("{prefix}.apps"),
        report_exchange: format!("{prefix}.reports"),
        report_queue: format!("{prefix}.reports"),
        ..RabbitConfig::default()
    }
}

fn report(host: &str, time: u64) -> WorkerReport {
    WorkerReport {
        hostname: host.to_owned(),
        report_creation_time: time,
        ..WorkerReport::default()
    }
}

/// Messages ready (not delivered, not unacked) in `queue`.
async fn ready_in(queue: &str) -> u32 {
    let conn = raw().await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(
            ShortString::from(queue),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

async fn delete_queue(queue: &str) {
    let conn = raw().await;
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_delete(ShortString::from(queue), QueueDeleteOptions::default())
        .await
        .unwrap();
}

/// Removes this test's report queue and exchanges.
async fn clean(config: &RabbitConfig) {
    let conn = raw().await;
    let channel = conn.create_channel().await.unwrap();
    let _ = channel
        .queue_delete(
            ShortString::from(config.report_queue.as_str()),
            QueueDeleteOptions::default(),
        )
        .await;
    for exchange in [&config.report_exchange, &config.exchange] {
        let _ = channel
            .exchange_delete(
                ShortString::from(exchange.as_str()),
                ExchangeDeleteOptions::default(),
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_bus_contract_on_rabbitmq() {
    if !broker_up().await {
        return;
    }
    let prefix = unique_prefix();
    let config = config(&prefix);
    nebula_core::testing::contract::report_bus(&bus(&config), &prefix).await;
    assert_eq!(ready_in(&config.report_queue).await, 0, "nothing left");
    clean(&config).await;
}

/// Managers and workers are separate processes: reports published by one connection, with no
/// manager connected, are delivered to a manager that connects later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_wait_for_a_manager_that_connects_later() {
    if !broker_up().await {
        return;
    }
    let config = config(&unique_prefix());
    let worker = bus(&config);
    for t in 1..=3 {
        worker.publish_report(&report("edge-1", t)).await.unwrap();
    }
    worker.close().await;
    assert_eq!(
        ready_in(&config.report_queue).await,
        3,
        "confirmed means queued"
    );

    let manager = bus(&config);
    let mut sub = manager.subscribe_reports().await.unwrap();
    for t in 1..=3 {
        let d = next(&mut sub).await;
        assert_eq!(d.message, report("edge-1", t));
        d.ack().await.unwrap();
    }
    nothing_more(&mut sub).await;
    clean(&config).await;
}

/// A manager whose connection drops before it acked gets the report again when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_unacked_when_the_connection_drops_comes_again() {
    if !broker_up().await {
        return;
    }
    let config = config(&unique_prefix());
    let worker = bus(&config);
    let manager = bus(&config);
    let mut sub = manager.subscribe_reports().await.unwrap();
    worker.publish_report(&report("edge-1", 1)).await.unwrap();
    let unacked = next(&mut sub).await;
    manager.close().await;
    let end = tokio::time::timeout(WITHIN, sub.next()).await;
    assert!(
        matches!(end, Ok(None)),
        "a subscription whose connection closed ends: {end:?}"
    );
    assert!(unacked.ack().await.is_err(), "too late to ack");

    let mut sub = manager.subscribe_reports().await.unwrap();
    let again = next(&mut sub).await;
    assert_eq!(again.message, report("edge-1", 1), "delivered again");
    again.ack().await.unwrap();
    nothing_more(&mut sub).await;
    clean(&config).await;
}

/// The queue holds at most `max_report_queue_length` reports; the oldest go first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_report_queue_drops_the_oldest() {
    if !broker_up().await {
        return;
    }
    let config = RabbitConfig {
        max_report_queue_length: Some(3),
        ..config(&unique_prefix())
    };
    let worker = bus(&config);
    for t in 1..=5 {
        worker.publish_report(&report("edge-1", t)).await.unwrap();
    }
    assert_eq!(ready_in(&config.report_queue).await, 3);
    let mut sub = bus(&config).subscribe_reports().await.unwrap();
    for t in 3..=5 {
        let d = next(&mut sub).await;
        assert_eq!(d.message.report_creation_time, t, "the newest are kept");
        d.ack().await.unwrap();
    }
    clean(&config).await;
}

/// A report queue deleted behind the publisher's back is declared again: the broker returns
/// the unroutable report, and the publisher publishes it again rather than call it delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_report_queue_is_declared_again() {
    if !broker_up().await {
        return;
    }
    let config = config(&unique_prefix());
    let worker = bus(&config);
    worker.publish_report(&report("edge-1", 1)).await.unwrap();
    delete_queue(&config.report_queue).await;
    worker.publish_report(&report("edge-1", 2)).await.unwrap();
    assert_eq!(ready_in(&config.report_queue).await, 1);
    let mut sub = bus(&config).subscribe_reports().await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message, report("edge-1", 2));
    d.ack().await.unwrap();
    clean(&config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_reports_are_acked_and_skipped() {
    if !broker_up().await {
        return;
    }
    let config = config(&unique_prefix());
    let manager = bus(&config);
    let mut sub = manager.subscribe_reports().await.unwrap();
    let conn = raw().await;
    let channel = conn.create_channel().await.unwrap();
    for body in [
        &b"\x00 not json"[..],
        br#"{"v":2,"kind":"report","report":{}}"#,
        &wire::encode(&nebula_core::bus::BusMessage::AppDeleted {
            app_name: nebula_core::model::AppName::parse("a").unwrap(),
            incarnation: 1,
            device_groups: Vec::new(),
        })
        .unwrap(),
    ] {
        channel
            .basic_publish(
                ShortString::from(config.report_exchange.as_str()),
                ShortString::from(wire::REPORT_ROUTING_KEY),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    manager.publish_report(&report("edge-1", 1)).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message, report("edge-1", 1), "the bad ones were skipped");
    d.ack().await.unwrap();
    nothing_more(&mut sub).await;
    drop(sub);
    manager.close().await;
    assert_eq!(
        ready_in(&config.report_queue).await,
        0,
        "skipped means acked"
    );
    clean(&config).await;
}

/// Managers and workers must agree on the report queue's arguments; the broker refuses a
/// second declaration with others, and the error says which queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_queue_declared_with_other_arguments_is_named_in_the_error() {
    if !broker_up().await {
        return;
    }
    let config = config(&unique_prefix());
    bus(&config)
        .publish_report(&report("edge-1", 1))
        .await
        .unwrap();
    let other = RabbitConfig {
        max_report_queue_length: Some(7),
        ..config.clone()
    };
    let err = bus(&other)
        .subscribe_reports()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&config.report_queue) && err.contains("406"),
        "{err}"
    );
    clean(&config).await;
}

/// Needs no broker: nothing listens on port 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_a_report_fails_fast_with_the_reason() {
    let bus = bus(&RabbitConfig {
        port: 1,
        password: "hunter2-secret".to_owned(),
        ..RabbitConfig::default()
    });
    let started = std::time::Instant::now();
    let err = bus
        .publish_report(&report("edge-1", 1))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    let err = bus.subscribe_reports().await.unwrap_err().to_string();
    assert!(err.contains("next connection attempt"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!err.contains("hunter2"));
}
