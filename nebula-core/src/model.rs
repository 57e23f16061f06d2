//! The app document: every v2 field with the v2 defaults, plus what the original lacked.
//!
//! [`App`] is a published contract: it is what the Store keeps, what the Bus carries and what
//! the API returns, so its JSON shape is pinned by a round-trip test below.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

use crate::cohort::{Cohort, spread_fraction};

/// The default networks of a v2 app: the `nebula` user bridge, then Docker's `bridge`.
pub const DEFAULT_NETWORKS: [&str; 2] = ["nebula", "bridge"];

/// A validated app name (see [`crate::field::app_name`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppName(String);

impl AppName {
    /// Validates `name` as an app name.
    ///
    /// # Errors
    /// A [`crate::field::FieldError`] naming `app_name` and the rule broken.
    pub fn parse(name: &str) -> Result<Self, crate::field::FieldError> {
        crate::field::app_name(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many containers an app runs on each host. Exactly one rule applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ContainersPer {
    /// `int(host_cpus * n)` containers.
    Cpu(f64),
    /// `n` containers per host (`server`).
    Server(u32),
    /// `n` containers per host (`instance`, a synonym of `server`).
    Instance(u32),
    /// `int(host_memory_mb / n)` containers (`memory`).
    Memory(f64),
    /// `int(host_memory_mb / n)` containers (`mem`, a synonym of `memory`).
    Mem(f64),
}

impl Default for ContainersPer {
    fn default() -> Self {
        Self::Server(1)
    }
}

impl ContainersPer {
    /// The JSON key of this rule.
    #[must_use]
    pub fn key(&self) -> &'static str {
        match self {
            Self::Cpu(_) => "cpu",
            Self::Server(_) => "server",
            Self::Instance(_) => "instance",
            Self::Memory(_) => "memory",
            Self::Mem(_) => "mem",
        }
    }

    /// The rule's number.
    #[must_use]
    pub fn value(&self) -> f64 {
        match *self {
            Self::Cpu(v) | Self::Memory(v) | Self::Mem(v) => v,
            Self::Server(v) | Self::Instance(v) => f64::from(v),
        }
    }

    /// Builds a rule from its key and number.
    ///
    /// # Errors
    /// The rule broken, when the key is unknown or the number is not allowed for it.
    pub fn from_key(key: &str, value: f64) -> Result<Self, &'static str> {
        if !value.is_finite() || value <= 0.0 {
            return Err("must be a positive number");
        }
        let whole = || {
            if value.fract() == 0.0 && value <= f64::from(crate::field::MAX_CONTAINERS_PER_HOST) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Ok(value as u32)
            } else {
                Err("must be a whole number from 1 to 1024")
            }
        };
        match key {
            "cpu" => Ok(Self::Cpu(value)),
            "server" => whole().map(Self::Server),
            "instance" => whole().map(Self::Instance),
            "memory" => Ok(Self::Memory(value)),
            "mem" => Ok(Self::Mem(value)),
            _ => Err("key must be one of cpu, server, instance, memory, mem"),
        }
    }
}

impl Serialize for ContainersPer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        match *self {
            Self::Server(v) | Self::Instance(v) => map.serialize_entry(self.key(), &v)?,
            // Whole numbers are written as integers, as clients sent them.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Self::Cpu(v) | Self::Memory(v) | Self::Mem(v) if v.fract() == 0.0 && v < 1e15 => {
                map.serialize_entry(self.key(), &(v as u64))?;
            }
            Self::Cpu(v) | Self::Memory(v) | Self::Mem(v) => map.serialize_entry(self.key(), &v)?,
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ContainersPer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, f64>::deserialize(d)?;
        let mut it = map.into_iter();
        match (it.next(), it.next()) {
            (Some((k, v)), None) => Self::from_key(&k, v).map_err(de::Error::custom),
            _ => Err(de::Error::custom(
                "containers_per must have exactly one key",
            )),
        }
    }
}

/// One `starting_ports` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StartingPort {
    /// `80`: container port 80 on host port `80 + i - 1`.
    Same(u16),
    /// `{"81": "80"}`: container port 80 on host port `81 + i - 1`.
    Mapped {
        /// The host port of container 1.
        host: u16,
        /// The fixed container port.
        container: u16,
    },
}

fn port_number(value: &serde_json::Value) -> Option<u16> {
    let n = match value {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|p| *p >= 1)
}

impl StartingPort {
    /// Parses one `starting_ports` entry: an integer, or a one-key object `{"host": "container"}`.
    ///
    /// # Errors
    /// The rule broken, as text.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        const RULE: &str = "each entry must be a port number (1-65535) or a {\"host_port\": \"container_port\"} object";
        match value {
            serde_json::Value::Number(_) => port_number(value)
                .map(StartingPort::Same)
                .ok_or_else(|| RULE.into()),
            serde_json::Value::Object(map) if map.len() == 1 => {
                let (host, container) = map.iter().next().ok_or(RULE)?;
                let host = port_number(&serde_json::Value::String(host.clone())).ok_or(RULE)?;
                let container = port_number(container).ok_or(RULE)?;
                Ok(StartingPort::Mapped { host, container })
            }
            _ => Err(RULE.into()),
        }
    }

    /// The host port of container 1.
    #[must_use]
    pub fn host(&self) -> u16 {
        match *self {
            Self::Same(p) | Self::Mapped { host: p, .. } => p,
        }
    }

    /// The container port.
    #[must_use]
    pub fn container(&self) -> u16 {
        match *self {
            Self::Same(p) | Self::Mapped { container: p, .. } => p,
        }
    }
}

impl Serialize for StartingPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Self::Same(p) => s.serialize_u16(p),
            Self::Mapped { host, container } => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(&host.to_string(), &container.to_string())?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for StartingPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        Self::from_json(&value).map_err(de::Error::custom)
    }
}

/// How a change that replaces containers is rolled out on each host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutPolicy {
    /// How many containers of the app may be down at once during a rolling restart.
    pub wave_size: u32,
    /// How long a new container must stay running (and healthy, if it has a HEALTHCHECK)
    /// before the next wave starts.
    pub min_healthy_seconds: u32,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            wave_size: 1,
            min_healthy_seconds: 5,
        }
    }
}

/// The fields a user sets on an app: everything but its name and versions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    /// `[registry/]name[:tag][@sha256:digest]`.
    pub docker_image: String,
    /// Port rules; see [`crate::schedule::port_bindings`].
    #[serde(default)]
    pub starting_ports: Vec<StartingPort>,
    /// How many containers per host.
    #[serde(default)]
    pub containers_per: ContainersPer,
    /// The container environment.
    #[serde(default)]
    pub env_vars: BTreeMap<String, String>,
    /// Whether the app's containers should run.
    #[serde(default = "yes")]
    pub running: bool,
    /// Networks: `host` or `none` alone, or user networks (the first is used at create).
    #[serde(default = "default_networks")]
    pub networks: Vec<String>,
    /// Binds, `host:container[:mode]`, as `docker run -v`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Devices, `host[:container[:rwm]]`.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Run privileged.
    #[serde(default)]
    pub privileged: bool,
    /// Replace containers in waves instead of all at once.
    #[serde(default)]
    pub rolling_restart: bool,
    /// Memory limit per container, in MB (absent: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mb: Option<u64>,
    /// CPU limit per container, in CPUs (absent: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<f64>,
    /// Overrides the image's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_command: Option<Vec<String>>,
    /// Overrides the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Wave size and health gate of rolling restarts.
    #[serde(default)]
    pub rollout: RolloutPolicy,
    /// Overrides (or disables) the image's HEALTHCHECK; absent: the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::healthcheck::Healthcheck>,
    /// When the worker pulls the image before it creates containers.
    #[serde(default)]
    pub pull_policy: PullPolicy,
}

/// When a worker pulls an app's image.
///
/// Whatever the policy, a container is created from the image the engine holds for the
/// reference; the policy only decides whether the registry is asked first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// A change or a restart pulls first (Nebula's "deploy by re-tag"); a missing container
    /// is re-created from the local image without asking the registry. When the pull fails
    /// and the engine holds the image, the local image is used (and the report says so).
    #[default]
    Always,
    /// Pull only when the engine does not hold the image.
    IfMissing,
    /// Never pull: the image must be on the host (loaded, built, or pre-pulled).
    Never,
}

impl PullPolicy {
    /// Every policy, as written in the API.
    pub const NAMES: [&'static str; 3] = ["always", "if_missing", "never"];

    /// The policy named `name` in the API.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "always" => Some(Self::Always),
            "if_missing" => Some(Self::IfMissing),
            "never" => Some(Self::Never),
            _ => None,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_networks() -> Vec<String> {
    DEFAULT_NETWORKS.iter().map(|s| (*s).to_owned()).collect()
}

impl AppSpec {
    /// A spec with the v2 defaults and the given image.
    #[must_use]
    pub fn with_image(docker_image: &str) -> Self {
        Self {
            docker_image: docker_image.to_owned(),
            starting_ports: Vec::new(),
            containers_per: ContainersPer::default(),
            env_vars: BTreeMap::new(),
            running: true,
            networks: default_networks(),
            volumes: Vec::new(),
            devices: Vec::new(),
            privileged: false,
            rolling_restart: false,
            memory_limit_mb: None,
            cpu_limit: None,
            run_command: None,
            entrypoint: None,
            rollout: RolloutPolicy::default(),
            healthcheck: None,
            pull_policy: PullPolicy::default(),
        }
    }
}

/// How the next replacement of every container (a restart) should be rolled out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartMode {
    /// As the app's `rolling_restart` says.
    #[default]
    AsConfigured,
    /// In waves, whatever `rolling_restart` says (v1 `/roll`).
    Rolling,
}

/// An app as stored: the spec plus its identity and versions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// The app's name.
    pub app_name: AppName,
    /// The version: 1 on create, +1 on every change.
    pub app_id: u64,
    /// Changes when the app is deleted and created again, so no worker mistakes the new app
    /// for an old version of the deleted one. Creation time in nanoseconds: later is larger.
    pub incarnation: u64,
    /// Bumped by restart: every container is replaced (the image pulled first).
    #[serde(default)]
    pub restart_generation: u64,
    /// How the replacement asked by the last restart rolls out.
    #[serde(default)]
    pub restart_mode: RestartMode,
    /// Bumped by the v1 per-app prune: workers running the app remove unused images.
    #[serde(default)]
    pub prune_generation: u64,
    /// The user's fields.
    #[serde(flatten)]
    pub spec: AppSpec,
    /// While a fleet rollout moves the app: the candidate and which hosts run it. Absent
    /// otherwise, so documents without a rollout keep their shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_rollout: Option<Box<CandidateRule>>,
}

/// What an app's document carries while a fleet rollout moves it from its spec (the stable
/// one) to a candidate: one rule every host applies to its own name (see [`crate::cohort`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateRule {
    /// The rollout this rule belongs to.
    pub rollout_id: u64,
    /// The hosts that run the candidate.
    #[serde(flatten)]
    pub cohort: Cohort,
    /// Hosts under this threshold (and the canaries) pull the candidate's image ahead,
    /// without switching; at least `threshold_bp`.
    #[serde(default)]
    pub prefetch_bp: u32,
    /// A pre-pulling host waits its own share of this many seconds first, so the fleet's
    /// pulls are spread out (the rollout's pace).
    #[serde(default)]
    pub prefetch_spread_seconds: u32,
    /// The spec the cohort runs.
    pub candidate: AppSpec,
}

impl CandidateRule {
    /// Whether `host` runs the candidate.
    #[must_use]
    pub fn runs_candidate(&self, host: &str) -> bool {
        self.cohort.includes(host)
    }

    /// Whether `host` should hold the candidate's image without running it yet.
    #[must_use]
    pub fn prefetches(&self, host: &str) -> bool {
        !self.runs_candidate(host)
            && self.prefetch_bp > self.cohort.threshold_bp
            && Cohort {
                threshold_bp: self.prefetch_bp,
                ..self.cohort.clone()
            }
            .includes(host)
    }

    /// How long `host` waits before its pre-pull.
    #[must_use]
    pub fn prefetch_delay(&self, host: &str) -> std::time::Duration {
        std::time::Duration::from_secs_f64(
            f64::from(self.prefetch_spread_seconds) * spread_fraction(self.cohort.salt, host),
        )
    }
}

impl App {
    /// The (incarnation, version) pair workers compare: a message is applied only when its
    /// pair is greater than the one held.
    #[must_use]
    pub fn revision(&self) -> (u64, u64) {
        (self.incarnation, self.app_id)
    }

    /// The spec `host` runs: the candidate while a fleet rollout puts the host in its
    /// cohort, else the app's own.
    #[must_use]
    pub fn spec_for(&self, host: &str) -> &AppSpec {
        self.candidate_for(host).unwrap_or(&self.spec)
    }

    fn candidate_for(&self, host: &str) -> Option<&AppSpec> {
        self.fleet_rollout
            .as_ref()
            .filter(|rule| rule.runs_candidate(host))
            .map(|rule| &rule.candidate)
    }

    /// The app as `host` runs it: with the candidate as its spec while a fleet rollout puts
    /// the host in its cohort (the rule stays, for reports and pre-pull). Everything that plans
    /// or reports a host's containers works on this.
    #[must_use]
    pub fn resolved_for(&self, host: &str) -> std::borrow::Cow<'_, Self> {
        match self.candidate_for(host) {
            Some(candidate) => {
                let mut app = self.clone();
                app.spec = candidate.clone();
                std::borrow::Cow::Owned(app)
            }
            None => std::borrow::Cow::Borrowed(self),
        }
    }

    /// Whether replacements of this app roll out in waves.
    #[must_use]
    pub fn rolls(&self) -> bool {
        self.spec.rolling_restart || self.restart_mode == RestartMode::Rolling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_json_shape_round_trips() {
        let mut spec = AppSpec::with_image("nginx:1.25");
        spec.starting_ports = vec![
            StartingPort::Same(80),
            StartingPort::Mapped {
                host: 8443,
                container: 443,
            },
        ];
        spec.containers_per = ContainersPer::Cpu(0.5);
        spec.env_vars.insert("A".into(), "1".into());
        let app = App {
            app_name: AppName::parse("site").unwrap(),
            app_id: 3,
            incarnation: 7,
            restart_generation: 1,
            restart_mode: RestartMode::Rolling,
            prune_generation: 0,
            spec,
            fleet_rollout: None,
        };
        let json = serde_json::to_value(&app).unwrap();
        assert!(json.get("fleet_rollout").is_none());
        assert_eq!(json["app_name"], "site");
        assert_eq!(
            json["starting_ports"],
            serde_json::json!([80, {"8443": "443"}])
        );
        assert_eq!(json["containers_per"], serde_json::json!({"cpu": 0.5}));
        assert_eq!(json["networks"], serde_json::json!(["nebula", "bridge"]));
        assert_eq!(json["restart_mode"], "rolling");
        assert_eq!(
            json["rollout"],
            serde_json::json!({"wave_size": 1, "min_healthy_seconds": 5})
        );
        let back: App = serde_json::from_value(json).unwrap();
        assert_eq!(back, app);
    }

    #[test]
    fn containers_per_server_serializes_as_integer() {
        let json = serde_json::to_value(ContainersPer::Server(2)).unwrap();
        assert_eq!(json, serde_json::json!({"server": 2}));
        assert_eq!(
            serde_json::to_value(ContainersPer::Cpu(3.0)).unwrap(),
            serde_json::json!({"cpu": 3})
        );
    }

    #[test]
    fn containers_per_rejects_two_keys() {
        let err =
            serde_json::from_value::<ContainersPer>(serde_json::json!({"cpu": 1, "server": 1}));
        assert!(err.is_err());
    }
}
