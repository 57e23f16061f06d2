//! The Runtime seam: the container engine of one host.

use std::time::Duration;

use async_trait::async_trait;

use crate::container::{ContainerId, ContainerSpec, ObservedContainer};
use crate::schedule::HostResources;

/// Credentials for a private registry.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password (never logged).
    pub password: String,
    /// The registry the credentials are for (`https://index.docker.io/v1/` by default).
    pub server: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Why a runtime call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No such container or image.
    #[error("not found: {0}")]
    NotFound(String),
    /// The name is taken, or the container is in a state that forbids the call.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The engine cannot be reached now.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// The engine refused the call (bad spec, port in use, pull denied, ...).
    #[error("engine refused: {0}")]
    Refused(String),
    /// A pull failed because the image's registry cannot be reached now (name resolution,
    /// connection, timeout, or a 5xx answer); retrying later may work.
    #[error("registry unreachable: {0}")]
    RegistryUnreachable(String),
}

/// One host's container engine.
///
/// # Guarantees (checked by `testing::contract::runtime`)
/// - `create` makes a started container with exactly the spec's name and labels; a second
///   `create` of the same name fails with `Conflict`.
/// - `list` returns every container (running or not) carrying all the given labels.
/// - `remove` of a missing container is `NotFound`; of a running one stops it first.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The host's CPUs and memory.
    async fn host(&self) -> Result<HostResources, RuntimeError>;
    /// Containers carrying every `key=value` label given.
    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ObservedContainer>, RuntimeError>;
    /// Creates and starts a container; networks that do not exist are an error except
    /// `nebula`, which is created.
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError>;
    /// Starts a stopped container.
    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError>;
    /// Restarts a running container.
    async fn restart(&self, id: &ContainerId) -> Result<(), RuntimeError>;
    /// Stops (waiting `grace`, then killing) and removes a container.
    async fn remove(&self, id: &ContainerId, grace: Duration) -> Result<(), RuntimeError>;
    /// Pulls an image.
    async fn pull(&self, image: &str, auth: Option<&RegistryAuth>) -> Result<(), RuntimeError>;
    /// Whether the engine holds an image.
    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        Ok(self.image_id(image).await?.is_some())
    }
    /// The id (`sha256:...`) of the image the engine holds for a reference, if it holds one.
    async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError>;
    /// Removes every image no container uses; returns how many were removed.
    async fn prune_images(&self) -> Result<u64, RuntimeError>;
}
