//! What a container should be ([`ContainerSpec`]) and what the engine says it is
//! ([`ObservedContainer`]), tied together by labels and a spec hash.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::App;
use crate::schedule::{PortBinding, container_name, port_bindings};

/// Label on every container Nebula manages.
pub const LABEL_ORCHESTRATOR: &str = "orchestrator";
/// Value of [`LABEL_ORCHESTRATOR`].
pub const ORCHESTRATOR: &str = "nebula";
/// Label: the app's name (as the original's `app_name` label).
pub const LABEL_APP_NAME: &str = "app_name";
/// Label: `app` or `cron_job`.
pub const LABEL_CONTAINER_TYPE: &str = "container_type";
/// Label: the hash of everything that defines the container.
pub const LABEL_SPEC_HASH: &str = "nebula.spec_hash";
/// Label: the app version the container was created for (informational).
pub const LABEL_APP_ID: &str = "nebula.app_id";
/// Label: the app incarnation the container belongs to.
pub const LABEL_INCARNATION: &str = "nebula.incarnation";
/// Label: the 1-based slot.
pub const LABEL_SLOT: &str = "nebula.slot";
/// Label: the Nebula instance that created the container (standalone mode), so two instances
/// sharing an engine never remove each other's containers.
pub const LABEL_OWNER: &str = "nebula.owner";

/// The container's network attachment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum NetworkMode {
    /// The host's network stack.
    Host,
    /// No network.
    None,
    /// Created on the first network, then connected to the others.
    Networks(Vec<String>),
}

/// Everything the runtime needs to create one container.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContainerSpec {
    /// `<app>-<slot>`.
    pub name: String,
    /// The reference to run (`:latest` added when no tag or digest is given).
    pub image: String,
    /// Environment, sorted by key.
    pub env: BTreeMap<String, String>,
    /// Host-to-container TCP port bindings.
    pub ports: Vec<PortBinding>,
    /// Binds, as `docker run -v`.
    pub binds: Vec<String>,
    /// Devices, as `docker run --device`.
    pub devices: Vec<String>,
    /// Privileged mode.
    pub privileged: bool,
    /// Network attachment.
    pub network: NetworkMode,
    /// Restart policy `unless-stopped` (apps) or none (cron jobs).
    pub restart_unless_stopped: bool,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<u64>,
    /// Command override.
    pub command: Option<Vec<String>>,
    /// Entrypoint override.
    pub entrypoint: Option<Vec<String>>,
    /// Healthcheck override; `None`: the image's. Left out of the hashed form when `None`, so
    /// containers created before the field existed keep their hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::healthcheck::Healthcheck>,
    /// Labels, including the identity labels and the spec hash.
    #[serde(skip)]
    pub labels: BTreeMap<String, String>,
}

impl ContainerSpec {
    /// The spec hash stored in [`LABEL_SPEC_HASH`].
    #[must_use]
    pub fn hash(&self) -> &str {
        self.labels.get(LABEL_SPEC_HASH).map_or("", String::as_str)
    }
}

/// The container spec of slot `slot` of `app`, or `None` when a host port would pass 65535.
///
/// The hash covers every field that shapes the container, the app's incarnation and its restart
/// generation, and nothing else: a start, a stop or a change to another field of the document
/// (such as `rolling_restart`) never replaces a container.
#[must_use]
pub fn app_container(app: &App, slot: u32) -> Option<ContainerSpec> {
    let s = &app.spec;
    let image = crate::image::ImageRef::parse(&s.docker_image)
        .map_or_else(|_| s.docker_image.clone(), |r| r.canonical());
    let network = match s.networks.first().map(String::as_str) {
        Some("host") => NetworkMode::Host,
        Some("none") => NetworkMode::None,
        _ => NetworkMode::Networks(s.networks.clone()),
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let mut spec = ContainerSpec {
        name: container_name(app.app_name.as_str(), slot),
        image,
        env: s.env_vars.clone(),
        ports: port_bindings(&s.starting_ports, slot)?,
        binds: s.volumes.clone(),
        devices: s.devices.clone(),
        privileged: s.privileged,
        network,
        restart_unless_stopped: true,
        memory_bytes: s.memory_limit_mb.map(|mb| mb.saturating_mul(1024 * 1024)),
        nano_cpus: s.cpu_limit.map(|c| (c * 1e9) as u64),
        command: s.run_command.clone(),
        entrypoint: s.entrypoint.clone(),
        healthcheck: s.healthcheck.clone(),
        labels: BTreeMap::new(),
    };
    let mut hasher = Sha256::new();
    hasher.update(serde_json::to_vec(&spec).unwrap_or_default());
    hasher.update(app.incarnation.to_le_bytes());
    hasher.update(app.restart_generation.to_le_bytes());
    let digest = hasher.finalize();
    let hash: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    spec.labels = BTreeMap::from([
        (LABEL_ORCHESTRATOR.to_owned(), ORCHESTRATOR.to_owned()),
        (LABEL_APP_NAME.to_owned(), app.app_name.to_string()),
        (LABEL_CONTAINER_TYPE.to_owned(), "app".to_owned()),
        (LABEL_SPEC_HASH.to_owned(), hash),
        (LABEL_APP_ID.to_owned(), app.app_id.to_string()),
        (LABEL_INCARNATION.to_owned(), app.incarnation.to_string()),
        (LABEL_SLOT.to_owned(), slot.to_string()),
    ]);
    Some(spec)
}

/// An engine's container id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(pub String);

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The engine's view of a container's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Being restarted by the engine's restart policy.
    Restarting,
    /// Exited (stopped or crashed).
    Exited,
    /// Being removed.
    Removing,
    /// Dead: could not be removed.
    Dead,
}

/// Docker HEALTHCHECK status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// The image has no HEALTHCHECK.
    None,
    /// Not yet decided.
    Starting,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
}

/// A container as the engine reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedContainer {
    /// The engine's id.
    pub id: ContainerId,
    /// The name, without Docker's leading slash.
    pub name: String,
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// Life state.
    pub state: ContainerState,
    /// Health state.
    pub health: Health,
    /// Unix seconds when the container was created.
    pub created_at: u64,
}

impl ObservedContainer {
    /// The value of a label.
    #[must_use]
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// The app this container belongs to, if Nebula manages it as an app container.
    #[must_use]
    pub fn app_name(&self) -> Option<&str> {
        if self.label(LABEL_ORCHESTRATOR) == Some(ORCHESTRATOR)
            && self.label(LABEL_CONTAINER_TYPE) == Some("app")
        {
            self.label(LABEL_APP_NAME)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppName, AppSpec, StartingPort};

    fn app() -> App {
        let mut spec = AppSpec::with_image("site");
        spec.starting_ports = vec![StartingPort::Mapped {
            host: 8000,
            container: 80,
        }];
        App {
            app_name: AppName::parse("site").unwrap(),
            app_id: 1,
            incarnation: 1,
            restart_generation: 0,
            restart_mode: crate::model::RestartMode::AsConfigured,
            prune_generation: 0,
            spec,
            fleet_rollout: None,
        }
    }

    #[test]
    fn hash_ignores_version_and_running_but_not_spec() {
        let a = app();
        let h = app_container(&a, 1).unwrap().hash().to_owned();
        let mut b = a.clone();
        b.app_id = 9;
        b.spec.rolling_restart = true;
        assert_eq!(app_container(&b, 1).unwrap().hash(), h);
        let mut c = a.clone();
        c.spec.env_vars.insert("X".into(), "1".into());
        assert_ne!(app_container(&c, 1).unwrap().hash(), h);
        let mut d = a.clone();
        d.restart_generation = 1;
        assert_ne!(app_container(&d, 1).unwrap().hash(), h);
        let mut e = a;
        e.incarnation = 2;
        assert_ne!(app_container(&e, 1).unwrap().hash(), h);
    }

    #[test]
    fn hash_without_healthcheck_is_the_one_before_the_field_existed() {
        // Pinned: the hash of this spec as it was before `healthcheck` existed, so an upgrade
        // replaces no container of an app without the field.
        assert_eq!(
            app_container(&app(), 1).unwrap().hash(),
            "784a666a7cc9eefbcb2f87f2"
        );
    }

    #[test]
    fn hash_follows_the_healthcheck() {
        use crate::healthcheck::{HealthTest, Healthcheck, Probe};
        let plain = app_container(&app(), 1).unwrap().hash().to_owned();
        let with = |h: Healthcheck| {
            let mut a = app();
            a.spec.healthcheck = Some(h);
            let spec = app_container(&a, 1).unwrap();
            (spec.healthcheck.clone(), spec.hash().to_owned())
        };
        let probe = Probe {
            test: Some(HealthTest::Cmd(vec!["true".into()])),
            interval_secs: Some(5),
            ..Probe::default()
        };
        let (carried, checked) = with(Healthcheck::Check(probe.clone()));
        assert_eq!(carried, Some(Healthcheck::Check(probe.clone())));
        assert_ne!(checked, plain);
        let (_, slower) = with(Healthcheck::Check(Probe {
            interval_secs: Some(6),
            ..probe
        }));
        assert_ne!(slower, checked);
        let (_, disabled) = with(Healthcheck::Disable);
        assert!(disabled != plain && disabled != checked);
    }

    #[test]
    fn slot_shapes_name_and_ports() {
        let s = app_container(&app(), 3).unwrap();
        assert_eq!(s.name, "site-3");
        assert_eq!(
            s.ports,
            vec![PortBinding {
                host: 8002,
                container: 80
            }]
        );
        assert_eq!(s.image, "site:latest");
        assert_eq!(s.labels[LABEL_SLOT], "3");
    }
}
