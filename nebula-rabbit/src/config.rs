//! How to reach the broker and how to shape a worker's queue. The library never reads the
//! environment: the binaries map `RABBIT_HOST`, `RABBIT_PORT`, `RABBIT_USER`,
//! `RABBIT_PASSWORD`, `RABBIT_VHOST` (or `RABBIT_URL`) onto [`RabbitConfig`].

use std::fmt;
use std::time::Duration;

use nebula_core::bus::Topic;
use sha2::{Digest, Sha256};

use crate::wire;

/// The exchange every change is published to, unless configured otherwise.
pub const DEFAULT_EXCHANGE: &str = "nebula.apps";

/// The exchange workers publish their reports to, unless configured otherwise.
pub const DEFAULT_REPORT_EXCHANGE: &str = "nebula.reports";

/// The queue of reports the API managers share, unless configured otherwise.
pub const DEFAULT_REPORT_QUEUE: &str = "nebula.reports";

/// The default [`RabbitConfig::frame_max`]: 8 KiB.
pub const DEFAULT_FRAME_MAX: u32 = 8192;

/// Longest accepted worker id (a queue name holds at most 255 bytes).
pub const MAX_WORKER_ID_LEN: usize = 200;

/// Everything [`crate::RabbitBus`] needs. Build it with [`RabbitConfig::default`] (guest/guest
/// on 127.0.0.1:5672, vhost `/`) or [`RabbitConfig::from_url`], then set fields.
///
/// Its `Debug` output never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RabbitConfig {
    /// Broker host name or IP address (`RABBIT_HOST`).
    pub host: String,
    /// AMQP port (`RABBIT_PORT`), 5672 by default.
    pub port: u16,
    /// User name (`RABBIT_USER`).
    pub user: String,
    /// Password (`RABBIT_PASSWORD`); never logged.
    pub password: String,
    /// Virtual host (`RABBIT_VHOST`), `/` by default.
    pub vhost: String,
    /// The durable topic exchange changes travel through ([`DEFAULT_EXCHANGE`]).
    pub exchange: String,
    /// The durable direct exchange workers publish their reports to
    /// ([`DEFAULT_REPORT_EXCHANGE`]).
    pub report_exchange: String,
    /// The durable queue of reports, one per fleet, that every API manager takes from
    /// ([`DEFAULT_REPORT_QUEUE`]). Workers and managers must agree on it.
    pub report_queue: String,
    /// The most reports the report queue holds while no manager takes them; beyond it the
    /// oldest are dropped (`x-max-length`, overflow `drop-head`: a host's next report says
    /// more), so a fleet without a manager cannot fill the broker. Default 100,000; `None` for
    /// no limit. Workers and managers must agree on it (the broker refuses a queue declared
    /// twice with different arguments).
    pub max_report_queue_length: Option<u32>,
    /// The stable id of this host's worker (e.g. its host name). It names the worker's one
    /// queue, so the queue and the messages in it outlive a disconnect shorter than
    /// [`queue_expiry`](Self::queue_expiry). `None` gives every subscription a private,
    /// server-named queue deleted when the subscription ends (publishers and tests).
    /// At most one subscription per worker id and topic set may be open at a time.
    pub worker_id: Option<String>,
    /// How long a worker's queue lives without a consumer before the broker deletes it
    /// (`x-expires`). A worker away longer resyncs over HTTP anyway. Default 10 minutes.
    pub queue_expiry: Duration,
    /// The most messages a worker's queue holds; the oldest are dropped beyond it
    /// (`x-max-length`, overflow `drop-head`), so a stuck worker cannot fill the broker.
    /// Default 10,000; `None` for no limit.
    pub max_queue_length: Option<u32>,
    /// How many unacknowledged messages the broker sends a subscriber ahead (`basic.qos`).
    /// Default 8.
    pub prefetch: u16,
    /// AMQP heartbeat; a silent broker is detected after about twice this. Zero turns
    /// heartbeats off. Default 30 s.
    pub heartbeat: Duration,
    /// How long a connection attempt (TCP + AMQP handshake) may take. Default 5 s.
    pub connect_timeout: Duration,
    /// How long a publish may wait for the broker's confirm, and a subscribe for its queue
    /// and bindings to be declared. Default 10 s.
    pub publish_timeout: Duration,
    /// The largest AMQP frame this side accepts (`frame_max`, 4,096 to 1,048,576 bytes; the
    /// broker may lower it). The client keeps two buffers of 32 frames per connection, so
    /// this sets most of a connection's memory: the default, 8 KiB, costs 512 KiB where the
    /// broker's 128 KiB costs 8 MiB. A message longer than a frame travels in several.
    pub frame_max: u32,
    /// How subscriptions receive changes (`NEBULA_RABBIT_TOPOLOGY`): one durable queue per
    /// worker ([`Topology::Queues`], the default) or shared streams per topic
    /// ([`Topology::Streams`]). Publishing is the same either way.
    pub topology: Topology,
    /// With [`Topology::Streams`], the most bytes a stream keeps (`x-max-length-bytes`);
    /// beyond it the oldest segments go even if younger than
    /// [`queue_expiry`](Self::queue_expiry). Every worker must use the same value (the broker
    /// refuses a stream declared twice with different arguments). Default 256 MiB.
    pub stream_max_bytes: u64,
}

/// How a worker's subscription receives changes from the exchange.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Topology {
    /// One durable classic queue per worker (`nebula.worker.<id>.<digest>`) bound with the
    /// worker's keys: the broker stores one copy per worker, and a worker's queue keeps what
    /// was published while it was away (up to [`RabbitConfig::queue_expiry`]).
    #[default]
    Queues,
    /// One durable stream per topic (`nebula.stream.app.<name>`, `nebula.stream.dg.<group>`,
    /// `nebula.stream.all-apps`), shared by every worker of that topic and read from an offset:
    /// the broker stores one copy per topic, whatever the number of workers. Retention
    /// (`x-max-age` = [`RabbitConfig::queue_expiry`], `x-max-length-bytes` =
    /// [`RabbitConfig::stream_max_bytes`]) replaces per-queue expiry, and a subscriber that
    /// lost its connection resumes after the last delivery it acknowledged.
    Streams,
}

impl Topology {
    /// `queues` or `streams`, as `NEBULA_RABBIT_TOPOLOGY` spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queues => "queues",
            Self::Streams => "streams",
        }
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Topology {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "queues" => Ok(Self::Queues),
            "streams" => Ok(Self::Streams),
            _ => Err(format!("{s:?} is not queues or streams")),
        }
    }
}

impl Default for RabbitConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 5672,
            user: "guest".to_owned(),
            password: "guest".to_owned(),
            vhost: "/".to_owned(),
            exchange: DEFAULT_EXCHANGE.to_owned(),
            report_exchange: DEFAULT_REPORT_EXCHANGE.to_owned(),
            report_queue: DEFAULT_REPORT_QUEUE.to_owned(),
            max_report_queue_length: Some(100_000),
            worker_id: None,
            queue_expiry: Duration::from_secs(600),
            max_queue_length: Some(10_000),
            prefetch: 8,
            heartbeat: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(10),
            frame_max: DEFAULT_FRAME_MAX,
            topology: Topology::Queues,
            stream_max_bytes: 256 * 1024 * 1024,
        }
    }
}

impl fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("vhost", &self.vhost)
            .field("exchange", &self.exchange)
            .field("report_exchange", &self.report_exchange)
            .field("report_queue", &self.report_queue)
            .field("max_report_queue_length", &self.max_report_queue_length)
            .field("worker_id", &self.worker_id)
            .field("queue_expiry", &self.queue_expiry)
            .field("max_queue_length", &self.max_queue_length)
            .field("prefetch", &self.prefetch)
            .field("heartbeat", &self.heartbeat)
            .field("connect_timeout", &self.connect_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("frame_max", &self.frame_max)
            .field("topology", &self.topology)
            .field("stream_max_bytes", &self.stream_max_bytes)
            .finish()
    }
}

/// A configuration that cannot work, with every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid RabbitMQ configuration: {}", .problems.join("; "))]
pub struct InvalidConfig {
    /// One sentence per problem, naming the setting.
    pub problems: Vec<String>,
}

impl RabbitConfig {
    /// The defaults with the broker address, credentials and vhost of an AMQP URL:
    /// `amqp://user:password@host:port/vhost?heartbeat=30`. User, password and vhost are
    /// percent-decoded; a missing or empty vhost means `/` (write `%2f` for `/` as well).
    /// `amqps` is refused: this build carries no TLS stack.
    ///
    /// # Errors
    /// [`InvalidConfig`] naming what is wrong (never echoing the password).
    pub fn from_url(url: &str) -> Result<Self, InvalidConfig> {
        let bad = |p: String| InvalidConfig { problems: vec![p] };
        // The url crate's messages do not contain the input, so they are safe to show.
        let parsed =
            url::Url::parse(url).map_err(|e| bad(format!("RABBIT_URL is not a URL: {e}")))?;
        match parsed.scheme() {
            "amqp" => {}
            "amqps" => {
                return Err(bad(
                    "RABBIT_URL: amqps (TLS) is not supported by this build; use amqp".to_owned(),
                ));
            }
            other => {
                return Err(bad(format!(
                    "RABBIT_URL: scheme must be amqp, not {other:?}"
                )));
            }
        }
        let mut config = Self::default();
        let host = parsed
            .host_str()
            .ok_or_else(|| bad("RABBIT_URL has no host".to_owned()))?;
        // IPv6 literals come bracketed; the socket address wants them bare.
        config.host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        config.port = parsed.port().unwrap_or(5672);
        let decode = |s: &str, what: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| bad(format!("RABBIT_URL: the {what} is not valid UTF-8")))
        };
        if !parsed.username().is_empty() {
            config.user = decode(parsed.username(), "user")?;
        }
        if let Some(p) = parsed.password() {
            config.password = decode(p, "password")?;
        }
        let path = parsed.path().strip_prefix('/').unwrap_or(parsed.path());
        if !path.is_empty() {
            config.vhost = decode(path, "vhost")?;
        }
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "heartbeat" => {
                    let secs: u64 = value.parse().map_err(|_| {
                        bad(format!(
                            "RABBIT_URL: heartbeat={value} is not a number of seconds"
                        ))
                    })?;
                    config.heartbeat = Duration::from_secs(secs);
                }
                "frame_max" => {
                    config.frame_max = value.parse().map_err(|_| {
                        bad(format!(
                            "RABBIT_URL: frame_max={value} is not a number of bytes"
                        ))
                    })?;
                }
                other => {
                    return Err(bad(format!(
                        "RABBIT_URL: unknown parameter {other:?} (supported: heartbeat, frame_max)"
                    )));
                }
            }
        }
        Ok(config)
    }

    /// Every problem with this configuration (empty when it can work).
    #[must_use]
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        check(!self.host.is_empty(), "RABBIT_HOST must not be empty");
        check(self.port != 0, "RABBIT_PORT must be 1 to 65535");
        check(!self.user.is_empty(), "RABBIT_USER must not be empty");
        check(
            !self.vhost.is_empty() && self.vhost.len() <= 255,
            "RABBIT_VHOST must be 1 to 255 bytes",
        );
        check(
            is_amqp_name(&self.exchange) && !self.exchange.starts_with("amq."),
            "the exchange name must be 1 to 200 characters of A-Z a-z 0-9 _ . : - and not start with amq.",
        );
        check(
            is_amqp_name(&self.report_exchange)
                && !self.report_exchange.starts_with("amq.")
                && self.report_exchange != self.exchange,
            "the report exchange name must be 1 to 200 characters of A-Z a-z 0-9 _ . : -, not start with amq. and differ from the exchange of changes",
        );
        check(
            is_amqp_name(&self.report_queue) && !self.report_queue.starts_with("amq."),
            "the report queue name must be 1 to 200 characters of A-Z a-z 0-9 _ . : - and not start with amq.",
        );
        check(
            self.max_report_queue_length != Some(0),
            "the maximum report queue length must be at least 1 (or unlimited)",
        );
        if let Some(id) = &self.worker_id {
            check(
                is_amqp_name(id),
                "the worker id must be 1 to 200 characters of A-Z a-z 0-9 _ . : -",
            );
        }
        check(
            self.queue_expiry >= Duration::from_secs(1)
                && self.queue_expiry <= Duration::from_secs(30 * 24 * 3600),
            "the queue expiry must be between 1 second and 30 days",
        );
        check(
            self.max_queue_length != Some(0),
            "the maximum queue length must be at least 1 (or unlimited)",
        );
        check(self.prefetch >= 1, "the prefetch must be at least 1");
        check(
            self.heartbeat.as_secs() <= u64::from(u16::MAX),
            "the heartbeat must be at most 65535 seconds",
        );
        check(
            !self.connect_timeout.is_zero(),
            "the connect timeout must be positive",
        );
        check(
            !self.publish_timeout.is_zero(),
            "the publish timeout must be positive",
        );
        check(
            (4096..=1_048_576).contains(&self.frame_max),
            "frame_max must be 4096 to 1048576 bytes",
        );
        check(
            self.stream_max_bytes >= 1024 * 1024,
            "the stream size cap must be at least 1 MiB",
        );
        problems
    }

    /// The name of the durable queue a subscription of this worker to `topics` uses, or `None`
    /// without a [`worker_id`](Self::worker_id).
    ///
    /// The name is `nebula.worker.<worker id>.<digest>`, where the digest covers the topic set,
    /// the exchange and the queue arguments: a worker that keeps its configuration gets its queue (and the
    /// messages waiting in it) back after a disconnect; one whose selection changed gets a
    /// fresh queue with exactly the new bindings, and the old queue expires unused.
    #[must_use]
    pub fn queue_name(&self, topics: &[Topic]) -> Option<String> {
        let id = self.worker_id.as_deref()?;
        let mut keys: Vec<String> = topics.iter().map(wire::binding_key).collect();
        keys.sort();
        keys.dedup();
        let mut hash = Sha256::new();
        for key in &keys {
            hash.update(key.as_bytes());
            hash.update([0]);
        }
        hash.update(format!(
            "exchange={};expires={};max={:?}",
            self.exchange,
            self.queue_expiry.as_millis(),
            self.max_queue_length
        ));
        let digest = hash.finalize();
        let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("nebula.worker.{id}.{short}"))
    }
}

/// 1 to 200 characters that are safe in exchange and queue names and in logs.
fn is_amqp_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_WORKER_ID_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nebula_core::model::AppName;

    #[test]
    fn debug_hides_the_password() {
        let config = RabbitConfig {
            password: "s3cret-pw".to_owned(),
            ..RabbitConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn urls_parse_with_ip_hosts_and_encoded_parts() {
        let c =
            RabbitConfig::from_url("amqp://nebula:p%40ss@10.1.2.3:5673/prod?heartbeat=7").unwrap();
        assert_eq!(
            (
                c.host.as_str(),
                c.port,
                c.user.as_str(),
                c.password.as_str()
            ),
            ("10.1.2.3", 5673, "nebula", "p@ss")
        );
        assert_eq!((c.vhost.as_str(), c.heartbeat.as_secs()), ("prod", 7));
        assert_eq!(c.frame_max, DEFAULT_FRAME_MAX);
        let c = RabbitConfig::from_url("amqp://h?frame_max=131072").unwrap();
        assert_eq!(c.frame_max, 131_072);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let c = RabbitConfig::from_url("amqp://h?frame_max=1").unwrap();
        assert!(c.problems()[0].contains("frame_max"), "{:?}", c.problems());

        let c = RabbitConfig::from_url("amqp://rabbit.example").unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str(), c.vhost.as_str()),
            ("rabbit.example", 5672, "guest", "/")
        );
        assert_eq!(RabbitConfig::from_url("amqp://h/%2f").unwrap().vhost, "/");
        assert_eq!(RabbitConfig::from_url("amqp://h/").unwrap().vhost, "/");
        assert_eq!(
            RabbitConfig::from_url("amqp://[::1]:1").unwrap().host,
            "::1"
        );
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_the_password() {
        for url in [
            "amqps://u:topsecret@h",
            "http://u:topsecret@h",
            "amqp://u:topsecret@h?frame_max=x",
            "amqp://u:topsecret@h?channel_max=1",
            "amqp://u:topsecret@h?heartbeat=x",
            "not a url topsecret",
        ] {
            let err = RabbitConfig::from_url(url).unwrap_err();
            assert!(!err.to_string().contains("topsecret"), "{url}: {err}");
        }
    }

    #[test]
    fn problems_are_all_listed() {
        let config = RabbitConfig {
            host: String::new(),
            port: 0,
            exchange: "amq.topic".to_owned(),
            worker_id: Some("has space".to_owned()),
            queue_expiry: Duration::ZERO,
            prefetch: 0,
            frame_max: 100,
            ..RabbitConfig::default()
        };
        assert_eq!(config.problems().len(), 7, "{:?}", config.problems());
        assert!(RabbitConfig::default().problems().is_empty());
    }

    #[test]
    fn queue_names_are_stable_per_worker_and_topic_set() {
        let app = |n: &str| Topic::App(AppName::parse(n).unwrap());
        let config = RabbitConfig {
            worker_id: Some("host-1".to_owned()),
            ..RabbitConfig::default()
        };
        let q = config.queue_name(&[app("a"), app("b")]).unwrap();
        assert!(q.starts_with("nebula.worker.host-1."), "{q}");
        assert_eq!(Some(&q), config.queue_name(&[app("b"), app("a")]).as_ref());
        assert_ne!(Some(&q), config.queue_name(&[app("a")]).as_ref());
        assert_ne!(Some(&q), config.queue_name(&[Topic::AllApps]).as_ref());
        let longer = RabbitConfig {
            queue_expiry: Duration::from_secs(60),
            ..config.clone()
        };
        assert_ne!(Some(q), longer.queue_name(&[app("a"), app("b")]));
        assert_eq!(RabbitConfig::default().queue_name(&[app("a")]), None);
    }
}
