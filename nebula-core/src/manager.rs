//! The manager service: app commands -> Store (compare-and-swap) -> Bus.
//!
//! # Guarantees
//! - Nothing is stored when validation fails.
//! - Every acknowledged change gets its own `app_id` (+1 per change, never skipped or repeated,
//!   whatever number of managers share the store): writes are compare-and-swap on the store
//!   revision and retried on conflict.
//! - The full new document is published after it is stored, addressed to the app and to the
//!   device groups that list it (device group and cron job changes publish the whole state of
//!   each group concerned). A publish the bus refuses never fails the command: it stays
//!   pending and [`Manager::republish`] publishes the *current* state of what it was about as
//!   soon as the bus takes messages again — also after a restart, and from any other manager
//!   on the same store, because what was last published is kept in the store
//!   ([`outbox`]: a publish mark per app and device group).
//!
//! # Stored kinds
//! Every command reads and writes through the typed document layer (`manager::document`):
//! a stored kind implements `Document` (its collection, its key, its not-found / exists /
//! contended errors), and one generic `create`, `get`, `list`, `modify` (read-modify-CAS with
//! the retry) and `delete` serve every kind. Adding a stored kind: define the type, impl
//! `Document` next to its commands (a few lines), write the commands with the generic ops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::bus::{Bus, BusMessage};
use crate::device_group::DeviceGroupName;
use crate::model::{
    App, AppName, AppSpec, ContainersPer, PullPolicy, RestartMode, RolloutPolicy, StartingPort,
};
use crate::store::{Collection, Store, StoreError};
use crate::validate::{self, FieldError};
use crate::worker::{DesiredSource, DesiredState, Selection, SourceError};
use document::Document;

mod cron_jobs;
mod device_groups;
mod document;
pub mod outbox;
mod reports;
mod rollouts;

pub use rollouts::{
    DryRun, FleetWindow, PlannedStep, PolicyPatch, RolloutAction, RolloutError, RolloutStatus,
};
mod users;

/// How many times a write is retried when another manager changed the document meanwhile.
const CAS_ATTEMPTS: usize = 32;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// Create of an app that exists.
    #[error("app exists")]
    AppExists,
    /// Any command on an app that does not exist.
    #[error("app does not exist")]
    AppNotFound,
    /// Restart or roll of a stopped app.
    #[error("app is not running")]
    NotRunning,
    /// The input broke validation rules; nothing was stored.
    #[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The document kept changing under this write.
    #[error("too many concurrent writes to the same app; try again")]
    Contended,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A partial update: only the fields given change (the whitelist of PUT/PATCH `/update`).
#[derive(Clone, Debug, Default, PartialEq)]
#[allow(missing_docs)]
pub struct AppPatch {
    pub docker_image: Option<String>,
    pub starting_ports: Option<Vec<StartingPort>>,
    pub containers_per: Option<ContainersPer>,
    pub env_vars: Option<BTreeMap<String, String>>,
    pub running: Option<bool>,
    pub networks: Option<Vec<String>>,
    pub volumes: Option<Vec<String>>,
    pub devices: Option<Vec<String>>,
    pub privileged: Option<bool>,
    pub rolling_restart: Option<bool>,
    pub memory_limit_mb: Option<Option<u64>>,
    pub cpu_limit: Option<Option<f64>>,
    pub run_command: Option<Option<Vec<String>>>,
    pub entrypoint: Option<Option<Vec<String>>>,
    pub rollout: Option<RolloutPolicy>,
    pub healthcheck: Option<Option<crate::healthcheck::Healthcheck>>,
    pub pull_policy: Option<PullPolicy>,
}

impl AppPatch {
    /// Whether the patch changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Applies the patch to a spec.
    pub fn apply(self, spec: &mut AppSpec) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { spec.$f = v; } )* };
        }
        set!(
            docker_image,
            starting_ports,
            containers_per,
            env_vars,
            running,
            networks,
            volumes,
            devices,
            privileged,
            rolling_restart,
            memory_limit_mb,
            cpu_limit,
            run_command,
            entrypoint,
            rollout,
            healthcheck,
            pull_policy
        );
    }
}

/// What an app or cron job write did: its result, and the device groups that list the
/// document, whose `/info` state changed with it. Computed once per write, for the bus
/// messages and for the caller's caches.
#[derive(Clone, Debug, PartialEq)]
pub struct Touched<T> {
    /// The command's result (the new document).
    pub value: T,
    /// The groups that list the document (for a delete: those it was taken out of); `None`
    /// when they could not be read (a store failure, logged), so a cache must assume that every
    /// group changed.
    pub device_groups: Option<Vec<DeviceGroupName>>,
}

impl<T> Touched<T> {
    /// The result, without the groups.
    pub fn into_value(self) -> T {
        self.value
    }
}

/// A change of an existing app ([`Manager::change_app`]); each gets `app_id + 1`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AppCommand {
    /// Sets `running: false` ([`Manager::stop_app`]).
    Stop,
    /// Sets `running: true`, restarting a running app ([`Manager::start_app`]).
    Start,
    /// Replaces every container ([`Manager::restart_app`]); `rolling` forces waves.
    Restart {
        /// Waves whatever `rolling_restart` says (v1 `/roll`).
        rolling: bool,
    },
    /// Asks the app's workers to remove unused images ([`Manager::prune_app`]).
    Prune,
    /// Replaces the whole spec ([`Manager::update_app`]).
    Update(AppSpec),
    /// Changes only the fields given ([`Manager::patch_app`]).
    Patch(AppPatch),
}

/// The manager: validates, stores and publishes app commands.
#[derive(Clone)]
pub struct Manager {
    store: Arc<dyn Store>,
    bus: Option<Arc<dyn Bus>>,
    outbox: Arc<outbox::Outbox>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("bus", &self.bus.is_some())
            .field("pending_publishes", &self.pending_publishes())
            .finish_non_exhaustive()
    }
}

impl Document for App {
    const COLLECTION: Collection = Collection::Apps;
    type Error = ManagerError;
    fn key(&self) -> String {
        self.app_name.to_string()
    }
    fn not_found() -> ManagerError {
        ManagerError::AppNotFound
    }
    fn exists() -> ManagerError {
        ManagerError::AppExists
    }
    fn contended() -> ManagerError {
        ManagerError::Contended
    }
}

fn new_incarnation() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos());
    u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
}

impl Manager {
    /// A manager over `store`, publishing to `bus` when there is one.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, bus: Option<Arc<dyn Bus>>) -> Self {
        Self {
            store,
            bus,
            outbox: Arc::default(),
        }
    }

    /// The store, for health checks.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Publishes an app's new document for the app's subscribers and the workers of the
    /// device groups that list it (computed here, once), and returns it with those groups.
    async fn publish_app(&self, app: App) -> Touched<App> {
        let device_groups = self.device_groups_listing_app(&app.app_name).await;
        if self.bus.is_some() {
            self.publish(BusMessage::AppChanged {
                app: app.clone(),
                device_groups: device_groups.clone().unwrap_or_default(),
            })
            .await;
        }
        Touched {
            value: app,
            device_groups,
        }
    }

    /// Publishes `message`; a refusal is logged and left to [`Manager::republish`].
    async fn publish(&self, message: BusMessage) {
        if let Some(bus) = &self.bus
            && let Err(error) = self.publish_marked(bus.as_ref(), &message).await
        {
            let about = message.topics().swap_remove(0);
            tracing::warn!(%about, %error, "publish failed; the change is published as soon as the bus takes messages again");
            self.publish_pending(&message);
        }
    }

    /// Every app name, sorted.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_apps(&self) -> Result<Vec<AppName>, ManagerError> {
        Ok(self
            .list_full()
            .await?
            .into_iter()
            .map(|a| a.app_name)
            .collect())
    }

    /// Every app document, sorted by name.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_full(&self) -> Result<Vec<App>, ManagerError> {
        document::list(self.store.as_ref()).await
    }

    /// One app.
    ///
    /// # Errors
    /// [`ManagerError::AppNotFound`], store failures.
    pub async fn get_app(&self, name: &AppName) -> Result<App, ManagerError> {
        document::get(self.store.as_ref(), name.as_str())
            .await?
            .map(|(_, app)| app)
            .ok_or(ManagerError::AppNotFound)
    }

    /// Creates an app at `app_id` 1 with a new incarnation.
    ///
    /// # Errors
    /// [`ManagerError::Invalid`], [`ManagerError::AppExists`], store failures.
    pub async fn create_app(&self, name: AppName, spec: AppSpec) -> Result<App, ManagerError> {
        self.create_app_touched(name, spec)
            .await
            .map(Touched::into_value)
    }

    /// [`Self::create_app`], with the device groups that list the new app.
    ///
    /// # Errors
    /// As [`Self::create_app`].
    pub async fn create_app_touched(
        &self,
        name: AppName,
        spec: AppSpec,
    ) -> Result<Touched<App>, ManagerError> {
        validate::spec(&spec).map_err(ManagerError::Invalid)?;
        let app = App {
            app_name: name,
            app_id: 1,
            incarnation: new_incarnation(),
            restart_generation: 0,
            restart_mode: RestartMode::AsConfigured,
            prune_generation: 0,
            spec,
            fleet_rollout: None,
        };
        document::create(self.store.as_ref(), &app).await?;
        tracing::info!(app = %app.app_name, "app created");
        Ok(self.publish_app(app).await)
    }

    /// Deletes an app; workers remove its containers.
    ///
    /// # Errors
    /// [`ManagerError::AppNotFound`], store failures.
    pub async fn delete_app(&self, name: &AppName) -> Result<(), ManagerError> {
        self.delete_app_touched(name).await.map(Touched::into_value)
    }

    /// [`Self::delete_app`], with the device groups the app was taken out of.
    ///
    /// # Errors
    /// As [`Self::delete_app`].
    pub async fn delete_app_touched(&self, name: &AppName) -> Result<Touched<()>, ManagerError> {
        if self
            .store
            .get(Collection::Apps, name.as_str())
            .await?
            .is_none()
        {
            return Err(ManagerError::AppNotFound);
        }
        // Out of its device groups first (device_group_id + 1 each), so every reply that
        // lacks the app's document also carries the higher id workers act on; and again after
        // the delete, for a group that took the app meanwhile.
        let device_groups = self.remove_app_from_device_groups(name).await?;
        let incarnation =
            document::delete::<App, _>(self.store.as_ref(), name.as_str(), |stored| {
                Ok(document::decode::<App>(name.as_str(), stored)?.incarnation)
            })
            .await?;
        tracing::info!(app = %name, "app deleted");
        self.publish(BusMessage::AppDeleted {
            app_name: name.clone(),
            incarnation,
            device_groups: device_groups.clone(),
        })
        .await;
        let device_groups = match self.remove_app_from_device_groups(name).await {
            Ok(more) => {
                let mut all = device_groups;
                for group in more {
                    if !all.contains(&group) {
                        all.push(group);
                    }
                }
                Some(all)
            }
            Err(error) => {
                tracing::warn!(app = %name, %error, "second pass over device groups failed");
                None
            }
        };
        Ok(Touched {
            value: (),
            device_groups,
        })
    }

    /// Read-modify-write with compare-and-swap: `change` edits the app (and may refuse); the
    /// result is validated, gets `app_id + 1`, is stored and published.
    async fn modify(
        &self,
        name: &AppName,
        mut change: impl FnMut(&mut App) -> Result<(), ManagerError>,
    ) -> Result<Touched<App>, ManagerError> {
        let (app, _) = document::modify(self.store.as_ref(), name.as_str(), |app: &mut App| {
            change(app)?;
            validate::spec(&app.spec).map_err(ManagerError::Invalid)?;
            app.app_id += 1;
            Ok(())
        })
        .await?;
        tracing::info!(app = %name, app_id = app.app_id, "app changed");
        Ok(self.publish_app(app).await)
    }

    /// Runs one change of an existing app: validated, stored with `app_id + 1` and published;
    /// returns the new document with the device groups that list it.
    ///
    /// # Errors
    /// [`ManagerError::AppNotFound`]; [`ManagerError::NotRunning`] (restart of a stopped app);
    /// [`ManagerError::Invalid`] (also for an empty patch); store failures.
    pub async fn change_app(
        &self,
        name: &AppName,
        command: AppCommand,
    ) -> Result<Touched<App>, ManagerError> {
        match command {
            AppCommand::Stop => {
                self.modify(name, |app| {
                    app.spec.running = false;
                    Ok(())
                })
                .await
            }
            AppCommand::Start => {
                self.modify(name, |app| {
                    if app.spec.running {
                        app.restart_generation += 1;
                        app.restart_mode = RestartMode::AsConfigured;
                    }
                    app.spec.running = true;
                    Ok(())
                })
                .await
            }
            AppCommand::Restart { rolling } => {
                self.modify(name, |app| {
                    if !app.spec.running {
                        return Err(ManagerError::NotRunning);
                    }
                    app.restart_generation += 1;
                    app.restart_mode = if rolling {
                        RestartMode::Rolling
                    } else {
                        RestartMode::AsConfigured
                    };
                    Ok(())
                })
                .await
            }
            AppCommand::Prune => {
                self.modify(name, |app| {
                    app.prune_generation += 1;
                    Ok(())
                })
                .await
            }
            AppCommand::Update(spec) => {
                self.modify(name, |app| {
                    app.spec = spec.clone();
                    app.restart_mode = RestartMode::AsConfigured;
                    Ok(())
                })
                .await
            }
            AppCommand::Patch(patch) => {
                if patch.is_empty() {
                    return Err(ManagerError::Invalid(vec![FieldError::new(
                        "body",
                        "must set at least one field",
                    )]));
                }
                self.modify(name, |app| {
                    patch.clone().apply(&mut app.spec);
                    app.restart_mode = RestartMode::AsConfigured;
                    Ok(())
                })
                .await
            }
        }
    }

    /// Sets `running: false`; workers remove the app's containers.
    ///
    /// # Errors
    /// [`ManagerError::AppNotFound`], store failures.
    pub async fn stop_app(&self, name: &AppName) -> Result<App, ManagerError> {
        self.change_app(name, AppCommand::Stop)
            .await
            .map(Touched::into_value)
    }

    /// Sets `running: true`. Starting an app that runs restarts it, as the original did.
    ///
    /// # Errors
    /// [`ManagerError::AppNotFound`], store failures.
    pub async fn start_app(&self, name: &AppName) -> Result<App, ManagerError> {
        self.change_app(name, AppCommand::Start)
            .await
            .map(Touched::into_value)
    }

    /// Replaces every container (pulling the image first); `rolling` forces waves for this
    /// restart whatever `rolling_restart` says (v1 `/roll`).
    ///
    /// # Errors
    /// [`ManagerError::NotRunning`], [`ManagerError::AppNotFound`], store failures.
    pub async fn restart_app(&self, name: &AppName, rolling: bool) -> Result<App, ManagerError> {
        self.change_app(name, AppCommand::Restart { rolling })
            .await
            .map(Touched::into_value)
    }

    /// Asks the workers running the app to remove unused images (v1 per-app prune).
    ///
    /// # Errors
    /// [`ManagerError::AppNotFound`], store failures.
    pub async fn prune_app(&self, name: &AppName) -> Result<App, ManagerError> {
        self.change_app(name, AppCommand::Prune)
            .await
            .map(Touched::into_value)
    }

    /// Replaces the whole spec (POST `/update`).
    ///
    /// # Errors
    /// [`ManagerError::Invalid`], [`ManagerError::AppNotFound`], store failures.
    pub async fn update_app(&self, name: &AppName, spec: AppSpec) -> Result<App, ManagerError> {
        self.change_app(name, AppCommand::Update(spec))
            .await
            .map(Touched::into_value)
    }

    /// Changes only the fields given (PUT/PATCH `/update`).
    ///
    /// # Errors
    /// [`ManagerError::Invalid`] (also for an empty patch), [`ManagerError::AppNotFound`],
    /// store failures.
    pub async fn patch_app(&self, name: &AppName, patch: AppPatch) -> Result<App, ManagerError> {
        self.change_app(name, AppCommand::Patch(patch))
            .await
            .map(Touched::into_value)
    }
}

#[async_trait]
impl DesiredSource for Manager {
    async fn fetch(&self, selection: &Selection) -> Result<DesiredState, SourceError> {
        if let Selection::DeviceGroup(group) = selection {
            return match self.device_group_info(group).await {
                Ok(info) => Ok(DesiredState::Group(info)),
                Err(crate::device_group::DeviceGroupError::NotFound) => Ok(DesiredState::NoGroup),
                Err(e) => Err(SourceError::Unavailable(e.to_string())),
            };
        }
        let all = self
            .list_full()
            .await
            .map_err(|e| SourceError::Unavailable(e.to_string()))?;
        Ok(DesiredState::Apps(
            all.into_iter()
                .filter(|a| selection.includes(&a.app_name))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::{InProcessBus, Topic};
    use crate::testing::InMemoryStore;

    fn manager() -> (Manager, InProcessBus) {
        let bus = InProcessBus::new();
        (
            Manager::new(Arc::new(InMemoryStore::new()), Some(Arc::new(bus.clone()))),
            bus,
        )
    }

    fn name(s: &str) -> AppName {
        AppName::parse(s).unwrap()
    }

    #[tokio::test]
    async fn versions_rise_by_one_per_change_and_restart_needs_running() {
        let (m, _) = manager();
        let app = m
            .create_app(name("site"), AppSpec::with_image("site"))
            .await
            .unwrap();
        assert_eq!(app.app_id, 1);
        assert!(matches!(
            m.create_app(name("site"), AppSpec::with_image("x")).await,
            Err(ManagerError::AppExists)
        ));
        assert_eq!(m.stop_app(&name("site")).await.unwrap().app_id, 2);
        assert!(matches!(
            m.restart_app(&name("site"), false).await,
            Err(ManagerError::NotRunning)
        ));
        let started = m.start_app(&name("site")).await.unwrap();
        assert_eq!((started.app_id, started.restart_generation), (3, 0));
        let restarted = m.restart_app(&name("site"), true).await.unwrap();
        assert_eq!((restarted.app_id, restarted.restart_generation), (4, 1));
        assert_eq!(restarted.restart_mode, RestartMode::Rolling);
        let patched = m
            .patch_app(
                &name("site"),
                AppPatch {
                    privileged: Some(true),
                    ..AppPatch::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (patched.app_id, patched.restart_mode),
            (5, RestartMode::AsConfigured)
        );
        assert!(patched.spec.privileged);
    }

    #[tokio::test]
    async fn invalid_changes_store_nothing() {
        let (m, _) = manager();
        let mut bad = AppSpec::with_image("site");
        bad.networks = vec![];
        assert!(matches!(
            m.create_app(name("a"), bad).await,
            Err(ManagerError::Invalid(_))
        ));
        assert!(matches!(
            m.get_app(&name("a")).await,
            Err(ManagerError::AppNotFound)
        ));
        m.create_app(name("a"), AppSpec::with_image("site"))
            .await
            .unwrap();
        let patch = AppPatch {
            docker_image: Some("BAD".into()),
            ..AppPatch::default()
        };
        assert!(matches!(
            m.patch_app(&name("a"), patch).await,
            Err(ManagerError::Invalid(_))
        ));
        assert!(matches!(
            m.patch_app(&name("a"), AppPatch::default()).await,
            Err(ManagerError::Invalid(_))
        ));
        assert_eq!(m.get_app(&name("a")).await.unwrap().app_id, 1);
    }

    #[tokio::test]
    async fn recreate_gets_a_new_incarnation_and_changes_are_published() {
        let (m, bus) = manager();
        let mut sub = bus.subscribe(&[Topic::AllApps]).await.unwrap();
        let first = m
            .create_app(name("a"), AppSpec::with_image("site"))
            .await
            .unwrap();
        m.delete_app(&name("a")).await.unwrap();
        assert!(matches!(
            m.delete_app(&name("a")).await,
            Err(ManagerError::AppNotFound)
        ));
        let second = m
            .create_app(name("a"), AppSpec::with_image("site"))
            .await
            .unwrap();
        assert!(second.revision() > first.revision());
        assert!(matches!(
            sub.next().await.unwrap().message,
            BusMessage::AppChanged { .. }
        ));
        assert!(
            matches!(sub.next().await.unwrap().message, BusMessage::AppDeleted { incarnation, .. } if incarnation == first.incarnation)
        );
        assert!(
            matches!(sub.next().await.unwrap().message, BusMessage::AppChanged { app, .. } if app == second)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_updates_never_skip_or_repeat_an_app_id() {
        let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
        let a = Manager::new(store.clone(), None);
        let b = Manager::new(store, None);
        a.create_app(name("a"), AppSpec::with_image("site"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let m = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let mut env = BTreeMap::new();
                env.insert("I".to_owned(), i.to_string());
                m.patch_app(
                    &name("a"),
                    AppPatch {
                        env_vars: Some(env),
                        ..AppPatch::default()
                    },
                )
                .await
                .unwrap()
                .app_id
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids.sort_unstable();
        assert_eq!(ids, (2..=21).collect::<Vec<u64>>());
    }
}
