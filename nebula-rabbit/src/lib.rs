//! Nebula's [`Bus`](nebula_core::bus::Bus) on RabbitMQ: [`RabbitBus`], spoken to with
//! [lapin](https://docs.rs/lapin) (plain AMQP 0-9-1, no TLS stack built in).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use nebula_core::bus::{Bus, Topic};
//! use nebula_rabbit::{RabbitBus, RabbitConfig};
//!
//! // The binary maps RABBIT_HOST/PORT/USER/PASSWORD/VHOST (or RABBIT_URL) onto the config;
//! // the library never reads the environment.
//! let config = RabbitConfig {
//!     worker_id: Some("host-17".to_owned()),
//!     ..RabbitConfig::from_url("amqp://guest:guest@127.0.0.1:5672/%2f")?
//! };
//! let bus = RabbitBus::new(config)?;
//! let mut sub = bus.subscribe(&[Topic::AllApps]).await?;
//! while let Some(delivery) = sub.next().await {
//!     // ... apply delivery.message, reconcile ...
//!     delivery.ack().await?; // only after the effect
//! }
//! // `None`: the connection was lost; resync over HTTP and subscribe again.
//! # Ok(())
//! # }
//! ```
//!
//! # Topology
//!
//! ```text
//!  API manager ── publish, confirm ──> exchange "nebula.apps" (topic, durable)
//!                  key app.<name>            │  one binding per selected topic
//!                                            ├── app.web ──> queue nebula.worker.host-1.<digest> ──> worker host-1
//!                                            ├── app.#   ──> queue nebula.worker.host-2.<digest> ──> worker host-2
//!                                            └── ...         (one queue per worker, not per app)
//! ```
//!
//! - **One durable topic exchange**, `nebula.apps` ([`RabbitConfig::exchange`]), declared by
//!   publishers and subscribers alike (the original lost messages to missing exchanges).
//!   A change of app `web` is published once, with routing key `app.web`. The `app.` prefix
//!   leaves room for device-group keys (`dg.<group>`) on the same exchange later.
//! - **One queue per worker**, named `nebula.worker.<worker id>.<digest>` (see
//!   [`RabbitConfig::queue_name`]), bound with one binding per topic the worker selects:
//!   `app.<name>` for each app of `APP_NAME`, `app.#` for a worker that takes every app. The
//!   original declared one queue per host *and app*; here a host costs the broker one queue
//!   and one consumer whatever it runs. The digest covers the topic set, the exchange and the
//!   queue arguments, so a worker whose selection changed starts on a queue with exactly the
//!   new bindings (AMQP cannot list the old ones) and its old queue simply expires.
//! - **The queue outlives short disconnects.** It is durable, classic (a quorum queue is a
//!   Raft group: a million of them is not an option), and declared with `x-expires`
//!   ([`RabbitConfig::queue_expiry`], default 10 min): a worker back within that time finds
//!   every message published meanwhile; a worker gone longer costs nothing after the expiry
//!   and resyncs over HTTP when it returns. `x-max-length` (default 10,000, overflow
//!   `drop-head`) bounds what a stuck worker can pile up; the check-in resync covers a drop.
//!   The worker's consumer is exclusive: a second worker with the same id is refused rather
//!   than silently taking half of the messages. Without a worker id (publishers, tests) a
//!   subscription gets a private server-named queue that dies with it.
//! - **Every message is persistent and confirmed.** Publishing uses a confirm-mode channel
//!   (`confirm.select`), `delivery_mode` 2, and returns only when the broker acked the message;
//!   a nack or no confirm within [`RabbitConfig::publish_timeout`] is an error, so the manager
//!   never reports a change as pushed when the broker does not hold it.
//! - **Ack after effect.** The consumer uses manual acks and a small prefetch
//!   ([`RabbitConfig::prefetch`], default 8). A delivery is acked only through
//!   [`Delivery::ack`](nebula_core::bus::Delivery::ack), which the worker calls after the
//!   reconcile the message triggered; anything unacked when the subscription or connection
//!   ends goes back to the queue and comes again (workers ignore versions they hold).
//! - **The message is the whole change.** The body is a versioned JSON envelope
//!   `{"v":1,"kind":"app_changed","app":{...}}` carrying the full app document (see [`wire`]),
//!   so no worker reads the store or the API to learn what changed. A body that does not
//!   decode (or has another `v`), or is about an app the subscription did not select, is acked,
//!   logged (never its content: app env may hold secrets) and skipped; it never stops the
//!   subscription.
//!
//! # Why this scales to a million hosts
//!
//! CoreOS fleet (and Nebula 1.x's RPC first sync) notified agents that *something* changed,
//! and every agent then read the desired state from the central store: N agents × every
//! change = a thundering herd on etcd at the moment it is busiest. Here a change costs the
//! store one compare-and-swap write and the broker one publish; the broker's routing turns it
//! into one copy per bound queue — one message per host per change, delivered over
//! connections that are already open. The manager's work does not grow with the fleet; the
//! broker's fan-out is a routing-table lookup plus N enqueues, which RabbitMQ spreads over
//! its cores (and, beyond one node's connection limit of some tens of thousands of hosts, over
//! a cluster, or regional brokers fed by a federated `nebula.apps`: federation forwards only
//! what the downstream bindings ask for, so each region receives each change once). The
//! store is touched by workers only on their HTTP resync: at start, after a reconnect and
//! at each check-in — spread over time, and answered from the manager's per-group cache.
//!
//! # Connections and failures
//!
//! - A [`RabbitBus`] holds one connection, opened lazily and shared by its publisher channel
//!   and its subscriptions (one channel each). After a failed attempt, calls fail at once with
//!   [`BusError::Unavailable`](nebula_core::bus::BusError::Unavailable) until a jittered
//!   backoff (250 ms doubling to 5 s) has passed; the next call after that reconnects.
//! - A publish that fails on a dead channel is retried once on a fresh channel (and
//!   connection); the duplicate this may cause is ignored by workers.
//! - A subscription does not reconnect by itself: when its connection drops (heartbeat,
//!   [`RabbitConfig::heartbeat`], default 30 s, detects a silent broker) or the broker cancels
//!   its consumer, [`Subscription::next`](nebula_core::bus::Subscription::next) returns `None`,
//!   and the worker resubscribes and resyncs over HTTP (`nebula_core::worker`). Heartbeats are
//!   sent by lapin's own I/O thread, so a long pull does not kill the connection (the
//!   original's `rabbit_heartbeat` had to exceed every command). A delivery left unacked
//!   beyond the broker's `consumer_timeout` (30 min by default) makes the broker close the
//!   channel: the subscription ends and the message comes again.
//! - Errors carry the endpoint `amqp://user@host:port/vhost` and the broker's reason, never the
//!   password; [`RabbitConfig`]'s `Debug` redacts it.

mod bus;
mod config;
mod reports;
pub mod wire;

pub use bus::RabbitBus;
pub use config::{DEFAULT_EXCHANGE, InvalidConfig, MAX_WORKER_ID_LEN, RabbitConfig};
pub use config::{DEFAULT_REPORT_EXCHANGE, DEFAULT_REPORT_QUEUE};
