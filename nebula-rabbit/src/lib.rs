//! Nebula's [`Bus`](nebula_core::bus::Bus) and [`ReportBus`](nebula_core::bus::ReportBus) on
//! RabbitMQ: [`RabbitBus`], spoken to with [lapin](https://docs.rs/lapin) (plain AMQP 0-9-1,
//! no TLS stack built in). Changes go from the managers to every worker that selects them;
//! worker reports go from the workers to one of the managers.
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
//!   key app.<name>, BCC dg.<group>...        │  one binding per selected topic
//!   or key dg.<group>                        ├── app.web  ──> queue nebula.worker.host-1.<digest> ──> worker host-1 (APP_NAME=web)
//!                                            ├── app.#    ──> queue nebula.worker.host-2.<digest> ──> worker host-2 (every app)
//!                                            ├── dg.edge  ──> queue nebula.worker.host-3.<digest> ──> worker host-3 (DEVICE_GROUP=edge)
//!                                            └── ...          (one queue per worker, not per app)
//! ```
//!
//! - **One durable topic exchange**, `nebula.apps` ([`RabbitConfig::exchange`]), declared by
//!   publishers and subscribers alike (the original lost messages to missing exchanges).
//! - **A message is published once, for every topic it is for.** Each message names its
//!   topics ([`BusMessage::topics`](nebula_core::bus::BusMessage::topics)), each with its key
//!   ([`wire::binding_key`]): `app.<name>` for an app, `dg.<group>` for a device group. A
//!   change of app `web` that groups `edge` and `core` list is published with routing key
//!   `app.web` and the header `BCC: ["dg.edge", "dg.core"]`: RabbitMQ's sender-selected
//!   distribution routes it as if it were published with each key, puts at most one copy in
//!   each queue, and removes the `BCC` header before delivery (a `CC` header would reach
//!   every host). A device group's change (its whole state) or deletion is published with
//!   `dg.<group>`. The keys travel in the content header, which must fit in one frame
//!   (`frame_max`, [`RabbitConfig::frame_max`], 8 KiB by default, or less if the broker says
//!   so): keys beyond it (an app in more than about a hundred groups of long names) go in a
//!   further publish of the same message, each key in one publish ([`wire::routes`]); a
//!   queue bound to keys of two publishes then gets two copies, which workers ignore by
//!   version.
//! - **One queue per worker**, named `nebula.worker.<worker id>.<digest>` (see
//!   [`RabbitConfig::queue_name`]), bound with one binding per topic the worker selects:
//!   `app.<name>` for each app of `APP_NAME`, `app.#` for a worker that takes every app (it
//!   hears no group message: `app.#` matches no `dg.` key), `dg.<group>` alone for a
//!   `DEVICE_GROUP` worker, which so hears its group's changes and the changes of the apps
//!   its group lists, and nothing of the rest of the fleet. The
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
//! - **Or shared streams, opt-in.** With [`Topology::Streams`] (`NEBULA_RABBIT_TOPOLOGY=streams`)
//!   publishing stays as above, but a subscription reads one durable stream per topic instead
//!   of a queue of its own: [`stream_name`] (`nebula.stream.app.web`, `nebula.stream.dg.edge`,
//!   `nebula.stream.all-apps`, the exchange's name added when it is not `nebula.apps`), bound
//!   with the topic's key and declared by every worker with the same [`stream_arguments`]
//!   (`x-max-age` = [`RabbitConfig::queue_expiry`], `x-max-length-bytes` =
//!   [`RabbitConfig::stream_max_bytes`], small segments so retention can drop old ones). The
//!   broker appends a change once per stream, not once per worker. One channel per
//!   subscription (with `basic.qos`), one non-exclusive consumer per stream with manual acks,
//!   starting at `next` the first time a [`RabbitBus`] reads the stream and, after that, right
//!   after the last delivery it acknowledged there (the `x-stream-offset` header): a worker
//!   whose connection dropped gets what was published meanwhile, within the retention, and
//!   nothing it applied again. A change in two streams of one subscription (an app and a group
//!   that lists it) is handed on once.
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
//!   `{"v":1,"kind":"app_changed","app":{...},"device_groups":[...]}` carrying the full app
//!   document, or `{"v":1,"kind":"device_group_changed","device_group":..,"info":{...}}`
//!   carrying the group's whole `/info` state (versions, prune id, app and cron job
//!   documents; see [`wire`]), so no worker reads the store or the API to learn what changed.
//!   `device_groups` is left out when empty, and an envelope without it (from an older
//!   manager) reaches the app's subscribers only. A body that does not decode (or has
//!   another `v`), or is for no topic of the subscription, is acked, logged (never its
//!   content: app env may hold secrets) and skipped; it never stops the subscription.
//!
//! # Worker reports
//!
//! ```text
//!  worker ── publish, confirm ──> exchange "nebula.reports" (direct, durable)
//!            key "report"                  │
//!                                          └──> queue "nebula.reports" (quorum, durable,
//!                                               one per fleet, x-max-length, drop-head)
//!                                                 ├──> API manager 1 ── store, then ack
//!                                                 └──> API manager 2 ── store, then ack
//! ```
//!
//! - **One queue for the fleet, shared by the API managers.** Workers publish every report
//!   to the durable direct exchange `nebula.reports` ([`RabbitConfig::report_exchange`]) with
//!   key `report`; it is bound to one durable queue, `nebula.reports`
//!   ([`RabbitConfig::report_queue`]), that every API manager consumes: competing consumers,
//!   so each report is stored by exactly one manager, and adding managers adds capacity.
//!   Workers and managers both declare the exchange, the queue and the binding, so a report
//!   published before any manager ever ran waits in the queue.
//! - **Nothing is lost while no manager runs.** The queue is a quorum queue (written to disk,
//!   replicated on a cluster: it holds reports no one stored yet; being one per fleet, its
//!   cost does not grow with the hosts). `x-max-length` ([`RabbitConfig::max_report_queue_length`],
//!   default 100,000, overflow `drop-head`) bounds what a fleet piles up meanwhile: the oldest
//!   reports go first, and each host's next report says more than its old ones.
//! - **Persistent, confirmed, routed.** A report is published persistent, `mandatory`, on a
//!   confirm-mode channel: `publish_report` returns once the broker holds it in the queue. A
//!   report the broker returns as unroutable (the queue was deleted) is published again after
//!   declaring the queue anew.
//! - **Ack after the store.** Managers consume with manual acks and the same prefetch as
//!   workers; `nebula_core`'s `Manager::consume_reports` acks a report once stored. A store
//!   failure leaves it unacked and ends the subscription, so it comes again (to another
//!   manager at once, or to this one after a backoff).
//! - **HTTP when the broker does not take a report.** The worker manager publishes through
//!   `nebula_core::worker::report::BusReportSink`, which sends any report that fails or is not
//!   confirmed in time over `POST /api/v2/reports` instead: a broker outage loses no report.
//! - **The body** is `{"v":1,"kind":"report","report":{...}}` (see [`wire`]); it lists the
//!   host's containers and images, so it is never logged. A body that does not decode is
//!   acked, logged by its size and skipped.
//! - **Throughput.** One queue has one leader, so the reports one broker takes a second are
//!   bounded by one node's disk and cores (not measured here). A million hosts reporting every
//!   30 s make about 33,000 reports a second, more than one queue is meant to carry; such a
//!   fleet lengthens the check-in or sends only changes (`NEBULA_REPORT_ON_UPDATE_ONLY`).
//!
//! # Why this scales to a million hosts
//!
//! CoreOS fleet (and Nebula 1.x's RPC first sync) notified agents that *something* changed,
//! and every agent then read the desired state from the central store: N agents × every
//! change = a thundering herd on etcd at the moment it is busiest. Here a change costs the
//! store one compare-and-swap write and the broker one publish; the broker's routing turns it
//! into one copy per bound queue — one message per host per change, delivered over
//! connections that are already open, and only to the hosts the change concerns: a
//! `DEVICE_GROUP` host is bound to its group's key alone, so the changes of other groups and
//! of apps outside its group never reach it (nor cost it a decode). The manager's work does not grow with the fleet; the
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
mod links;
mod reports;
mod streams;
pub mod wire;

pub use bus::RabbitBus;
pub use config::{
    DEFAULT_EXCHANGE, DEFAULT_FRAME_MAX, DEFAULT_REPORT_EXCHANGE, DEFAULT_REPORT_QUEUE,
    InvalidConfig, MAX_WORKER_ID_LEN, RabbitConfig, Topology,
};
pub use streams::{DEDUP_WINDOW, STREAM_PREFIX, TIMESTAMP_SLACK, stream_arguments, stream_name};

/// The bus of changes: publishing is the same in both topologies; a subscription reads this
/// worker's queue ([`Topology::Queues`]) or the topics' streams ([`Topology::Streams`]). Here,
/// at the root, so that neither `bus` nor `streams` imports the other back.
#[async_trait::async_trait]
impl nebula_core::bus::Bus for RabbitBus {
    async fn publish(
        &self,
        message: &nebula_core::bus::BusMessage,
    ) -> Result<(), nebula_core::bus::BusError> {
        self.publish_change(message).await
    }

    async fn subscribe(
        &self,
        topics: &[nebula_core::bus::Topic],
    ) -> Result<nebula_core::bus::Subscription, nebula_core::bus::BusError> {
        if self.config().topology == Topology::Streams {
            return streams::subscribe(self, topics).await;
        }
        self.subscribe_queue(topics).await
    }
}
