//! What the tests against a real RabbitMQ on 127.0.0.1:5672 (guest/guest, as
//! `.ci/rabbitmq.sh` starts it) share: whether the broker answers, names of a test's own, a
//! bus on a test's settings, a plain lapin connection beside it, and waiting for deliveries.

use std::time::Duration;

use lapin::uri::{AMQPAuthority, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use nebula_core::bus::{Delivery, Subscription};
use nebula_rabbit::{RabbitBus, RabbitConfig};

/// Where the broker listens.
pub(crate) const BROKER: &str = "127.0.0.1:5672";
/// How long a delivery may take.
pub(crate) const WITHIN: Duration = Duration::from_secs(10);

/// Whether a broker answers; prints `SKIPPED` (or fails when one is required) when not.
pub(crate) async fn broker_up() -> bool {
    let up = matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(BROKER)
        )
        .await,
        Ok(Ok(_))
    );
    if !up {
        assert!(
            std::env::var("NEBULA_REQUIRE_BROKER").as_deref() != Ok("1"),
            "NEBULA_REQUIRE_BROKER=1 but no RabbitMQ answers on {BROKER}"
        );
        println!("SKIPPED: no RabbitMQ on {BROKER}; run .ci/rabbitmq.sh");
    }
    up
}

/// A prefix no other test uses, for the exchanges and queues of one test.
pub(crate) fn unique_prefix() -> String {
    format!("nebula-it-{:08x}", rand::random::<u32>())
}

/// A bus on `config`.
pub(crate) fn bus(config: &RabbitConfig) -> RabbitBus {
    RabbitBus::new(config.clone()).unwrap()
}

/// A plain lapin connection, for looking at and changing what the bus made, and for setting
/// up what it would never do itself.
pub(crate) async fn raw() -> Connection {
    let uri = AMQPUri {
        authority: AMQPAuthority {
            host: "127.0.0.1".to_owned(),
            ..AMQPAuthority::default()
        },
        ..AMQPUri::default()
    };
    Connection::connect_uri(uri, ConnectionProperties::default())
        .await
        .unwrap()
}

/// The next delivery of `sub`, within [`WITHIN`].
pub(crate) async fn next<M>(sub: &mut Subscription<M>) -> Delivery<M> {
    tokio::time::timeout(WITHIN, sub.next())
        .await
        .expect("a delivery in time")
        .expect("the subscription is open")
}

/// That `sub` delivers nothing more within half a second.
pub(crate) async fn nothing_more<M: std::fmt::Debug>(sub: &mut Subscription<M>) {
    let extra = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(extra.is_err(), "no further delivery: {extra:?}");
}
