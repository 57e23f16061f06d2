use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use crate::container::{ContainerId, ContainerSpec, ContainerState, Health, ObservedContainer};
use crate::runtime::{RegistryAuth, Runtime, RuntimeError};
use crate::schedule::HostResources;

/// One call made to the [`FakeRuntime`], for tests that check what the worker did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `create` of a container name.
    Create(String),
    /// `start` of a container name.
    Start(String),
    /// `restart` of a container name.
    Restart(String),
    /// `remove` of a container name.
    Remove(String),
    /// `pull` of an image.
    Pull(String),
    /// `prune_images`.
    Prune,
}

#[derive(Debug, Default)]
struct State {
    containers: BTreeMap<String, ObservedContainer>,
    images: BTreeSet<String>,
    registry: BTreeSet<String>,
    calls: Vec<Call>,
    /// Pulls fail with `RegistryUnreachable` while this is set.
    registry_down: bool,
    failures: VecDeque<(&'static str, RuntimeError)>,
    next_id: u64,
    now: u64,
}

/// The id the fake engine gives the image it holds for `image`.
#[must_use]
pub fn fake_image_id(image: &str) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(image.as_bytes()))
}

/// A [`Runtime`] in memory: containers with state transitions, a local image cache and a
/// "registry" of pullable images, a typed call log and injectable failures.
#[derive(Clone, Debug)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    host: HostResources,
}

impl FakeRuntime {
    /// A host with `cpus` CPUs and 8 GiB whose registry offers `pullable` images.
    #[must_use]
    pub fn new(cpus: u32, pullable: &[&str]) -> Self {
        let state = State {
            registry: pullable.iter().map(|s| (*s).to_owned()).collect(),
            ..State::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            host: HostResources {
                cpus,
                memory_mb: 8192,
            },
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Every call so far.
    #[must_use]
    pub fn calls(&self) -> Vec<Call> {
        self.with(|s| s.calls.clone())
    }

    /// Forgets the call log.
    pub fn clear_calls(&self) {
        self.with(|s| s.calls.clear());
    }

    /// Makes the next call of `op` (`"create"`, `"pull"`, ...) fail with `err`.
    pub fn fail_next(&self, op: &'static str, err: RuntimeError) {
        self.with(|s| s.failures.push_back((op, err)));
    }

    /// Sets the fake clock (unix seconds) used for `created_at`.
    pub fn set_now(&self, now: u64) {
        self.with(|s| s.now = now);
    }

    /// Changes a container's state and health, as the engine would after a crash or check.
    pub fn set_state(&self, name: &str, state: ContainerState, health: Health) {
        self.with(|s| {
            if let Some(c) = s.containers.get_mut(name) {
                c.state = state;
                c.health = health;
            }
        });
    }

    /// Puts an image in the engine's cache without a registry (`docker load`, `docker build`).
    pub fn load_image(&self, image: &str) {
        self.with(|s| s.images.insert(image.to_owned()));
    }

    /// Makes every pull fail as if the registry could not be reached (`down`), or serve again.
    pub fn set_registry_down(&self, down: bool) {
        self.with(|s| s.registry_down = down);
    }

    /// Removes a container behind Nebula's back.
    pub fn remove_by_hand(&self, name: &str) {
        self.with(|s| s.containers.remove(name));
    }

    /// Containers by name.
    #[must_use]
    pub fn containers(&self) -> BTreeMap<String, ObservedContainer> {
        self.with(|s| s.containers.clone())
    }

    fn check(&self, op: &'static str) -> Result<(), RuntimeError> {
        self.with(|s| match s.failures.iter().position(|(o, _)| *o == op) {
            Some(i) => Err(s
                .failures
                .remove(i)
                .map_or_else(|| RuntimeError::Refused(op.into()), |(_, e)| e)),
            None => Ok(()),
        })
    }

    fn find(s: &mut State, id: &ContainerId) -> Result<String, RuntimeError> {
        s.containers
            .values()
            .find(|c| &c.id == id)
            .map(|c| c.name.clone())
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn host(&self) -> Result<HostResources, RuntimeError> {
        Ok(self.host)
    }

    async fn list(&self, labels: &[(&str, &str)]) -> Result<Vec<ObservedContainer>, RuntimeError> {
        self.check("list")?;
        Ok(self.with(|s| {
            s.containers
                .values()
                .filter(|c| labels.iter().all(|(k, v)| c.label(k) == Some(v)))
                .cloned()
                .collect()
        }))
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        self.check("create")?;
        self.with(|s| {
            s.calls.push(Call::Create(spec.name.clone()));
            if s.containers.contains_key(&spec.name) {
                return Err(RuntimeError::Conflict(format!(
                    "name {} is taken",
                    spec.name
                )));
            }
            if !s.images.contains(&spec.image) {
                return Err(RuntimeError::NotFound(format!("image {}", spec.image)));
            }
            let host_ports: BTreeSet<u16> = s
                .containers
                .values()
                .filter(|c| c.state == ContainerState::Running)
                .flat_map(|c| {
                    c.labels
                        .get("fake.ports")
                        .map(|p| {
                            p.split(',')
                                .filter_map(|x| x.parse().ok())
                                .collect::<Vec<u16>>()
                        })
                        .unwrap_or_default()
                })
                .collect();
            if let Some(p) = spec.ports.iter().find(|p| host_ports.contains(&p.host)) {
                return Err(RuntimeError::Refused(format!(
                    "port {} is already allocated",
                    p.host
                )));
            }
            s.next_id += 1;
            let mut labels = spec.labels.clone();
            let ports: Vec<String> = spec.ports.iter().map(|p| p.host.to_string()).collect();
            labels.insert("fake.ports".into(), ports.join(","));
            labels.insert("fake.image".into(), spec.image.clone());
            let id = ContainerId(format!("fake{:012}", s.next_id));
            s.containers.insert(
                spec.name.clone(),
                ObservedContainer {
                    id: id.clone(),
                    name: spec.name.clone(),
                    labels,
                    state: ContainerState::Running,
                    health: Health::None,
                    created_at: s.now,
                },
            );
            Ok(id)
        })
    }

    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.check("start")?;
        self.with(|s| {
            let name = Self::find(s, id)?;
            s.calls.push(Call::Start(name.clone()));
            if let Some(c) = s.containers.get_mut(&name) {
                c.state = ContainerState::Running;
            }
            Ok(())
        })
    }

    async fn restart(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.check("restart")?;
        self.with(|s| {
            let name = Self::find(s, id)?;
            s.calls.push(Call::Restart(name.clone()));
            if let Some(c) = s.containers.get_mut(&name) {
                c.state = ContainerState::Running;
                c.health = Health::None;
            }
            Ok(())
        })
    }

    async fn remove(&self, id: &ContainerId, _grace: Duration) -> Result<(), RuntimeError> {
        self.check("remove")?;
        self.with(|s| {
            let name = Self::find(s, id)?;
            s.calls.push(Call::Remove(name.clone()));
            s.containers.remove(&name);
            Ok(())
        })
    }

    async fn pull(&self, image: &str, _auth: Option<&RegistryAuth>) -> Result<(), RuntimeError> {
        self.check("pull")?;
        self.with(|s| {
            s.calls.push(Call::Pull(image.to_owned()));
            if s.registry_down {
                Err(RuntimeError::RegistryUnreachable(format!(
                    "lookup of the registry of {image}: no such host"
                )))
            } else if s.registry.contains(image) {
                s.images.insert(image.to_owned());
                Ok(())
            } else {
                Err(RuntimeError::NotFound(format!(
                    "image {image} is not in the registry"
                )))
            }
        })
    }

    async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        self.check("has_image")?;
        Ok(self.with(|s| s.images.contains(image).then(|| fake_image_id(image))))
    }

    async fn prune_images(&self) -> Result<u64, RuntimeError> {
        self.check("prune")?;
        Ok(self.with(|s| {
            s.calls.push(Call::Prune);
            let used: BTreeSet<String> = s
                .containers
                .values()
                .filter_map(|c| c.labels.get("fake.image").cloned())
                .collect();
            let before = s.images.len();
            s.images.retain(|i| used.contains(i));
            (before - s.images.len()) as u64
        }))
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_the_runtime_contract() {
        let rt = super::FakeRuntime::new(2, &["busybox:latest"]);
        super::super::contract::runtime(
            &rt,
            "busybox:latest",
            "nebula-missing/none:latest",
            "fake",
        )
        .await;
    }
}
