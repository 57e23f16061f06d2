//! Nebula's [`Runtime`] on a real Docker engine, spoken to over the engine API with
//! [bollard](https://docs.rs/bollard) (no `docker` CLI).
//!
//! ```no_run
//! # async fn demo() -> Result<(), nebula_core::runtime::RuntimeError> {
//! use nebula_core::runtime::Runtime;
//! use nebula_docker::{DockerConfig, DockerRuntime};
//!
//! // The caller reads DOCKER_HOST (the library never reads the environment).
//! let config = DockerConfig::with_host(std::env::var("DOCKER_HOST").ok());
//! let rt = DockerRuntime::connect(&config).await?;
//! let host = rt.host().await?;
//! println!("{} CPUs, {} MiB", host.cpus, host.memory_mb);
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour worth knowing
//! - [`DockerRuntime::connect`] negotiates the API version with the engine (bollard defaults to a
//!   newer API than Docker 20.10's 1.41), so it fails with `Unavailable` when no engine answers.
//! - `create` creates **and starts**; when anything after the engine's create fails (connecting
//!   an extra network, starting: a host port in use, ...) the container is force-removed, so a
//!   failed `create` leaves nothing behind. The network `nebula` is created (bridge driver) when
//!   missing; its existence is checked by exact name (Docker's `name` filter matches substrings).
//! - `remove` stops with the given grace, kills if the stop fails, then force-removes together
//!   with the container's anonymous volumes (named volumes and binds are kept). It is `NotFound`
//!   only when the container never existed; one that vanishes half-way counts as removed.
//! - `pull` asks for exactly one tag (or digest): an untagged reference pulls `:latest`, never
//!   every tag; an error reported inside the engine's progress stream is an error.
//! - `prune_images` removes every image no container (running or not) uses, tagged or not, and
//!   counts the images removed (not their layers).
//! - Engine errors map to [`RuntimeError`]: 404 `NotFound`, 409 `Conflict`, other 4xx/5xx
//!   `Refused`, transport failures and timeouts `Unavailable`.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, DeviceMapping, HealthConfig,
    HostConfig, NetworkConnectRequest, NetworkCreateRequest, PortBinding as DockerPortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
    ListImagesOptions, ListNetworksOptions, PruneImagesOptions, RemoveContainerOptions,
    RestartContainerOptions, StopContainerOptions,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures::StreamExt;
use nebula_core::container::{
    ContainerId, ContainerSpec, ContainerState, Health, NetworkMode, ObservedContainer,
};
use nebula_core::healthcheck::Healthcheck;
use nebula_core::image::ImageRef;
use nebula_core::runtime::{RegistryAuth, Runtime, RuntimeError};
use nebula_core::schedule::HostResources;
use tokio::sync::Mutex;

/// The network Nebula creates on demand (bridge driver) when a container asks for it.
pub const NEBULA_NETWORK: &str = "nebula";

/// The engine's default address, used when [`DockerConfig::host`] is `None`.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Seconds `restart` gives a container to stop before the engine kills it.
const RESTART_GRACE_SECS: i32 = 2;

/// How to reach the engine. The library never reads the environment: the binary passes
/// `DOCKER_HOST` in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerConfig {
    /// A `DOCKER_HOST` value: `unix:///path/docker.sock`, a bare socket path, or
    /// `tcp://host:port` / `http://host:port` (plain HTTP, no TLS). `None` or empty: the default
    /// socket [`DEFAULT_DOCKER_HOST`].
    pub host: Option<String>,
    /// How long one API call may wait for the engine's answer (a stream such as a pull's
    /// progress may run longer). Stops get at least their grace period plus 30 s.
    pub timeout: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            host: None,
            timeout: Duration::from_secs(120),
        }
    }
}

impl DockerConfig {
    /// The default timeout with the given `DOCKER_HOST` value (`None`: the default socket).
    #[must_use]
    pub fn with_host(host: Option<String>) -> Self {
        Self {
            host,
            ..Self::default()
        }
    }
}

struct Inner {
    docker: Docker,
    host: String,
    timeout: Duration,
    /// Whether the `nebula` network is known to exist (cached after the first success).
    nebula_ready: Mutex<bool>,
}

/// A [`Runtime`] on one Docker engine. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

impl fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("host", &self.inner.host)
            .field(
                "api_version",
                &self.inner.docker.client_version().to_string(),
            )
            .finish_non_exhaustive()
    }
}

impl DockerRuntime {
    /// Connects to the engine at `config.host` and negotiates the API version.
    ///
    /// # Errors
    /// `Unavailable` when the address is unsupported, the socket is missing or the engine does
    /// not answer.
    pub async fn connect(config: &DockerConfig) -> Result<Self, RuntimeError> {
        let host = config
            .host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .unwrap_or(DEFAULT_DOCKER_HOST)
            .to_owned();
        let secs = config.timeout.as_secs().max(1);
        let docker = if host.starts_with("unix://") || host.starts_with('/') {
            Docker::connect_with_unix(&host, secs, API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            Docker::connect_with_http(&host, secs, API_DEFAULT_VERSION)
        } else {
            return Err(RuntimeError::Unavailable(format!(
                "unsupported Docker host {host:?}: use unix:///path, a socket path or tcp://host:port"
            )));
        }
        .map_err(|e| RuntimeError::Unavailable(format!("{host}: {e}")))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| match map_err(e) {
                RuntimeError::Unavailable(m) => RuntimeError::Unavailable(format!("{host}: {m}")),
                other => RuntimeError::Unavailable(format!("{host}: version negotiation: {other}")),
            })?;
        tracing::debug!(%host, api = %docker.client_version(), "connected to the Docker engine");
        Ok(Self {
            inner: Arc::new(Inner {
                docker,
                host,
                timeout: Duration::from_secs(secs),
                nebula_ready: Mutex::new(false),
            }),
        })
    }

    /// The address this runtime talks to.
    #[must_use]
    pub fn host_address(&self) -> &str {
        &self.inner.host
    }

    /// The negotiated engine API version, e.g. `1.41`.
    #[must_use]
    pub fn api_version(&self) -> String {
        self.inner.docker.client_version().to_string()
    }

    fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// Makes sure the `nebula` network exists; cached after the first success.
    async fn ensure_nebula_network(&self) -> Result<(), RuntimeError> {
        let mut ready = self.inner.nebula_ready.lock().await;
        if *ready {
            return Ok(());
        }
        // The engine's `name` filter matches substrings ("nebula-prefixed" matches "nebula"),
        // so the answer is checked for an exact name.
        let filters = HashMap::from([("name".to_owned(), vec![NEBULA_NETWORK.to_owned()])]);
        let networks = self
            .docker()
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(map_err)?;
        if !networks
            .iter()
            .any(|n| n.name.as_deref() == Some(NEBULA_NETWORK))
        {
            let request = NetworkCreateRequest {
                name: NEBULA_NETWORK.to_owned(),
                driver: Some("bridge".to_owned()),
                labels: Some(HashMap::from([(
                    nebula_core::container::LABEL_ORCHESTRATOR.to_owned(),
                    nebula_core::container::ORCHESTRATOR.to_owned(),
                )])),
                ..NetworkCreateRequest::default()
            };
            match self.docker().create_network(request).await.map_err(map_err) {
                Ok(_) => tracing::info!(network = NEBULA_NETWORK, "created network"),
                // Created meanwhile by someone else: it exists, which is all we need.
                Err(RuntimeError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        *ready = true;
        Ok(())
    }

    async fn forget_nebula_network(&self) {
        *self.inner.nebula_ready.lock().await = false;
    }

    /// One attempt at create + connect + start; on failure after the engine's create, the
    /// container is force-removed.
    async fn try_create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        let extra = extra_networks(&spec.network);
        if uses_network(&spec.network, NEBULA_NETWORK) {
            self.ensure_nebula_network().await?;
        }
        let body = container_body(spec)?;
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        let created = self
            .docker()
            .create_container(Some(options), body)
            .await
            .map_err(map_err)?;
        for warning in &created.warnings {
            tracing::warn!(container = %spec.name, %warning, "engine warning on create");
        }
        let id = created.id;
        if let Err(e) = self.connect_and_start(&id, &extra).await {
            let options = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            if let Err(cleanup) = self.docker().remove_container(&id, Some(options)).await {
                tracing::warn!(container = %spec.name, error = %cleanup, "could not remove a container whose start failed");
            }
            return Err(e);
        }
        Ok(ContainerId(id))
    }

    async fn connect_and_start(&self, id: &str, extra: &[String]) -> Result<(), RuntimeError> {
        for network in extra {
            let request = NetworkConnectRequest {
                container: id.to_owned(),
                endpoint_config: None,
            };
            self.docker()
                .connect_network(network, request)
                .await
                .map_err(map_err)?;
        }
        self.docker()
            .start_container(id, None)
            .await
            .map_err(map_err)
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn host(&self) -> Result<HostResources, RuntimeError> {
        let info = self.docker().info().await.map_err(map_err)?;
        let cpus = info
            .ncpu
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
            .max(1);
        let memory_mb = info
            .mem_total
            .and_then(|m| u64::try_from(m).ok())
            .unwrap_or(0)
            / (1024 * 1024);
        Ok(HostResources { cpus, memory_mb })
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ObservedContainer>, RuntimeError> {
        let filters = (!labels.is_empty()).then(|| {
            HashMap::from([(
                "label".to_owned(),
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>(),
            )])
        });
        let options = ListContainersOptions {
            all: true,
            filters,
            ..Default::default()
        };
        let summaries = self
            .docker()
            .list_containers(Some(options))
            .await
            .map_err(map_err)?;
        Ok(summaries
            .into_iter()
            .filter_map(observed)
            // The engine filters already; this keeps the guarantee even if a label value
            // contained '=' or the engine matched loosely.
            .filter(|c| labels.iter().all(|(k, v)| c.label(k) == Some(*v)))
            .collect())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        match self.try_create(spec).await {
            // The cached "nebula exists" went stale (removed by hand): create it and retry once.
            Err(RuntimeError::NotFound(m))
                if uses_network(&spec.network, NEBULA_NETWORK)
                    && names_missing_network(&m, NEBULA_NETWORK) =>
            {
                tracing::info!(container = %spec.name, "network nebula disappeared; creating it again");
                self.forget_nebula_network().await;
                self.try_create(spec).await
            }
            other => other,
        }
    }

    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.docker()
            .start_container(&id.0, None)
            .await
            .map_err(map_err)
    }

    async fn restart(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let options = RestartContainerOptions {
            t: Some(RESTART_GRACE_SECS),
            signal: None,
        };
        self.docker()
            .restart_container(&id.0, Some(options))
            .await
            .map_err(map_err)
    }

    async fn remove(&self, id: &ContainerId, grace: Duration) -> Result<(), RuntimeError> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        // The stop call answers only once the container has stopped: give it its grace.
        let stopper = self.docker().clone().with_timeout(
            self.inner
                .timeout
                .max(grace.saturating_add(Duration::from_secs(30))),
        );
        let found = match stopper
            .stop_container(
                &id.0,
                Some(StopContainerOptions {
                    t: Some(t),
                    signal: None,
                }),
            )
            .await
            .map_err(map_err)
        {
            Ok(()) => true,
            Err(RuntimeError::NotFound(m)) => return Err(RuntimeError::NotFound(m)),
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "stop failed; killing");
                match self
                    .docker()
                    .kill_container(&id.0, None::<KillContainerOptions>)
                    .await
                    .map_err(map_err)
                {
                    Ok(()) | Err(RuntimeError::Conflict(_)) => true,
                    // The engine answered about it, so it existed.
                    Err(RuntimeError::NotFound(_)) => !matches!(e, RuntimeError::Unavailable(_)),
                    Err(kill) => {
                        tracing::warn!(container = %id, error = %kill, "kill failed; removing by force");
                        !matches!(e, RuntimeError::Unavailable(_))
                    }
                }
            }
        };
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self
            .docker()
            .remove_container(&id.0, Some(options))
            .await
            .map_err(map_err)
        {
            Ok(()) => Ok(()),
            Err(RuntimeError::NotFound(_)) if found => Ok(()),
            Err(RuntimeError::Conflict(m)) if m.contains("already in progress") => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn pull(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), RuntimeError> {
        let (from_image, tag) = pull_reference(image)?;
        let options = CreateImageOptions {
            from_image: Some(from_image),
            tag: Some(tag),
            ..Default::default()
        };
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            serveraddress: Some(a.server.clone()),
            ..Default::default()
        });
        let mut progress = self.docker().create_image(Some(options), None, credentials);
        while let Some(item) = progress.next().await {
            let info = item.map_err(|e| pull_failure(map_err(e)))?;
            if let Some(detail) = info.error_detail {
                let message = detail
                    .message
                    .unwrap_or_else(|| format!("pull of {image} failed"));
                return Err(pull_failure(RuntimeError::Refused(message)));
            }
        }
        tracing::debug!(%image, "pulled");
        Ok(())
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        match self.docker().inspect_image(image).await.map_err(map_err) {
            Ok(inspect) => Ok(Some(inspect.id.unwrap_or_default())),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn prune_images(&self) -> Result<u64, RuntimeError> {
        // The engine's answer lists removed layers too; count only what were images.
        let images = self
            .docker()
            .list_images(Some(ListImagesOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(map_err)?;
        let image_ids: BTreeSet<String> = images.into_iter().map(|i| i.id).collect();
        // dangling=false: every unused image, tagged or not (the original pruned only
        // dangling ones).
        let filters = HashMap::from([("dangling".to_owned(), vec!["false".to_owned()])]);
        let answer = self
            .docker()
            .prune_images(Some(PruneImagesOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(map_err)?;
        let removed = answer
            .images_deleted
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| item.deleted)
            .filter(|id| image_ids.contains(id))
            .count();
        tracing::info!(
            removed,
            reclaimed_bytes = answer.space_reclaimed.unwrap_or(0),
            "pruned images"
        );
        Ok(u64::try_from(removed).unwrap_or(u64::MAX))
    }
}

/// Maps a bollard error onto the runtime's error kinds.
fn map_err(e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => RuntimeError::NotFound(message),
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } => RuntimeError::Conflict(message),
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Refused(if message.is_empty() {
            format!("HTTP {status_code}")
        } else {
            message
        }),
        BollardError::DockerStreamError { error } => RuntimeError::Refused(error),
        e @ (BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. }
        | BollardError::RequestTimeoutError
        | BollardError::SocketNotFoundError(_)
        | BollardError::UnsupportedURISchemeError { .. }) => {
            RuntimeError::Unavailable(e.to_string())
        }
        other => RuntimeError::Refused(other.to_string()),
    }
}

/// The container of one list entry, or `None` for an entry without an id.
fn observed(s: ContainerSummary) -> Option<ObservedContainer> {
    let id = s.id?;
    let names = s.names.unwrap_or_default();
    // Legacy links add names such as "/other/alias"; the container's own name has one slash.
    let name = names
        .iter()
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .find(|n| !n.contains('/'))
        .or_else(|| names.first().map(|n| n.trim_start_matches('/')))
        .unwrap_or_default()
        .to_owned();
    let state = match s.state {
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::STOPPING) => {
            ContainerState::Running
        }
        Some(ContainerSummaryStateEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::EXITED) => ContainerState::Exited,
        Some(ContainerSummaryStateEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerSummaryStateEnum::DEAD) => ContainerState::Dead,
        Some(ContainerSummaryStateEnum::CREATED | ContainerSummaryStateEnum::EMPTY) | None => {
            ContainerState::Created
        }
    };
    Some(ObservedContainer {
        id: ContainerId(id),
        name,
        labels: s.labels.unwrap_or_default().into_iter().collect(),
        state,
        health: health_from_status(s.status.as_deref().unwrap_or_default()),
        created_at: s.created.and_then(|c| u64::try_from(c).ok()).unwrap_or(0),
    })
}

/// The health in a list entry's status text: "Up 3 minutes (healthy)", "(unhealthy)",
/// "(health: starting)"; no parenthesis means no HEALTHCHECK.
fn health_from_status(status: &str) -> Health {
    if status.contains("(healthy)") {
        Health::Healthy
    } else if status.contains("(unhealthy)") {
        Health::Unhealthy
    } else if status.contains("(health: starting)") {
        Health::Starting
    } else {
        Health::None
    }
}

/// What the engine says when a registry cannot be reached, as opposed to a registry that
/// answered no (unknown manifest, denied, unauthorized): name resolution, connection and
/// timeout failures of its HTTP client, and 5xx answers.
const UNREACHABLE_REGISTRY: [&str; 16] = [
    "no such host",
    "connection refused",
    "connection reset",
    "network is unreachable",
    "no route to host",
    "i/o timeout",
    "timeout exceeded",
    "tls handshake timeout",
    "server misbehaving",
    "request canceled",
    "unexpected eof",
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway timeout",
    "temporary failure in name resolution",
];

/// A failed pull as the worker needs it: [`RuntimeError::RegistryUnreachable`] when the engine
/// could not reach the registry, the engine's own error otherwise.
fn pull_failure(error: RuntimeError) -> RuntimeError {
    match error {
        RuntimeError::Refused(message) | RuntimeError::NotFound(message)
            if registry_unreachable(&message) =>
        {
            RuntimeError::RegistryUnreachable(message)
        }
        other => other,
    }
}

fn registry_unreachable(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    UNREACHABLE_REGISTRY.iter().any(|m| message.contains(m))
        || message.contains("received unexpected http status: 5")
}

/// `from_image` and `tag` for the engine's pull: exactly one tag or digest, `latest` when the
/// reference has neither (an empty tag would pull every tag). `host:5000/name` has no tag.
fn pull_reference(image: &str) -> Result<(String, String), RuntimeError> {
    let r = ImageRef::parse(image)
        .map_err(|e| RuntimeError::Refused(format!("image reference {image:?}: {e}")))?;
    let name = match &r.registry {
        Some(registry) => format!("{registry}/{}", r.repository),
        None => r.repository.clone(),
    };
    // With both, the digest decides what is pulled (as `docker pull name:tag@digest` does).
    let tag = r.digest.or(r.tag).unwrap_or_else(|| "latest".to_owned());
    Ok((name, tag))
}

/// Whether an engine 404 message says the network `name` does not exist.
fn names_missing_network(message: &str, name: &str) -> bool {
    message.contains(&format!("network {name} not found"))
        || message.ends_with(&format!("No such network: {name}"))
}

/// Whether the container's networks include `name`.
fn uses_network(mode: &NetworkMode, name: &str) -> bool {
    matches!(mode, NetworkMode::Networks(list) if list.iter().any(|n| n == name))
}

/// The networks to connect after create: all but the first, without repeats.
fn extra_networks(mode: &NetworkMode) -> Vec<String> {
    let NetworkMode::Networks(list) = mode else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    list.iter()
        .filter(|n| seen.insert(n.as_str()))
        .skip(1)
        .cloned()
        .collect()
}

/// A `--device` value: `host[:container[:perms]]`, or `host:perms`; perms default to `rwm`.
fn device_mapping(device: &str) -> DeviceMapping {
    let is_perms = |p: &str| !p.is_empty() && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'));
    let parts: Vec<&str> = device.splitn(3, ':').collect();
    let (host, container, perms) = match parts.as_slice() {
        [host, perms] if is_perms(perms) => (*host, *host, *perms),
        [host, container] => (*host, *container, "rwm"),
        [host, container, perms] => (*host, *container, *perms),
        _ => (device, device, "rwm"),
    };
    DeviceMapping {
        path_on_host: Some(host.to_owned()),
        path_in_container: Some(container.to_owned()),
        cgroup_permissions: Some(perms.to_owned()),
    }
}

/// The engine's healthcheck: `["NONE"]` to disable, else the parts given, durations in
/// nanoseconds; a part left out is not sent, so the engine keeps the image's.
fn health_config(healthcheck: &Healthcheck) -> HealthConfig {
    const NANOS_PER_SEC: i64 = 1_000_000_000;
    match healthcheck {
        Healthcheck::Disable => HealthConfig {
            test: Some(vec!["NONE".to_owned()]),
            ..HealthConfig::default()
        },
        Healthcheck::Check(probe) => {
            let nanos = |secs: Option<u32>| secs.map(|s| i64::from(s) * NANOS_PER_SEC);
            HealthConfig {
                test: probe.test.as_ref().map(|t| t.to_args()),
                interval: nanos(probe.interval_secs),
                timeout: nanos(probe.timeout_secs),
                retries: probe.retries.map(i64::from),
                start_period: nanos(probe.start_period_secs),
                start_interval: None,
            }
        }
    }
}

/// The engine's create body for a spec (networks beyond the first are connected later).
fn container_body(spec: &ContainerSpec) -> Result<ContainerCreateBody, RuntimeError> {
    let limit = |what: &str, v: Option<u64>| {
        v.map(|v| {
            i64::try_from(v)
                .map_err(|_| RuntimeError::Refused(format!("{what} limit {v} is too large")))
        })
        .transpose()
    };
    let mut port_bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for p in &spec.ports {
        let key = format!("{}/tcp", p.container);
        let binding = DockerPortBinding {
            host_ip: Some(String::new()),
            host_port: Some(p.host.to_string()),
        };
        let entry = port_bindings.entry(key.clone()).or_insert_with(|| {
            exposed.push(key);
            Some(Vec::new())
        });
        if let Some(list) = entry {
            list.push(binding);
        }
    }
    let network_mode = match &spec.network {
        NetworkMode::Host => Some("host".to_owned()),
        NetworkMode::None => Some("none".to_owned()),
        NetworkMode::Networks(list) => list.first().cloned(),
    };
    let restart = if spec.restart_unless_stopped {
        RestartPolicyNameEnum::UNLESS_STOPPED
    } else {
        RestartPolicyNameEnum::NO
    };
    let host_config = HostConfig {
        binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
        devices: (!spec.devices.is_empty())
            .then(|| spec.devices.iter().map(|d| device_mapping(d)).collect()),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        privileged: Some(spec.privileged),
        restart_policy: Some(RestartPolicy {
            name: Some(restart),
            maximum_retry_count: None,
        }),
        memory: limit("memory", spec.memory_bytes)?,
        nano_cpus: limit("cpu", spec.nano_cpus)?,
        network_mode,
        ..HostConfig::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(
            spec.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        healthcheck: spec.healthcheck.as_ref().map(health_config),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nebula_core::schedule::PortBinding;

    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "site-1".into(),
            image: "127.0.0.1:5000/team/site:v1".into(),
            env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "x=y".into())]),
            ports: vec![
                PortBinding {
                    host: 8000,
                    container: 80,
                },
                PortBinding {
                    host: 8443,
                    container: 443,
                },
            ],
            binds: vec!["/data:/data:ro".into()],
            devices: vec!["/dev/fuse".into()],
            privileged: true,
            network: NetworkMode::Networks(vec!["nebula".into(), "bridge".into(), "nebula".into()]),
            restart_unless_stopped: true,
            memory_bytes: Some(64 << 20),
            nano_cpus: Some(500_000_000),
            command: Some(vec!["sleep".into(), "1".into()]),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            healthcheck: None,
            labels: BTreeMap::from([("orchestrator".into(), "nebula".into())]),
        }
    }

    #[test]
    fn healthcheck_maps_to_nanoseconds_and_none_disables() {
        use nebula_core::healthcheck::{HealthTest, Probe};
        assert_eq!(container_body(&spec()).unwrap().healthcheck, None);
        let probe = Probe {
            test: Some(HealthTest::Shell("wget -q -O- http://127.0.0.1/".into())),
            interval_secs: Some(2),
            timeout_secs: Some(1),
            retries: Some(4),
            start_period_secs: Some(90),
        };
        let checked = ContainerSpec {
            healthcheck: Some(Healthcheck::Check(probe)),
            ..spec()
        };
        assert_eq!(
            container_body(&checked).unwrap().healthcheck,
            Some(HealthConfig {
                test: Some(vec![
                    "CMD-SHELL".into(),
                    "wget -q -O- http://127.0.0.1/".into()
                ]),
                interval: Some(2_000_000_000),
                timeout: Some(1_000_000_000),
                retries: Some(4),
                start_period: Some(90_000_000_000),
                start_interval: None,
            })
        );
        // Only the interval: the image's test and the rest are kept (left out).
        let paced = ContainerSpec {
            healthcheck: Some(Healthcheck::Check(Probe {
                interval_secs: Some(86_400),
                ..Probe::default()
            })),
            ..spec()
        };
        let h = container_body(&paced).unwrap().healthcheck.unwrap();
        assert_eq!(
            (h.test, h.interval, h.timeout, h.retries),
            (None, Some(86_400_000_000_000), None, None)
        );
        let disabled = ContainerSpec {
            healthcheck: Some(Healthcheck::Disable),
            ..spec()
        };
        assert_eq!(
            container_body(&disabled).unwrap().healthcheck.unwrap().test,
            Some(vec!["NONE".to_owned()])
        );
    }

    #[test]
    fn body_maps_every_field() {
        let b = container_body(&spec()).unwrap();
        assert_eq!(b.image.as_deref(), Some("127.0.0.1:5000/team/site:v1"));
        assert_eq!(b.env, Some(vec!["A=1".to_owned(), "B=x=y".to_owned()]));
        assert_eq!(b.labels.unwrap()["orchestrator"], "nebula");
        let mut exposed = b.exposed_ports.unwrap();
        exposed.sort();
        assert_eq!(exposed, ["443/tcp", "80/tcp"]);
        assert_eq!(b.cmd.unwrap(), ["sleep", "1"]);
        assert_eq!(b.entrypoint.unwrap(), ["/bin/sh", "-c"]);
        let h = b.host_config.unwrap();
        let ports = h.port_bindings.unwrap();
        let p80 = ports["80/tcp"].clone().unwrap();
        assert_eq!(p80[0].host_port.as_deref(), Some("8000"));
        assert_eq!(p80[0].host_ip.as_deref(), Some(""));
        assert_eq!(h.binds.unwrap(), ["/data:/data:ro"]);
        let d = &h.devices.unwrap()[0];
        assert_eq!(
            (
                d.path_on_host.as_deref(),
                d.path_in_container.as_deref(),
                d.cgroup_permissions.as_deref()
            ),
            (Some("/dev/fuse"), Some("/dev/fuse"), Some("rwm"))
        );
        assert_eq!(h.privileged, Some(true));
        assert_eq!(
            h.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        assert_eq!((h.memory, h.nano_cpus), (Some(64 << 20), Some(500_000_000)));
        assert_eq!(h.network_mode.as_deref(), Some("nebula"));
        assert_eq!(extra_networks(&spec().network), ["bridge"]);
    }

    #[test]
    fn body_network_modes_and_restart() {
        let mut s = spec();
        s.network = NetworkMode::Host;
        s.restart_unless_stopped = false;
        s.ports.clear();
        let b = container_body(&s).unwrap();
        let h = b.host_config.unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("host"));
        assert_eq!(
            h.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        assert!(b.exposed_ports.is_none() && h.port_bindings.is_none());
        s.network = NetworkMode::None;
        assert_eq!(
            container_body(&s)
                .unwrap()
                .host_config
                .unwrap()
                .network_mode
                .as_deref(),
            Some("none")
        );
        assert!(extra_networks(&s.network).is_empty());
        s.memory_bytes = Some(u64::MAX);
        assert!(matches!(container_body(&s), Err(RuntimeError::Refused(_))));
    }

    #[test]
    fn same_container_port_on_two_host_ports() {
        let mut s = spec();
        s.ports = vec![
            PortBinding {
                host: 8000,
                container: 80,
            },
            PortBinding {
                host: 8001,
                container: 80,
            },
        ];
        let b = container_body(&s).unwrap();
        assert_eq!(b.exposed_ports.unwrap(), ["80/tcp"]);
        assert_eq!(
            b.host_config.unwrap().port_bindings.unwrap()["80/tcp"]
                .as_ref()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn devices_parse() {
        let d = device_mapping("/dev/a:/dev/b:r");
        assert_eq!(
            (
                d.path_in_container.as_deref(),
                d.cgroup_permissions.as_deref()
            ),
            (Some("/dev/b"), Some("r"))
        );
        let d = device_mapping("/dev/a:/dev/b");
        assert_eq!(
            (
                d.path_in_container.as_deref(),
                d.cgroup_permissions.as_deref()
            ),
            (Some("/dev/b"), Some("rwm"))
        );
        let d = device_mapping("/dev/a:rw");
        assert_eq!(
            (
                d.path_in_container.as_deref(),
                d.cgroup_permissions.as_deref()
            ),
            (Some("/dev/a"), Some("rw"))
        );
    }

    #[test]
    fn pull_failures_tell_an_unreachable_registry_from_a_refusal() {
        let unreachable = [
            r#"Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.0.0.53:53: no such host"#,
            r#"Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused"#,
            r#"Get "https://r.example/v2/": net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)"#,
            r#"Get "https://r.example/v2/": dial tcp 10.1.1.1:443: i/o timeout"#,
            "received unexpected HTTP status: 503 Service Unavailable",
            "error parsing HTTP 500 response body: 500 Internal Server Error",
        ];
        for m in unreachable {
            assert!(
                matches!(
                    pull_failure(RuntimeError::Refused(m.into())),
                    RuntimeError::RegistryUnreachable(_)
                ),
                "{m}"
            );
        }
        let refused = [
            "manifest for 127.0.0.1:5000/nebula-test/busybox:nope not found: manifest unknown: manifest unknown",
            "pull access denied for site, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            "unauthorized: authentication required",
        ];
        for m in refused {
            assert!(
                matches!(
                    pull_failure(RuntimeError::Refused(m.into())),
                    RuntimeError::Refused(_)
                ),
                "{m}"
            );
            assert!(
                matches!(
                    pull_failure(RuntimeError::NotFound(m.into())),
                    RuntimeError::NotFound(_)
                ),
                "{m}"
            );
        }
        // The engine itself being away is not the registry's doing.
        assert!(matches!(
            pull_failure(RuntimeError::Unavailable("socket gone".into())),
            RuntimeError::Unavailable(_)
        ));
    }

    #[test]
    fn pull_reference_splits_tag_and_digest() {
        let p = |s: &str| pull_reference(s).unwrap();
        assert_eq!(p("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            p("127.0.0.1:5000/a/b"),
            ("127.0.0.1:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            p("host:5000/name:tag"),
            ("host:5000/name".into(), "tag".into())
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            p(&format!("host:5000/name@{d}")),
            ("host:5000/name".into(), d.clone())
        );
        assert_eq!(p(&format!("name:v1@{d}")), ("name".into(), d));
        assert!(pull_reference("Bad Name").is_err());
    }

    #[test]
    fn health_and_state_from_summary() {
        assert_eq!(
            health_from_status("Up 3 seconds (healthy)"),
            Health::Healthy
        );
        assert_eq!(
            health_from_status("Up 3 seconds (unhealthy)"),
            Health::Unhealthy
        );
        assert_eq!(
            health_from_status("Up 1 second (health: starting)"),
            Health::Starting
        );
        assert_eq!(health_from_status("Exited (0) 2 minutes ago"), Health::None);
        let s = ContainerSummary {
            id: Some("abc".into()),
            names: Some(vec!["/web/db".into(), "/db".into()]),
            state: Some(ContainerSummaryStateEnum::EXITED),
            status: Some("Exited (1) 1 second ago".into()),
            created: Some(1_700_000_000),
            labels: Some(HashMap::from([("k".into(), "v".into())])),
            ..ContainerSummary::default()
        };
        let c = observed(s).unwrap();
        assert_eq!(
            (c.name.as_str(), c.state, c.created_at),
            ("db", ContainerState::Exited, 1_700_000_000)
        );
        assert_eq!(c.label("k"), Some("v"));
    }

    #[test]
    fn errors_map_by_status() {
        let server = |status_code, message: &str| BollardError::DockerResponseServerError {
            status_code,
            message: message.into(),
        };
        assert!(
            matches!(map_err(server(404, "no such container")), RuntimeError::NotFound(m) if m == "no such container")
        );
        assert!(matches!(
            map_err(server(409, "name in use")),
            RuntimeError::Conflict(_)
        ));
        assert!(
            matches!(map_err(server(500, "port is already allocated")), RuntimeError::Refused(m) if m.contains("port"))
        );
        assert!(matches!(map_err(server(400, "")), RuntimeError::Refused(m) if m == "HTTP 400"));
        assert!(matches!(
            map_err(BollardError::RequestTimeoutError),
            RuntimeError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(BollardError::SocketNotFoundError("/x".into())),
            RuntimeError::Unavailable(_)
        ));
        assert!(matches!(
            map_err(BollardError::DockerStreamError {
                error: "denied".into()
            }),
            RuntimeError::Refused(_)
        ));
    }
}
