//! The manager's device group commands: compare-and-swap writes retried on conflict, as the
//! app commands; every membership write gets `device_group_id + 1`, every prune `prune_id + 1`.
//!
//! After every write the group's whole state (what `/info` serves) is published for the
//! group's workers; a delete publishes the deleted incarnation. A publish failure is logged,
//! never returned: the change stays pending for the outbox (`manager::outbox`).

use std::collections::BTreeMap;

use super::document::{self, Document};
use super::{Manager, ManagerError, new_incarnation};
use crate::bus::BusMessage;
use crate::cron_job::{CronJobError, CronJobName};
use crate::device_group::{
    DeviceGroup, DeviceGroupError, DeviceGroupInfo, DeviceGroupName, Members, MembersPatch,
    validate_members,
};
use crate::model::AppName;
use crate::store::{Collection, StoreError};
use crate::validate::FieldError;

impl Document for DeviceGroup {
    const COLLECTION: Collection = Collection::DeviceGroups;
    type Error = DeviceGroupError;
    fn key(&self) -> String {
        self.device_group.to_string()
    }
    fn not_found() -> DeviceGroupError {
        DeviceGroupError::NotFound
    }
    fn exists() -> DeviceGroupError {
        DeviceGroupError::Exists
    }
    fn contended() -> DeviceGroupError {
        DeviceGroupError::Contended
    }
}

impl Manager {
    /// Every device group name, sorted.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_device_groups(&self) -> Result<Vec<DeviceGroupName>, DeviceGroupError> {
        Ok(self
            .list_device_groups_full()
            .await?
            .into_iter()
            .map(|g| g.device_group)
            .collect())
    }

    async fn list_device_groups_full(&self) -> Result<Vec<DeviceGroup>, DeviceGroupError> {
        document::list(self.store.as_ref()).await
    }

    /// One device group.
    ///
    /// # Errors
    /// [`DeviceGroupError::NotFound`], store failures.
    pub async fn get_device_group(
        &self,
        name: &DeviceGroupName,
    ) -> Result<DeviceGroup, DeviceGroupError> {
        document::get(self.store.as_ref(), name.as_str())
            .await?
            .map(|(_, group)| group)
            .ok_or(DeviceGroupError::NotFound)
    }

    /// Checks that every cron job named exists.
    async fn check_cron_jobs_exist(&self, jobs: &[String]) -> Result<(), DeviceGroupError> {
        for job in jobs {
            if self.store.get(Collection::CronJobs, job).await?.is_none() {
                return Err(DeviceGroupError::CronJobNotFound(job.clone()));
            }
        }
        Ok(())
    }

    /// Checks that every app named exists.
    async fn check_apps_exist(&self, apps: &[AppName]) -> Result<(), DeviceGroupError> {
        for app in apps {
            if self
                .store
                .get(Collection::Apps, app.as_str())
                .await?
                .is_none()
            {
                return Err(DeviceGroupError::AppNotFound(app.to_string()));
            }
        }
        Ok(())
    }

    /// Creates a device group at `device_group_id` 1 and `prune_id` 1 with a new incarnation.
    ///
    /// # Errors
    /// [`DeviceGroupError::Invalid`], [`DeviceGroupError::AppNotFound`],
    /// [`DeviceGroupError::Exists`], store failures.
    pub async fn create_device_group(
        &self,
        name: DeviceGroupName,
        members: Members,
    ) -> Result<DeviceGroup, DeviceGroupError> {
        let members = members.deduplicated();
        validate_members(Some(&members.apps), Some(&members.cron_jobs))
            .map_err(DeviceGroupError::Invalid)?;
        if self
            .store
            .get(Collection::DeviceGroups, name.as_str())
            .await?
            .is_some()
        {
            return Err(DeviceGroupError::Exists);
        }
        self.check_apps_exist(&members.apps).await?;
        self.check_cron_jobs_exist(&members.cron_jobs).await?;
        let group = DeviceGroup {
            device_group: name,
            apps: members.apps,
            cron_jobs: members.cron_jobs,
            device_group_id: 1,
            prune_id: 1,
            incarnation: new_incarnation(),
        };
        document::create(self.store.as_ref(), &group).await?;
        tracing::info!(device_group = %group.device_group, apps = group.apps.len(), "device group created");
        self.publish_device_group(&group).await;
        Ok(group)
    }

    /// Read-modify-write with compare-and-swap: `change` edits the group; the result is stored.
    async fn modify_device_group(
        &self,
        name: &DeviceGroupName,
        change: impl FnMut(&mut DeviceGroup) -> Result<(), DeviceGroupError>,
    ) -> Result<DeviceGroup, DeviceGroupError> {
        let (group, _) = document::modify(self.store.as_ref(), name.as_str(), change).await?;
        tracing::info!(
            device_group = %name,
            device_group_id = group.device_group_id,
            prune_id = group.prune_id,
            "device group changed"
        );
        self.publish_device_group(&group).await;
        Ok(group)
    }

    /// Replaces the members (POST `/update`); `device_group_id + 1`.
    ///
    /// # Errors
    /// [`DeviceGroupError::Invalid`], [`DeviceGroupError::AppNotFound`],
    /// [`DeviceGroupError::NotFound`], store failures.
    pub async fn update_device_group(
        &self,
        name: &DeviceGroupName,
        members: Members,
    ) -> Result<DeviceGroup, DeviceGroupError> {
        self.patch_device_group(
            name,
            MembersPatch {
                apps: Some(members.apps),
                cron_jobs: Some(members.cron_jobs),
            },
        )
        .await
    }

    /// Changes only the lists given (PUT/PATCH `/update`); `device_group_id + 1`.
    ///
    /// # Errors
    /// [`DeviceGroupError::Invalid`] (also for an empty patch),
    /// [`DeviceGroupError::AppNotFound`], [`DeviceGroupError::NotFound`], store failures.
    pub async fn patch_device_group(
        &self,
        name: &DeviceGroupName,
        patch: MembersPatch,
    ) -> Result<DeviceGroup, DeviceGroupError> {
        if patch.is_empty() {
            return Err(DeviceGroupError::Invalid(vec![FieldError::new(
                "body",
                "must set apps or cron_jobs",
            )]));
        }
        let members = Members {
            apps: patch.apps.clone().unwrap_or_default(),
            cron_jobs: patch.cron_jobs.clone().unwrap_or_default(),
        }
        .deduplicated();
        validate_members(
            patch.apps.as_ref().map(|_| members.apps.as_slice()),
            patch
                .cron_jobs
                .as_ref()
                .map(|_| members.cron_jobs.as_slice()),
        )
        .map_err(DeviceGroupError::Invalid)?;
        // The group must exist before app names are looked at, so a missing group is reported
        // as such whatever the body says.
        self.get_device_group(name).await?;
        self.check_apps_exist(&members.apps).await?;
        self.check_cron_jobs_exist(&members.cron_jobs).await?;
        self.modify_device_group(name, |group| {
            if patch.apps.is_some() {
                group.apps.clone_from(&members.apps);
            }
            if patch.cron_jobs.is_some() {
                group.cron_jobs.clone_from(&members.cron_jobs);
            }
            group.device_group_id += 1;
            Ok(())
        })
        .await
    }

    /// Deletes a device group; its workers remove its apps' containers.
    ///
    /// # Errors
    /// [`DeviceGroupError::NotFound`], store failures.
    pub async fn delete_device_group(
        &self,
        name: &DeviceGroupName,
    ) -> Result<(), DeviceGroupError> {
        // A document that does not decode can still be deleted; its workers learn of it at
        // check-in.
        let incarnation =
            document::delete::<DeviceGroup, _>(self.store.as_ref(), name.as_str(), |stored| {
                Ok(document::decode::<DeviceGroup>(name.as_str(), stored)
                    .ok()
                    .map(|g| g.incarnation))
            })
            .await?;
        tracing::info!(device_group = %name, "device group deleted");
        if let Some(incarnation) = incarnation {
            self.publish(BusMessage::DeviceGroupDeleted {
                device_group: name.clone(),
                incarnation,
            })
            .await;
        }
        Ok(())
    }

    /// Asks the group's workers to remove unused images once (`prune_id + 1`).
    ///
    /// # Errors
    /// [`DeviceGroupError::NotFound`], store failures.
    pub async fn prune_device_group(
        &self,
        name: &DeviceGroupName,
    ) -> Result<DeviceGroup, DeviceGroupError> {
        self.modify_device_group(name, |group| {
            group.prune_id += 1;
            Ok(())
        })
        .await
    }

    /// `prune_id + 1` on every device group; returns each group's new `prune_id`.
    ///
    /// # Errors
    /// Store failures (groups already bumped stay bumped).
    pub async fn prune_all_device_groups(
        &self,
    ) -> Result<BTreeMap<DeviceGroupName, u64>, DeviceGroupError> {
        let mut prune_ids = BTreeMap::new();
        for name in self.list_device_groups().await? {
            match self.prune_device_group(&name).await {
                Ok(group) => {
                    prune_ids.insert(name, group.prune_id);
                }
                // Deleted meanwhile: nothing to prune.
                Err(DeviceGroupError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(prune_ids)
    }

    /// The whole desired state of a group: its apps' and cron jobs' full documents (those
    /// deleted meanwhile are skipped), the name lists and the versions.
    ///
    /// # Errors
    /// [`DeviceGroupError::NotFound`], store failures.
    pub async fn device_group_info(
        &self,
        name: &DeviceGroupName,
    ) -> Result<DeviceGroupInfo, DeviceGroupError> {
        let group = self.get_device_group(name).await?;
        self.info_of(group).await
    }

    /// The whole desired state of `group` as stored: the documents of its apps and cron jobs
    /// read now.
    async fn info_of(&self, group: DeviceGroup) -> Result<DeviceGroupInfo, DeviceGroupError> {
        let mut apps = Vec::with_capacity(group.apps.len());
        for app in &group.apps {
            match self.get_app(app).await {
                Ok(doc) => apps.push(doc),
                Err(ManagerError::AppNotFound) => {}
                Err(ManagerError::Store(e)) => return Err(e.into()),
                Err(e) => return Err(StoreError::Corrupt(e.to_string()).into()),
            }
        }
        let mut cron_jobs = Vec::with_capacity(group.cron_jobs.len());
        for job in &group.cron_jobs {
            let Ok(name) = CronJobName::parse(job) else {
                continue;
            };
            match self.get_cron_job(&name).await {
                Ok(doc) => cron_jobs.push(doc),
                Err(CronJobError::NotFound) => {}
                Err(CronJobError::Store(e)) => return Err(e.into()),
                Err(e) => return Err(StoreError::Corrupt(e.to_string()).into()),
            }
        }
        Ok(DeviceGroupInfo {
            apps,
            apps_list: group.apps,
            cron_jobs,
            cron_jobs_list: group.cron_jobs,
            prune_id: group.prune_id,
            device_group_id: group.device_group_id,
            incarnation: group.incarnation,
        })
    }

    /// Publishes `group`'s whole state, as stored at this write, for its workers.
    async fn publish_device_group(&self, group: &DeviceGroup) {
        if self.bus.is_none() {
            return;
        }
        match self.info_of(group.clone()).await {
            Ok(info) => {
                self.publish(BusMessage::DeviceGroupChanged {
                    device_group: group.device_group.clone(),
                    info,
                })
                .await;
            }
            Err(error) => {
                tracing::warn!(device_group = %group.device_group, %error, "cannot read the group's state to publish it; it is published when it can be read");
                self.device_group_pending(&group.device_group);
            }
        }
    }

    /// The groups that list `app`, for the app's messages and the caller's caches: the one
    /// place an app's membership is computed, a scan of every device group (one store read of
    /// the collection per app change). A store failure gives `None`, logged: the groups'
    /// workers then pick the change up at check-in.
    pub(super) async fn device_groups_listing_app(
        &self,
        app: &AppName,
    ) -> Option<Vec<DeviceGroupName>> {
        match self.list_device_groups_full().await {
            Ok(groups) => Some(
                groups
                    .into_iter()
                    .filter(|g| g.apps.contains(app))
                    .map(|g| g.device_group)
                    .collect(),
            ),
            Err(error) => {
                tracing::warn!(%app, %error, "cannot list the device groups of the app; their workers will pick the change up at check-in");
                None
            }
        }
    }

    /// Publishes the state of every group that lists cron job `job` (after a change of its
    /// document), and returns those groups: the one place a cron job's membership is
    /// computed, a scan of every device group. A store failure gives `None`, logged.
    pub(super) async fn publish_groups_of_cron_job(
        &self,
        job: &CronJobName,
    ) -> Option<Vec<DeviceGroupName>> {
        let groups = match self.list_device_groups_full().await {
            Ok(groups) => groups,
            Err(error) => {
                tracing::warn!(cron_job = %job, %error, "cannot list the device groups of the cron job; their workers will pick the change up at check-in");
                return None;
            }
        };
        let listing: Vec<&DeviceGroup> = groups
            .iter()
            .filter(|g| g.cron_jobs.iter().any(|j| j == job.as_str()))
            .collect();
        for group in &listing {
            self.publish_device_group(group).await;
        }
        Some(listing.iter().map(|g| g.device_group.clone()).collect())
    }

    /// Takes `app` out of every group that lists it, each with `device_group_id + 1`, so the
    /// groups' workers remove its containers (called by `delete_app`). Returns the groups it
    /// was taken out of.
    pub(super) async fn remove_app_from_device_groups(
        &self,
        app: &AppName,
    ) -> Result<Vec<DeviceGroupName>, ManagerError> {
        let groups = self
            .list_device_groups_full()
            .await
            .map_err(into_manager_error)?;
        let mut left = Vec::new();
        for group in groups.into_iter().filter(|g| g.apps.contains(app)) {
            let changed = self
                .modify_device_group(&group.device_group, |g| {
                    if g.apps.contains(app) {
                        g.apps.retain(|a| a != app);
                        g.device_group_id += 1;
                    }
                    Ok(())
                })
                .await;
            match changed {
                Ok(_) => left.push(group.device_group),
                Err(DeviceGroupError::NotFound) => {}
                Err(e) => return Err(into_manager_error(e)),
            }
        }
        Ok(left)
    }
}

impl Manager {
    /// Takes `job` out of every group that lists it, each with `device_group_id + 1`, so the
    /// groups' workers unschedule it and remove its containers (called by `delete_cron_job`).
    /// Returns the groups it was taken out of.
    pub(super) async fn remove_cron_job_from_device_groups(
        &self,
        job: &CronJobName,
    ) -> Result<Vec<DeviceGroupName>, CronJobError> {
        let into_cron_error = |e: DeviceGroupError| match e {
            DeviceGroupError::Store(e) => CronJobError::Store(e),
            DeviceGroupError::Contended => CronJobError::Contended,
            other => CronJobError::Store(StoreError::Corrupt(other.to_string())),
        };
        let groups = self
            .list_device_groups_full()
            .await
            .map_err(into_cron_error)?;
        let job = job.as_str();
        let mut left = Vec::new();
        for group in groups
            .into_iter()
            .filter(|g| g.cron_jobs.iter().any(|j| j == job))
        {
            let changed = self
                .modify_device_group(&group.device_group, |g| {
                    if g.cron_jobs.iter().any(|j| j == job) {
                        g.cron_jobs.retain(|j| j != job);
                        g.device_group_id += 1;
                    }
                    Ok(())
                })
                .await;
            match changed {
                Ok(_) => left.push(group.device_group),
                Err(DeviceGroupError::NotFound) => {}
                Err(e) => return Err(into_cron_error(e)),
            }
        }
        Ok(left)
    }
}

fn into_manager_error(e: DeviceGroupError) -> ManagerError {
    match e {
        DeviceGroupError::Store(e) => ManagerError::Store(e),
        DeviceGroupError::Contended => ManagerError::Contended,
        other => ManagerError::Store(StoreError::Corrupt(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::AppSpec;
    use crate::store::Store;
    use crate::testing::InMemoryStore;

    fn manager() -> Manager {
        Manager::new(Arc::new(InMemoryStore::new()), None)
    }

    fn app(s: &str) -> AppName {
        AppName::parse(s).unwrap()
    }

    fn dg(s: &str) -> DeviceGroupName {
        DeviceGroupName::parse(s).unwrap()
    }

    fn members(apps: &[&str]) -> Members {
        Members {
            apps: apps.iter().map(|a| app(a)).collect(),
            cron_jobs: Vec::new(),
        }
    }

    async fn with_apps(names: &[&str]) -> Manager {
        let m = manager();
        for n in names {
            m.create_app(app(n), AppSpec::with_image("site"))
                .await
                .unwrap();
        }
        m
    }

    #[tokio::test]
    async fn app_writes_return_the_groups_listing_the_app() {
        let m = with_apps(&["a", "b"]).await;
        m.create_device_group(dg("one"), members(&["a"]))
            .await
            .unwrap();
        m.create_device_group(dg("both"), members(&["a", "b"]))
            .await
            .unwrap();
        let stopped = m
            .change_app(&app("b"), crate::manager::AppCommand::Stop)
            .await
            .unwrap();
        assert!(!stopped.value.spec.running);
        assert_eq!(stopped.device_groups, Some(vec![dg("both")]));
        let deleted = m.delete_app_touched(&app("a")).await.unwrap();
        let mut groups = deleted.device_groups.unwrap();
        groups.sort();
        assert_eq!(groups, [dg("both"), dg("one")]);
        let created = m
            .create_app_touched(app("c"), AppSpec::with_image("site"))
            .await
            .unwrap();
        assert_eq!(created.device_groups, Some(Vec::new()));
    }

    #[tokio::test]
    async fn create_get_list_update_delete() {
        let m = with_apps(&["a", "b"]).await;
        let g = m
            .create_device_group(dg("edge"), members(&["a", "b", "a"]))
            .await
            .unwrap();
        assert_eq!((g.device_group_id, g.prune_id), (1, 1));
        assert_eq!(g.apps, [app("a"), app("b")], "repeated names dropped");
        assert!(matches!(
            m.create_device_group(dg("edge"), Members::default()).await,
            Err(DeviceGroupError::Exists)
        ));
        assert!(matches!(
            m.create_device_group(dg("other"), members(&["nope"])).await,
            Err(DeviceGroupError::AppNotFound(n)) if n == "nope"
        ));
        assert!(matches!(
            m.get_device_group(&dg("other")).await,
            Err(DeviceGroupError::NotFound)
        ));
        assert_eq!(m.get_device_group(&dg("edge")).await.unwrap(), g);
        m.create_device_group(dg("empty"), Members::default())
            .await
            .unwrap();
        assert_eq!(
            m.list_device_groups().await.unwrap(),
            [dg("edge"), dg("empty")]
        );

        let full = m
            .update_device_group(&dg("edge"), members(&["b"]))
            .await
            .unwrap();
        assert_eq!(
            (full.apps.clone(), full.device_group_id),
            (vec![app("b")], 2)
        );
        m.create_cron_job(
            CronJobName::parse("nightly").unwrap(),
            crate::cron_job::CronJobSpec::new("0 3 * * *", "backup"),
        )
        .await
        .unwrap();
        let patched = m
            .patch_device_group(
                &dg("edge"),
                MembersPatch {
                    cron_jobs: Some(vec!["nightly".into()]),
                    ..MembersPatch::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(patched.apps, [app("b")], "PUT keeps what it does not name");
        assert_eq!((patched.cron_jobs.len(), patched.device_group_id), (1, 3));
        assert!(matches!(
            m.patch_device_group(&dg("edge"), MembersPatch::default())
                .await,
            Err(DeviceGroupError::Invalid(_))
        ));
        assert!(matches!(
            m.update_device_group(&dg("edge"), members(&["nope"])).await,
            Err(DeviceGroupError::AppNotFound(_))
        ));
        assert!(matches!(
            m.update_device_group(&dg("missing"), members(&["nope"]))
                .await,
            Err(DeviceGroupError::NotFound)
        ));
        assert_eq!(
            m.get_device_group(&dg("edge"))
                .await
                .unwrap()
                .device_group_id,
            3,
            "failed updates store nothing"
        );

        m.delete_device_group(&dg("edge")).await.unwrap();
        assert!(matches!(
            m.delete_device_group(&dg("edge")).await,
            Err(DeviceGroupError::NotFound)
        ));
        let again = m
            .create_device_group(dg("edge"), Members::default())
            .await
            .unwrap();
        assert_eq!(again.device_group_id, 1);
        assert!(
            again.revision() > full.revision(),
            "a re-created group is newer than the deleted one"
        );
    }

    #[tokio::test]
    async fn prune_bumps_prune_id_only() {
        let m = with_apps(&["a"]).await;
        m.create_device_group(dg("x"), members(&["a"]))
            .await
            .unwrap();
        m.create_device_group(dg("y"), Members::default())
            .await
            .unwrap();
        let g = m.prune_device_group(&dg("x")).await.unwrap();
        assert_eq!((g.prune_id, g.device_group_id), (2, 1));
        assert!(matches!(
            m.prune_device_group(&dg("z")).await,
            Err(DeviceGroupError::NotFound)
        ));
        let all = m.prune_all_device_groups().await.unwrap();
        assert_eq!(all, BTreeMap::from([(dg("x"), 3), (dg("y"), 2)]));
    }

    #[tokio::test]
    async fn info_is_the_whole_desired_state() {
        let m = with_apps(&["a", "b"]).await;
        m.create_device_group(dg("edge"), members(&["b", "a"]))
            .await
            .unwrap();
        let info = m.device_group_info(&dg("edge")).await.unwrap();
        assert_eq!(
            info.apps
                .iter()
                .map(|a| a.app_name.as_str())
                .collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(info.apps_list, [app("b"), app("a")]);
        assert_eq!((info.device_group_id, info.prune_id), (1, 1));
        assert!(info.cron_jobs.is_empty());
        let json = serde_json::to_value(&info).unwrap();
        for key in [
            "apps",
            "apps_list",
            "cron_jobs",
            "cron_jobs_list",
            "prune_id",
            "device_group_id",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
        assert!(matches!(
            m.device_group_info(&dg("nope")).await,
            Err(DeviceGroupError::NotFound)
        ));
    }

    #[tokio::test]
    async fn deleting_an_app_takes_it_out_of_its_groups() {
        let m = with_apps(&["a", "b"]).await;
        m.create_device_group(dg("x"), members(&["a", "b"]))
            .await
            .unwrap();
        m.create_device_group(dg("y"), members(&["b"]))
            .await
            .unwrap();
        m.delete_app(&app("a")).await.unwrap();
        let x = m.get_device_group(&dg("x")).await.unwrap();
        assert_eq!((x.apps, x.device_group_id), (vec![app("b")], 2));
        let y = m.get_device_group(&dg("y")).await.unwrap();
        assert_eq!(y.device_group_id, 1, "a group without the app is untouched");
        let info = m.device_group_info(&dg("x")).await.unwrap();
        assert_eq!(info.apps.len(), 1);
    }

    #[tokio::test]
    async fn info_skips_apps_deleted_behind_its_back() {
        let m = with_apps(&["a", "b"]).await;
        m.create_device_group(dg("x"), members(&["a", "b"]))
            .await
            .unwrap();
        // Straight in the store: the group still lists a, its document is gone.
        let store = m.store().clone();
        let stored = store.get(Collection::Apps, "a").await.unwrap().unwrap();
        store
            .delete(Collection::Apps, "a", stored.rev)
            .await
            .unwrap();
        let info = m.device_group_info(&dg("x")).await.unwrap();
        assert_eq!(info.apps_list.len(), 2);
        assert_eq!(
            info.apps
                .iter()
                .map(|a| a.app_name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
    }

    async fn next(sub: &mut crate::bus::Subscription) -> BusMessage {
        tokio::time::timeout(std::time::Duration::from_secs(1), sub.next())
            .await
            .expect("a message")
            .expect("open")
            .message
    }

    async fn quiet(sub: &mut crate::bus::Subscription) {
        let extra = tokio::time::timeout(std::time::Duration::from_millis(50), sub.next()).await;
        assert!(extra.is_err(), "nothing more: {extra:?}");
    }

    #[tokio::test]
    async fn changes_are_published_to_the_groups_they_concern() {
        use crate::bus::{Bus, InProcessBus, Topic};
        use crate::cron_job::CronJobSpec;
        let bus = InProcessBus::new();
        let m = Manager::new(Arc::new(InMemoryStore::new()), Some(Arc::new(bus.clone())));
        let mut edge = bus
            .subscribe(&[Topic::DeviceGroup(dg("edge"))])
            .await
            .unwrap();
        let mut other = bus
            .subscribe(&[Topic::DeviceGroup(dg("other"))])
            .await
            .unwrap();
        for n in ["a", "b"] {
            m.create_app(app(n), AppSpec::with_image("site"))
                .await
                .unwrap();
        }
        let nightly = CronJobName::parse("nightly").unwrap();
        m.create_cron_job(nightly.clone(), CronJobSpec::new("0 3 * * *", "backup"))
            .await
            .unwrap();
        quiet(&mut edge).await;
        let changed = |info: DeviceGroupInfo| BusMessage::DeviceGroupChanged {
            device_group: dg("edge"),
            info,
        };

        m.create_device_group(
            dg("edge"),
            Members {
                apps: vec![app("a")],
                cron_jobs: vec!["nightly".into()],
            },
        )
        .await
        .unwrap();
        let info = m.device_group_info(&dg("edge")).await.unwrap();
        assert_eq!(info.cron_jobs.len(), 1);
        assert_eq!(next(&mut edge).await, changed(info), "what /info serves");
        m.create_device_group(dg("other"), members(&["b"]))
            .await
            .unwrap();
        assert!(matches!(
            next(&mut other).await,
            BusMessage::DeviceGroupChanged { device_group, .. } if device_group == dg("other")
        ));

        // App changes: to the groups that list the app only.
        let a2 = m.stop_app(&app("a")).await.unwrap();
        assert_eq!(
            next(&mut edge).await,
            BusMessage::AppChanged {
                app: a2,
                device_groups: vec![dg("edge")],
            }
        );
        m.stop_app(&app("b")).await.unwrap();
        quiet(&mut edge).await;
        assert!(matches!(
            next(&mut other).await,
            BusMessage::AppChanged { .. }
        ));

        // A cron job of the group changed: the group's whole state with the new document.
        m.update_cron_job(&nightly, CronJobSpec::new("0 4 * * *", "backup"))
            .await
            .unwrap();
        let info = m.device_group_info(&dg("edge")).await.unwrap();
        assert_eq!(info.cron_jobs[0].cron_job_id, 2);
        assert_eq!(next(&mut edge).await, changed(info));

        m.prune_device_group(&dg("edge")).await.unwrap();
        let BusMessage::DeviceGroupChanged { info, .. } = next(&mut edge).await else {
            panic!("a group change")
        };
        assert_eq!((info.prune_id, info.device_group_id), (2, 1));

        // An app deleted: out of the group first, then its deletion.
        let incarnation = m.get_app(&app("a")).await.unwrap().incarnation;
        m.delete_app(&app("a")).await.unwrap();
        let BusMessage::DeviceGroupChanged { info, .. } = next(&mut edge).await else {
            panic!("a group change")
        };
        assert_eq!((info.device_group_id, info.apps_list.len()), (2, 0));
        assert_eq!(
            next(&mut edge).await,
            BusMessage::AppDeleted {
                app_name: app("a"),
                incarnation,
                device_groups: vec![dg("edge")],
            }
        );
        quiet(&mut edge).await;

        let group = m.get_device_group(&dg("edge")).await.unwrap();
        m.delete_device_group(&dg("edge")).await.unwrap();
        assert_eq!(
            next(&mut edge).await,
            BusMessage::DeviceGroupDeleted {
                device_group: dg("edge"),
                incarnation: group.incarnation,
            }
        );
        quiet(&mut edge).await;
        quiet(&mut other).await;
    }

    /// A bus that takes nothing.
    struct Down;

    #[async_trait::async_trait]
    impl crate::bus::Bus for Down {
        async fn publish(&self, _: &BusMessage) -> Result<(), crate::bus::BusError> {
            Err(crate::bus::BusError::Unavailable("down".into()))
        }
        async fn subscribe(
            &self,
            _: &[crate::bus::Topic],
        ) -> Result<crate::bus::Subscription, crate::bus::BusError> {
            Err(crate::bus::BusError::Unavailable("down".into()))
        }
    }

    #[tokio::test]
    async fn a_failed_publish_never_fails_a_command() {
        let m = Manager::new(Arc::new(InMemoryStore::new()), Some(Arc::new(Down)));
        m.create_app(app("a"), AppSpec::with_image("site"))
            .await
            .unwrap();
        m.create_device_group(dg("edge"), members(&["a"]))
            .await
            .unwrap();
        m.stop_app(&app("a")).await.unwrap();
        m.update_device_group(&dg("edge"), members(&[]))
            .await
            .unwrap();
        m.prune_device_group(&dg("edge")).await.unwrap();
        m.delete_app(&app("a")).await.unwrap();
        m.delete_device_group(&dg("edge")).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_never_skip_or_repeat_an_id() {
        let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
        let a = Manager::new(store.clone(), None);
        let b = Manager::new(store, None);
        a.create_device_group(dg("x"), Members::default())
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let m = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                if i % 4 < 2 {
                    m.update_device_group(&dg("x"), Members::default())
                        .await
                        .unwrap()
                        .device_group_id
                } else {
                    1000 + m.prune_device_group(&dg("x")).await.unwrap().prune_id
                }
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids.sort_unstable();
        let expected: Vec<u64> = (2..=11).chain(1002..=1011).collect();
        assert_eq!(ids, expected);
    }
}
