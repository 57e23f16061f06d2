//! [`RabbitBus`]: the connection, the publisher and the subscriptions.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ErrorKind, ExchangeKind};
use nebula_core::backoff::Backoff;
use nebula_core::bus::{BusError, BusMessage, Delivery, Subscription, Topic};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::config::{InvalidConfig, RabbitConfig};
use crate::wire;

/// The first wait after a failed connection attempt; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long `subscribe` waits for the previous consumer of the same worker queue to go away
/// (a subscription dropped a moment ago is cancelled asynchronously).
const EXCLUSIVE_WAIT: Duration = Duration::from_secs(3);
/// AMQP `delivery_mode` of a persistent message.
const PERSISTENT: u8 = 2;
/// What a message's content header may take besides its `BCC` keys (the other properties and
/// the frame's own bytes are far less); the rest of a frame holds `BCC` keys.
const HEADER_RESERVE: usize = 1024;

/// A [`Bus`] on RabbitMQ. Cheap to clone: clones share one connection.
///
/// Connects lazily: the first `publish`, `subscribe` or [`connect`](Self::connect) opens the
/// connection, and a call after it was lost opens a new one. After a failed attempt, calls
/// fail at once with [`BusError::Unavailable`] until a backoff (250 ms doubling to 5 s, with
/// jitter) has passed, so a down broker costs callers nothing.
#[derive(Clone)]
pub struct RabbitBus {
    inner: Arc<Inner>,
    /// The side of worker reports (`crate::reports`).
    pub(crate) reports: Arc<crate::links::ReportLink>,
    /// Where this bus stands on each stream ([`crate::Topology::Streams`]).
    pub(crate) streams: Arc<crate::links::Offsets>,
}

struct Inner {
    config: RabbitConfig,
    /// `amqp://user@host:port/vhost`, for messages (no password).
    endpoint: String,
    state: Mutex<State>,
}

struct State {
    link: Option<Link>,
    /// No connection attempt before this instant.
    retry_at: Option<Instant>,
    backoff: Backoff,
    last_error: String,
    generation: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            link: None,
            retry_at: None,
            // Jitter spreads a fleet's reconnects after a broker restart.
            backoff: Backoff::new(FIRST_BACKOFF, MAX_BACKOFF).jitter(0.5..=1.0),
            last_error: String::new(),
            generation: 0,
        }
    }
}

/// One open connection and the publisher channel on it (opened at the first publish).
struct Link {
    conn: Arc<Connection>,
    generation: u64,
    publisher: Option<Channel>,
}

impl std::fmt::Debug for RabbitBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBus")
            .field("endpoint", &self.inner.endpoint)
            .field("exchange", &self.inner.config.exchange)
            .field("worker_id", &self.inner.config.worker_id)
            .finish_non_exhaustive()
    }
}

impl RabbitBus {
    /// A bus for `config`; nothing is connected yet.
    ///
    /// # Errors
    /// [`InvalidConfig`] listing every problem of `config`.
    pub fn new(config: RabbitConfig) -> Result<Self, InvalidConfig> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(InvalidConfig { problems });
        }
        let vhost = if config.vhost == "/" {
            String::new()
        } else {
            config.vhost.clone()
        };
        let endpoint = format!(
            "amqp://{}@{}:{}/{vhost}",
            config.user, config.host, config.port
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                endpoint,
                state: Mutex::new(State::default()),
            }),
            reports: Arc::default(),
            streams: Arc::default(),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &RabbitConfig {
        &self.inner.config
    }

    /// The live connection, opened if there is none (subject to the backoff), for the parts
    /// of this crate that open channels of their own on it.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>, BusError> {
        let mut state = self.inner.state.lock().await;
        self.ensure_link(&mut state).await.map(|(conn, _)| conn)
    }

    /// Connects now (if not connected) and declares the exchange, so a binary can report an
    /// unreachable broker at start. Publishing and subscribing connect by themselves.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the broker cannot be reached or refuses us.
    pub async fn connect(&self) -> Result<(), BusError> {
        self.publisher().await.map(drop)
    }

    /// Closes the connection: open subscriptions end (their `next` returns `None`). The next
    /// call connects again.
    pub async fn close(&self) {
        let link = self.inner.state.lock().await.link.take();
        if let Some(link) = link {
            drop(link.publisher);
            if let Err(e) = link.conn.close(200, ShortString::from("closing")).await {
                tracing::debug!(error = %e, "closing the RabbitMQ connection");
            }
        }
    }

    pub(crate) fn unavailable(&self, what: impl std::fmt::Display) -> BusError {
        BusError::Unavailable(format!("RabbitMQ at {}: {what}", self.inner.endpoint))
    }

    /// The live connection, opening one when there is none (subject to the backoff).
    async fn ensure_link(&self, state: &mut State) -> Result<(Arc<Connection>, u64), BusError> {
        if let Some(link) = &state.link {
            if link.conn.status().connected() {
                return Ok((link.conn.clone(), link.generation));
            }
            tracing::info!(broker = %self.inner.endpoint, "RabbitMQ connection lost; reconnecting");
            state.link = None;
        }
        let now = Instant::now();
        if let Some(at) = state.retry_at
            && now < at
        {
            return Err(self.unavailable(format_args!(
                "{}; next connection attempt in {} ms",
                state.last_error,
                (at - now).as_millis()
            )));
        }
        match self.open().await {
            Ok(conn) => {
                state.generation += 1;
                state.retry_at = None;
                state.backoff.reset();
                let conn = Arc::new(conn);
                state.link = Some(Link {
                    conn: conn.clone(),
                    generation: state.generation,
                    publisher: None,
                });
                tracing::info!(broker = %self.inner.endpoint, "connected to RabbitMQ");
                Ok((conn, state.generation))
            }
            Err(e) => {
                let wait = state.backoff.next();
                state.retry_at = Some(now + wait);
                state.last_error.clone_from(&e);
                tracing::warn!(broker = %self.inner.endpoint, error = %e, retry_in_ms = wait.as_millis(), "cannot connect to RabbitMQ");
                Err(self.unavailable(e))
            }
        }
    }

    /// Opens a connection (TCP + AMQP handshake) within the connect timeout.
    async fn open(&self) -> Result<Connection, String> {
        let c = &self.inner.config;
        let uri = AMQPUri {
            scheme: AMQPScheme::AMQP,
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo {
                    username: c.user.clone(),
                    password: c.password.clone(),
                },
                host: c.host.clone(),
                port: c.port,
            },
            vhost: c.vhost.clone(),
            query: AMQPQueryString {
                heartbeat: Some(u16::try_from(c.heartbeat.as_secs()).unwrap_or(u16::MAX)),
                connection_timeout: Some(
                    u64::try_from(c.connect_timeout.as_millis()).unwrap_or(u64::MAX),
                ),
                frame_max: Some(c.frame_max),
                ..AMQPQueryString::default()
            },
        };
        let name = format!("nebula/{}", c.worker_id.as_deref().unwrap_or("-"));
        let props = ConnectionProperties::default().with_connection_name(LongString::from(name));
        match tokio::time::timeout(c.connect_timeout, Connection::connect_uri(uri, props)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no answer within {:?}", c.connect_timeout)),
        }
    }

    /// The publisher channel (confirm mode, exchange declared), opening what is missing,
    /// with its connection's generation and negotiated `frame_max`.
    async fn publisher(&self) -> Result<(Channel, u64, u32), BusError> {
        let mut state = self.inner.state.lock().await;
        let (conn, generation) = self.ensure_link(&mut state).await?;
        let frame_max = match conn.configuration().frame_max() {
            0 => self.inner.config.frame_max,
            negotiated => negotiated.min(self.inner.config.frame_max),
        };
        if let Some(link) = &state.link
            && let Some(channel) = &link.publisher
            && channel.status().connected()
        {
            return Ok((channel.clone(), generation, frame_max));
        }
        let channel = async {
            let channel = conn.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            self.declare_exchange(&channel).await?;
            Ok::<_, lapin::Error>(channel)
        }
        .await
        .map_err(|e| {
            self.unavailable(format_args!(
                "opening the publisher channel: {}",
                describe(&e)
            ))
        })?;
        if let Some(link) = state.link.as_mut() {
            link.publisher = Some(channel.clone());
        }
        Ok((channel, generation, frame_max))
    }

    /// Drops the publisher channel of connection `generation` after it failed (and the
    /// connection too when it is gone), so the next publish opens fresh ones.
    async fn forget_publisher(&self, generation: u64) {
        let mut state = self.inner.state.lock().await;
        if let Some(link) = state.link.as_mut()
            && link.generation == generation
        {
            link.publisher = None;
            if !link.conn.status().connected() {
                state.link = None;
            }
        }
    }

    async fn declare_exchange(&self, channel: &Channel) -> lapin::Result<()> {
        channel
            .exchange_declare(
                short(&self.inner.config.exchange)?,
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
    }

    /// One publish on `channel` with `routing_key` and the `bcc` keys, waiting for the
    /// broker's confirm.
    async fn publish_on(
        &self,
        channel: &Channel,
        message: &BusMessage,
        body: &[u8],
        (routing_key, bcc): (&str, &[String]),
    ) -> Result<(), PublishError> {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(ShortString::from("application/json"))
            .with_type(ShortString::from(wire::kind(message)))
            .with_message_id(short(&wire::message_id(message)).map_err(PublishError::Transport)?)
            .with_app_id(ShortString::from("nebula"))
            .with_timestamp(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );
        if !bcc.is_empty() {
            // Sender-selected distribution: the broker routes the message as if it were
            // published with each key too (one copy per queue), and removes the header
            // before delivery.
            let keys: Vec<AMQPValue> = bcc
                .iter()
                .map(|k| AMQPValue::LongString(LongString::from(k.as_str())))
                .collect();
            let mut headers = FieldTable::default();
            headers.insert(
                ShortString::from("BCC"),
                AMQPValue::FieldArray(FieldArray::from(keys)),
            );
            properties = properties.with_headers(headers);
        }
        let confirm = channel
            .basic_publish(
                short(&self.inner.config.exchange).map_err(PublishError::Transport)?,
                short(routing_key).map_err(PublishError::Transport)?,
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .map_err(PublishError::Transport)?;
        let confirmation = confirm.await.map_err(PublishError::Transport)?;
        if confirmation.is_ack() {
            Ok(())
        } else if confirmation.is_nack() {
            Err(PublishError::Nack)
        } else {
            Err(PublishError::NotConfirmed)
        }
    }

    /// Declares the subscription's queue and bindings and starts consuming.
    async fn open_consumer(
        &self,
        conn: &Connection,
        queue: Option<&str>,
        topics: &[Topic],
    ) -> lapin::Result<(Channel, lapin::Consumer, String)> {
        let c = &self.inner.config;
        let channel = conn.create_channel().await?;
        channel
            .basic_qos(c.prefetch, BasicQosOptions::default())
            .await?;
        self.declare_exchange(&channel).await?;
        let mut args = queue_args("classic", c.max_queue_length);
        let name = match queue {
            Some(name) => {
                args.insert(
                    ShortString::from("x-expires"),
                    AMQPValue::LongLongInt(
                        i64::try_from(c.queue_expiry.as_millis()).unwrap_or(i64::MAX),
                    ),
                );
                let options = QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                };
                channel.queue_declare(short(name)?, options, args).await?;
                name.to_owned()
            }
            None => {
                let options = QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                };
                let declared = channel
                    .queue_declare(ShortString::from(""), options, args)
                    .await?;
                declared.name().as_str().to_owned()
            }
        };
        let mut keys: Vec<String> = topics.iter().map(wire::binding_key).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            channel
                .queue_bind(
                    short(&name)?,
                    short(&c.exchange)?,
                    short(&key)?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let consumer = channel
            .basic_consume(
                short(&name)?,
                ShortString::from(""),
                BasicConsumeOptions {
                    // One consumer per worker queue: a second worker with the same id is
                    // refused instead of silently taking half of the messages.
                    exclusive: queue.is_some(),
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok((channel, consumer, name))
    }
}

enum PublishError {
    Transport(lapin::Error),
    Nack,
    NotConfirmed,
}

impl RabbitBus {
    /// Publishes `message` with the routing key and `BCC` keys of one of its routes,
    /// confirmed.
    async fn publish_route(
        &self,
        message: &BusMessage,
        body: &[u8],
        route: (&str, &[String]),
    ) -> Result<(), BusError> {
        let timeout = self.inner.config.publish_timeout;
        // One retry on a fresh channel (and connection, if it is gone): the first failure is
        // often a connection that died since the last publish. A duplicate is harmless:
        // workers ignore a version they already hold.
        let mut failure = String::new();
        for _ in 0..2 {
            let (channel, generation, _) = self.publisher().await?;
            match tokio::time::timeout(timeout, self.publish_on(&channel, message, body, route))
                .await
            {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(PublishError::Nack)) => {
                    return Err(self.unavailable("the broker refused the message (nack)"));
                }
                Ok(Err(PublishError::NotConfirmed)) => {
                    self.forget_publisher(generation).await;
                    return Err(self.unavailable("the publisher channel is not in confirm mode"));
                }
                Ok(Err(PublishError::Transport(e))) => {
                    failure = describe(&e);
                    tracing::debug!(error = %failure, "publish failed; retrying on a fresh channel");
                    self.forget_publisher(generation).await;
                }
                Err(_) => {
                    let blocked = {
                        let state = self.inner.state.lock().await;
                        state
                            .link
                            .as_ref()
                            .is_some_and(|l| l.conn.status().blocked())
                    };
                    self.forget_publisher(generation).await;
                    return Err(self.unavailable(format_args!(
                        "no confirm within {timeout:?}{}",
                        if blocked {
                            " (the broker blocks publishers: memory or disk alarm)"
                        } else {
                            ""
                        }
                    )));
                }
            }
        }
        Err(self.unavailable(format_args!("publish failed: {failure}")))
    }
}

impl RabbitBus {
    /// One publish for every topic of the message (see [`wire::routes`]), confirmed.
    pub(crate) async fn publish_change(&self, message: &BusMessage) -> Result<(), BusError> {
        let body = wire::encode(message)
            .map_err(|e| self.unavailable(format_args!("cannot encode the message: {e}")))?;
        let (_, _, frame_max) = self.publisher().await?;
        let budget = usize::try_from(frame_max)
            .unwrap_or(usize::MAX)
            .saturating_sub(HEADER_RESERVE);
        for (routing_key, bcc) in wire::routes(&wire::routing_keys(message), budget) {
            self.publish_route(message, &body, (&routing_key, &bcc))
                .await?;
        }
        Ok(())
    }

    /// A subscription on this worker's own durable queue, bound to `topics`
    /// ([`crate::Topology::Queues`]).
    pub(crate) async fn subscribe_queue(&self, topics: &[Topic]) -> Result<Subscription, BusError> {
        let conn = {
            let mut state = self.inner.state.lock().await;
            self.ensure_link(&mut state).await?.0
        };
        let queue = self.inner.config.queue_name(topics);
        let deadline = Instant::now() + EXCLUSIVE_WAIT;
        let (channel, consumer, name) = loop {
            let setup = self.open_consumer(&conn, queue.as_deref(), topics);
            let Ok(opened) = tokio::time::timeout(self.inner.config.publish_timeout, setup).await
            else {
                return Err(self.unavailable(format_args!(
                    "no answer while setting up the subscription within {:?}",
                    self.inner.config.publish_timeout
                )));
            };
            match opened {
                Ok(opened) => break opened,
                Err(e) if in_exclusive_use(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) if in_exclusive_use(&e) => {
                    return Err(self.unavailable(format_args!(
                        "queue {} has another consumer: is worker id {:?} used by two workers? ({})",
                        queue.as_deref().unwrap_or("-"),
                        self.inner.config.worker_id.as_deref().unwrap_or("-"),
                        describe(&e)
                    )));
                }
                Err(e) => {
                    return Err(self.unavailable(format_args!("subscribing: {}", describe(&e))));
                }
            }
        };
        tracing::debug!(queue = %name, topics = topics.len(), "subscribed");
        let (tx, rx) = mpsc::channel(usize::from(self.inner.config.prefetch));
        let topics = topics.to_vec();
        let queue = name.clone();
        tokio::spawn(pump(
            conn,
            channel,
            consumer,
            tx,
            name,
            "message",
            move |d| decode_for(d, &topics, &queue),
        ));
        Ok(Subscription::new(rx))
    }
}

/// The arguments of a queue of `kind` ("classic", "quorum") holding at most `max_length`
/// messages, the oldest dropped beyond it.
pub(crate) fn queue_args(kind: &str, max_length: Option<u32>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from(kind)),
    );
    if let Some(max) = max_length {
        args.insert(
            ShortString::from("x-max-length"),
            AMQPValue::LongLongInt(i64::from(max)),
        );
        args.insert(
            ShortString::from("x-overflow"),
            AMQPValue::LongString(LongString::from("drop-head")),
        );
    }
    args
}

/// Feeds one queue subscription until its consumer ends (connection or channel lost, consumer
/// cancelled by the broker) or its receiver is dropped; then closes the channel, which
/// returns every unacknowledged delivery to the queue. `decode` turns a delivery into what
/// the subscriber gets, or says (in the log: never the body, which may hold secrets) why it
/// is skipped; a skipped delivery is acked. `what` names the deliveries in logs and errors.
pub(crate) async fn pump<M: Send + 'static>(
    conn: Arc<Connection>,
    channel: Channel,
    mut consumer: lapin::Consumer,
    tx: mpsc::Sender<Delivery<M>>,
    queue: String,
    what: &'static str,
    decode: impl Fn(&lapin::message::Delivery) -> Option<M> + Send,
) {
    loop {
        let next = tokio::select! {
            () = tx.closed() => break,
            next = consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => {
                tracing::warn!(%queue, error = %describe(&e), "{what} subscription lost");
                break;
            }
            None => {
                tracing::warn!(%queue, "{what} subscription cancelled by the broker");
                break;
            }
        };
        match decode(&delivery) {
            Some(message) => {
                let acker = Box::new(RabbitAcker {
                    acker: delivery.acker,
                    what,
                });
                if tx.send(Delivery::new(message, Some(acker))).await.is_err() {
                    break;
                }
            }
            None => {
                if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                    tracing::warn!(%queue, error = %describe(&e), "ack of a skipped {what} failed");
                }
            }
        }
    }
    drop(consumer);
    if channel.status().connected()
        && let Err(e) = channel
            .close(200, ShortString::from(format!("{what} subscription ended")))
            .await
    {
        tracing::debug!(%queue, error = %e, "closing the {what} subscription channel");
    }
    drop(conn);
}

/// A bus message for a subscription to `topics`, or `None` (logged) when it is not one.
fn decode_for(
    delivery: &lapin::message::Delivery,
    topics: &[Topic],
    queue: &str,
) -> Option<BusMessage> {
    let routing_key = delivery.routing_key.as_str();
    // The body may hold secrets (app env): never log it, only its size.
    match wire::decode(&delivery.data) {
        Ok(message) if message.is_for(topics) => Some(message),
        Ok(message) => {
            let about = message.topics().swap_remove(0);
            tracing::warn!(%queue, %routing_key, %about, "skipping a message this subscription did not select");
            None
        }
        Err(e) => {
            tracing::warn!(%queue, %routing_key, bytes = delivery.data.len(), error = %e, "skipping an undecodable message");
            None
        }
    }
}

/// Acks one delivery on its channel; `what` ("message", "report") names it in the error.
///
/// # Errors
/// [`BusError::Unavailable`] when the channel closed first or the ack could not be sent (the
/// delivery will come again).
pub(crate) async fn ack_delivery(acker: &lapin::Acker, what: &str) -> Result<(), BusError> {
    match acker.ack(BasicAckOptions::default()).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(BusError::Unavailable(format!(
            "RabbitMQ: the subscription's channel closed before the ack; the {what} will be delivered again"
        ))),
        Err(e) => Err(BusError::Unavailable(format!(
            "RabbitMQ: ack failed, the {what} will be delivered again: {}",
            describe(&e)
        ))),
    }
}

/// Acknowledges one delivery on its channel.
struct RabbitAcker {
    acker: lapin::Acker,
    what: &'static str,
}

#[async_trait]
impl nebula_core::bus::Acker for RabbitAcker {
    async fn ack(self: Box<Self>) -> Result<(), BusError> {
        ack_delivery(&self.acker, self.what).await
    }
}

/// A lapin error in words (lapin's messages never contain the credentials).
pub(crate) fn describe(e: &lapin::Error) -> String {
    match e.kind() {
        ErrorKind::ProtocolError(amqp) => {
            format!("{} {}", amqp.get_id(), amqp.get_message())
        }
        _ => e.to_string(),
    }
}

/// Whether `e` is the broker refusing an exclusive consumer on a queue that has one.
fn in_exclusive_use(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(amqp)
        if amqp.get_id() == 403 && amqp.get_message().as_str().contains("exclusive"))
}

/// `s` as an AMQP short string (at most 255 bytes).
pub(crate) fn short(s: &str) -> lapin::Result<ShortString> {
    ShortString::try_new(s).map_err(|e| {
        lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("AMQP name or key too long: {e}"),
        ))
    })
}
