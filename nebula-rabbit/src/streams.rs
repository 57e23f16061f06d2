//! Subscriptions of [`Topology::Streams`](crate::Topology::Streams): one shared RabbitMQ
//! stream per topic, read from an offset.
//!
//! Publishing does not change: a change goes once to the exchange with its keys (`BCC` for
//! the extra ones). Each topic a subscription selects has a durable stream named after its
//! binding key ([`stream_name`]), bound to the exchange with that key and declared with the
//! same arguments by every worker ([`stream_arguments`]): the broker appends a change once to
//! each stream it is for, and every worker of that topic reads it from there. No stream
//! belongs to a worker: no worker id is needed, and consumers are not exclusive.
//!
//! A subscription is one channel with `basic.qos` (stream consumers require it) and one
//! consumer per stream, with manual acks. Where a consumer starts (`x-stream-offset`):
//! `next` the first time this [`RabbitBus`] subscribes to the stream (the worker resyncs over
//! HTTP right after subscribing); after that, right after the last delivery it acknowledged
//! there (the delivery's `x-stream-offset` header, recorded once the ack is sent), so a
//! worker whose connection dropped gets everything published meanwhile (within the
//! retention) and nothing it applied again. A bus that subscribed but acknowledged nothing
//! on a stream resumes from the time of that first subscription (less [`TIMESTAMP_SLACK`]
//! for the clocks; an older change is ignored by the worker, which holds newer versions).
//!
//! Deliveries are filtered with [`BusMessage::is_for`] as with queues; skipped ones are
//! acked and count as handled. A change for two topics of one subscription (an app and a
//! group that lists it) is in both streams: the copy from the second stream is acked and
//! skipped ([`DEDUP_WINDOW`]). Within a stream, deliveries come in publish order; across the
//! streams of one subscription, in the order the broker hands them to the channel.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use nebula_core::bus::{BusError, BusMessage, Delivery, Subscription, Topic};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::bus::{RabbitBus, ack_delivery, describe, short};
use crate::config::{DEFAULT_EXCHANGE, RabbitConfig};
use crate::links::Offsets;
use crate::wire;

/// The start of every stream's name.
pub const STREAM_PREFIX: &str = "nebula.stream.";
/// The largest stream segment; retention drops whole segments, so they stay small next to
/// [`RabbitConfig::stream_max_bytes`] (an eighth of it at most).
const MAX_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
pub use crate::links::TIMESTAMP_SLACK;
/// How many recent changes a subscription of several streams remembers to skip the copy of
/// a change that reached it through another of its streams.
pub const DEDUP_WINDOW: usize = 4096;
/// The delivery header that carries a message's offset in its stream.
const OFFSET_HEADER: &str = "x-stream-offset";

/// The stream of `topic`: `nebula.stream.<binding key>`, with `all-apps` for every app
/// (`nebula.stream.app.web`, `nebula.stream.dg.edge`, `nebula.stream.all-apps`), and the
/// exchange's name after the prefix unless it is [`DEFAULT_EXCHANGE`]
/// (`nebula.stream.<exchange>.app.web`). A name beyond 255 bytes (a long exchange name) keeps
/// its first part and ends with a digest of the whole.
#[must_use]
pub fn stream_name(config: &RabbitConfig, topic: &Topic) -> String {
    let key = match topic {
        Topic::AllApps => "all-apps".to_owned(),
        other => wire::binding_key(other),
    };
    let name = if config.exchange == DEFAULT_EXCHANGE {
        format!("{STREAM_PREFIX}{key}")
    } else {
        format!("{STREAM_PREFIX}{}.{key}", config.exchange)
    };
    if name.len() <= 255 {
        return name;
    }
    let digest = Sha256::digest(name.as_bytes());
    let tail: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    // The name is ASCII (exchange names and topic keys are), so any cut is a char boundary.
    format!("{}.{tail}", &name[..255 - 1 - tail.len()])
}

/// The arguments every worker declares its streams with: `x-queue-type: stream`, `x-max-age`
/// = [`RabbitConfig::queue_expiry`] in seconds (`"600s"`), `x-max-length-bytes` =
/// [`RabbitConfig::stream_max_bytes`] and `x-stream-max-segment-size-bytes` an eighth of it,
/// at most 8 MiB (retention drops whole segments).
#[must_use]
pub fn stream_arguments(config: &RabbitConfig) -> FieldTable {
    let max_bytes = config.stream_max_bytes;
    let segment = (max_bytes / 8).min(MAX_SEGMENT_BYTES);
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("stream")),
    );
    args.insert(
        ShortString::from("x-max-age"),
        AMQPValue::LongString(LongString::from(format!(
            "{}s",
            config.queue_expiry.as_secs().max(1)
        ))),
    );
    args.insert(
        ShortString::from("x-max-length-bytes"),
        AMQPValue::LongLongInt(i64::try_from(max_bytes).unwrap_or(i64::MAX)),
    );
    args.insert(
        ShortString::from("x-stream-max-segment-size-bytes"),
        AMQPValue::LongLongInt(i64::try_from(segment).unwrap_or(i64::MAX)),
    );
    args
}

/// One stream of one subscription: the deliveries handed on and not yet acknowledged, and
/// the highest offset handled, so the recorded position never passes a delivery the worker
/// still holds (a skipped delivery after it must not).
struct Track {
    stream: String,
    offsets: Arc<Offsets>,
    state: Mutex<TrackState>,
}

#[derive(Default)]
struct TrackState {
    outstanding: BTreeSet<u64>,
    handled: Option<u64>,
}

impl Track {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrackState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handed_on(&self, offset: u64) {
        self.lock().outstanding.insert(offset);
    }

    /// `offset` is handled (acknowledged, or skipped and acked); records how far the stream
    /// is handled without a gap.
    fn done(&self, offset: u64) {
        let upto = {
            let mut state = self.lock();
            state.outstanding.remove(&offset);
            state.handled = Some(state.handled.map_or(offset, |h| h.max(offset)));
            match state.outstanding.first() {
                None => state.handled,
                // Every offset below the oldest outstanding one is handled (or came before
                // this consumer started).
                Some(&oldest) => oldest.checked_sub(1),
            }
        };
        if let Some(upto) = upto {
            self.offsets.handled(&self.stream, upto);
        }
    }
}

/// The changes handed on lately by a subscription of several streams, with the stream each
/// came from.
#[derive(Default)]
struct Recent {
    seen: HashMap<String, usize>,
    order: VecDeque<String>,
}

impl Recent {
    /// Whether `id` was handed on from a stream other than `stream` (a copy); remembers it.
    fn copy_of_other(&mut self, id: String, stream: usize) -> bool {
        if let Some(&from) = self.seen.get(&id) {
            return from != stream;
        }
        if self.order.len() == DEDUP_WINDOW
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(id.clone(), stream);
        self.order.push_back(id);
        false
    }
}

/// One consumer of a subscription, for the consume loop.
struct Reader {
    track: Arc<Track>,
    first: u64,
}

/// Subscribes to `topics` through their streams (see the module documentation).
pub(crate) async fn subscribe(bus: &RabbitBus, topics: &[Topic]) -> Result<Subscription, BusError> {
    let config = bus.config();
    let conn = bus.connection().await?;
    let mut streams: Vec<(String, String)> = topics
        .iter()
        .map(|t| (stream_name(config, t), wire::binding_key(t)))
        .collect();
    streams.sort();
    streams.dedup();
    let setup = open(bus, &conn, &streams);
    let (channel, consumers) = match tokio::time::timeout(config.publish_timeout, setup).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => {
            return Err(bus.unavailable(format_args!("subscribing to streams: {}", describe(&e))));
        }
        Err(_) => {
            return Err(bus.unavailable(format_args!(
                "no answer while setting up the stream subscription within {:?}",
                config.publish_timeout
            )));
        }
    };
    tracing::debug!(streams = streams.len(), "subscribed to streams");
    let (tx, rx) = mpsc::channel(usize::from(config.prefetch));
    tokio::spawn(consume(conn, channel, consumers, tx, topics.to_vec()));
    Ok(Subscription::new(rx))
}

/// Declares the exchange and each stream with its binding, and starts one consumer per
/// stream on one channel.
async fn open(
    bus: &RabbitBus,
    conn: &Connection,
    streams: &[(String, String)],
) -> lapin::Result<(Channel, Vec<(Reader, lapin::Consumer)>)> {
    let config = bus.config();
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    channel
        .exchange_declare(
            short(&config.exchange)?,
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut consumers = Vec::with_capacity(streams.len());
    for (stream, key) in streams {
        channel
            .queue_declare(
                short(stream)?,
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                stream_arguments(config),
            )
            .await?;
        channel
            .queue_bind(
                short(stream)?,
                short(&config.exchange)?,
                short(key)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let start = bus.streams.start(stream);
        let mut args = FieldTable::default();
        args.insert(ShortString::from(OFFSET_HEADER), start.argument());
        let consumer = channel
            .basic_consume(
                short(stream)?,
                ShortString::from(""),
                BasicConsumeOptions::default(),
                args,
            )
            .await?;
        tracing::debug!(%stream, ?start, "consuming a stream");
        let track = Arc::new(Track {
            stream: stream.clone(),
            offsets: Arc::clone(&bus.streams),
            state: Mutex::default(),
        });
        consumers.push((
            Reader {
                track,
                first: start.first(),
            },
            consumer,
        ));
    }
    Ok((channel, consumers))
}

/// A consumer's deliveries, then `None` once it ended.
type Tagged = BoxStream<'static, (usize, Option<lapin::Result<lapin::message::Delivery>>)>;

/// Feeds one subscription until one of its consumers ends (connection or channel lost,
/// consumer cancelled: the subscription ends, the worker resubscribes) or its receiver is
/// dropped; then closes the channel.
async fn consume(
    conn: Arc<Connection>,
    channel: Channel,
    consumers: Vec<(Reader, lapin::Consumer)>,
    tx: mpsc::Sender<Delivery>,
    topics: Vec<Topic>,
) {
    let several = consumers.len() > 1;
    let mut readers = Vec::with_capacity(consumers.len());
    let mut tagged: Vec<Tagged> = Vec::with_capacity(consumers.len());
    for (i, (reader, consumer)) in consumers.into_iter().enumerate() {
        readers.push(reader);
        tagged.push(
            consumer
                .map(move |d| (i, Some(d)))
                .chain(futures::stream::once(async move { (i, None) }))
                .boxed(),
        );
    }
    let mut merged = futures::stream::select_all(tagged);
    let mut recent = Recent::default();
    loop {
        let next = tokio::select! {
            () = tx.closed() => break,
            next = merged.next() => next,
        };
        let Some((i, item)) = next else { break };
        let reader = &readers[i];
        let stream = reader.track.stream.as_str();
        let delivery = match item {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => {
                tracing::warn!(%stream, error = %describe(&e), "bus subscription lost");
                break;
            }
            None => {
                tracing::warn!(%stream, "bus subscription cancelled by the broker");
                break;
            }
        };
        let Some(offset) = stream_offset(&delivery) else {
            tracing::warn!(%stream, "a stream delivery without its offset; skipped");
            ack(&delivery.acker, stream).await;
            continue;
        };
        if offset < reader.first {
            // Before the resume point: the broker starts at the beginning of a chunk.
            ack(&delivery.acker, stream).await;
            continue;
        }
        let routing_key = delivery.routing_key.as_str().to_owned();
        // The body may hold secrets (app env): never log it, only its size.
        match wire::decode(&delivery.data) {
            Ok(message)
                if message.is_for(&topics)
                    && !(several && recent.copy_of_other(wire::message_id(&message), i)) =>
            {
                reader.track.handed_on(offset);
                let acker = Box::new(StreamAcker {
                    acker: delivery.acker,
                    track: Arc::clone(&reader.track),
                    offset,
                });
                if tx.send(Delivery::new(message, Some(acker))).await.is_err() {
                    break;
                }
            }
            Ok(message) if message.is_for(&topics) => {
                tracing::debug!(%stream, offset, "skipping a change already handed on from another stream");
                skip(&delivery.acker, &reader.track, offset).await;
            }
            Ok(message) => {
                let about = skipped_about(&message);
                tracing::warn!(%stream, %routing_key, %about, "skipping a message this subscription did not select");
                skip(&delivery.acker, &reader.track, offset).await;
            }
            Err(e) => {
                tracing::warn!(%stream, %routing_key, bytes = delivery.data.len(), error = %e, "skipping an undecodable message");
                skip(&delivery.acker, &reader.track, offset).await;
            }
        }
    }
    drop(merged);
    if channel.status().connected()
        && let Err(e) = channel
            .close(200, ShortString::from("subscription ended"))
            .await
    {
        tracing::debug!(error = %e, "closing the stream subscription channel");
    }
    drop(conn);
}

fn skipped_about(message: &BusMessage) -> Topic {
    message.topics().swap_remove(0)
}

/// The offset of a stream delivery (its `x-stream-offset` header).
fn stream_offset(delivery: &lapin::message::Delivery) -> Option<u64> {
    let headers = delivery.properties.headers().as_ref()?;
    let value = headers
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == OFFSET_HEADER)
        .map(|(_, v)| v)?;
    match value {
        AMQPValue::LongLongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongInt(v) => u64::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(u64::from(*v)),
        AMQPValue::ShortInt(v) => u64::try_from(*v).ok(),
        AMQPValue::ShortUInt(v) => Some(u64::from(*v)),
        AMQPValue::Timestamp(v) => Some(*v),
        _ => None,
    }
}

async fn ack(acker: &lapin::Acker, stream: &str) -> bool {
    match acker.ack(BasicAckOptions::default()).await {
        Ok(sent) => sent,
        Err(e) => {
            tracing::warn!(%stream, error = %describe(&e), "ack of a skipped message failed");
            false
        }
    }
}

/// Acks a delivery the subscriber does not see, and counts it handled.
async fn skip(acker: &lapin::Acker, track: &Track, offset: u64) {
    if ack(acker, &track.stream).await {
        track.done(offset);
    }
}

/// Acknowledges one stream delivery, then records its offset as handled.
struct StreamAcker {
    acker: lapin::Acker,
    track: Arc<Track>,
    offset: u64,
}

#[async_trait]
impl nebula_core::bus::Acker for StreamAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        ack_delivery(&self.acker, "message").await?;
        self.track.done(self.offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::Start;
    use nebula_core::device_group::DeviceGroupName;
    use nebula_core::model::AppName;
    use std::time::Duration;

    #[test]
    fn stream_names_follow_the_binding_keys() {
        let config = RabbitConfig::default();
        let app = Topic::App(AppName::parse("web").unwrap());
        let group = Topic::DeviceGroup(DeviceGroupName::parse("edge").unwrap());
        assert_eq!(stream_name(&config, &app), "nebula.stream.app.web");
        assert_eq!(stream_name(&config, &group), "nebula.stream.dg.edge");
        assert_eq!(
            stream_name(&config, &Topic::AllApps),
            "nebula.stream.all-apps"
        );
        let other = RabbitConfig {
            exchange: "prod.apps".to_owned(),
            ..RabbitConfig::default()
        };
        assert_eq!(stream_name(&other, &app), "nebula.stream.prod.apps.app.web");
        let long = RabbitConfig {
            exchange: "x".repeat(200),
            ..RabbitConfig::default()
        };
        let a = stream_name(&long, &Topic::App(AppName::parse(&"a".repeat(60)).unwrap()));
        let b = stream_name(&long, &Topic::App(AppName::parse(&"a".repeat(61)).unwrap()));
        assert_eq!(a.len(), 255);
        assert_ne!(a, b, "long names stay distinct");
    }

    #[test]
    fn arguments_follow_the_config() {
        let config = RabbitConfig {
            queue_expiry: Duration::from_secs(90),
            stream_max_bytes: 64 * 1024 * 1024,
            ..RabbitConfig::default()
        };
        let args = stream_arguments(&config);
        let get = |k: &str| {
            args.inner()
                .iter()
                .find(|(key, _)| key.as_str() == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(
            get("x-max-age"),
            AMQPValue::LongString(LongString::from("90s"))
        );
        assert_eq!(
            get("x-max-length-bytes"),
            AMQPValue::LongLongInt(64 * 1024 * 1024)
        );
        assert_eq!(
            get("x-stream-max-segment-size-bytes"),
            AMQPValue::LongLongInt(8 * 1024 * 1024)
        );
    }

    #[test]
    fn the_recorded_offset_never_passes_a_delivery_still_held() {
        let offsets = Arc::new(Offsets::default());
        assert!(matches!(offsets.start("s"), Start::Next));
        assert!(matches!(offsets.start("s"), Start::Since(_)));
        let track = Track {
            stream: "s".to_owned(),
            offsets: Arc::clone(&offsets),
            state: Mutex::default(),
        };
        track.handed_on(5);
        track.done(6); // skipped while 5 is held
        assert!(matches!(offsets.start("s"), Start::After(4)));
        track.done(5);
        assert!(matches!(offsets.start("s"), Start::After(6)));
        offsets.handled("s", 3);
        assert!(matches!(offsets.start("s"), Start::After(6)), "never back");
    }

    #[test]
    fn copies_from_another_stream_are_recognised() {
        let mut recent = Recent::default();
        assert!(!recent.copy_of_other("a".to_owned(), 0));
        assert!(recent.copy_of_other("a".to_owned(), 1));
        assert!(
            !recent.copy_of_other("a".to_owned(), 0),
            "same stream: a repeat"
        );
        for i in 0..DEDUP_WINDOW {
            recent.copy_of_other(i.to_string(), 0);
        }
        assert!(!recent.copy_of_other("a".to_owned(), 1), "forgotten");
    }
}
