//! The manager's cron job commands: compare-and-swap writes retried on conflict, as the app
//! commands; every acknowledged change gets `cron_job_id + 1`. Cron jobs reach workers through
//! their device groups: after a change, the whole state of every group that lists the job is
//! published (and served by `/info`).

use super::document::{self, Document};
use super::{Manager, Touched, new_incarnation};
use crate::cron_job::{
    CronJob, CronJobError, CronJobName, CronJobPatch, CronJobSpec, validate_spec,
};
use crate::store::Collection;
use crate::validate::FieldError;

impl Document for CronJob {
    const COLLECTION: Collection = Collection::CronJobs;
    type Error = CronJobError;
    fn key(&self) -> String {
        self.cron_job_name.to_string()
    }
    fn not_found() -> CronJobError {
        CronJobError::NotFound
    }
    fn exists() -> CronJobError {
        CronJobError::Exists
    }
    fn contended() -> CronJobError {
        CronJobError::Contended
    }
}

impl Manager {
    /// Every cron job name, sorted.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_cron_jobs(&self) -> Result<Vec<CronJobName>, CronJobError> {
        Ok(self
            .list_cron_jobs_full()
            .await?
            .into_iter()
            .map(|j| j.cron_job_name)
            .collect())
    }

    /// Every cron job document, sorted by name.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_cron_jobs_full(&self) -> Result<Vec<CronJob>, CronJobError> {
        document::list(self.store.as_ref()).await
    }

    /// One cron job.
    ///
    /// # Errors
    /// [`CronJobError::NotFound`], store failures.
    pub async fn get_cron_job(&self, name: &CronJobName) -> Result<CronJob, CronJobError> {
        document::get(self.store.as_ref(), name.as_str())
            .await?
            .map(|(_, job)| job)
            .ok_or(CronJobError::NotFound)
    }

    /// Whether a cron job exists.
    ///
    /// # Errors
    /// Store failures.
    pub async fn cron_job_exists(&self, name: &CronJobName) -> Result<bool, CronJobError> {
        Ok(self
            .store
            .get(Collection::CronJobs, name.as_str())
            .await?
            .is_some())
    }

    /// Creates a cron job at `cron_job_id` 1 with a new incarnation.
    ///
    /// # Errors
    /// [`CronJobError::Exists`] (checked first, as the original), [`CronJobError::Invalid`],
    /// store failures.
    pub async fn create_cron_job(
        &self,
        name: CronJobName,
        spec: CronJobSpec,
    ) -> Result<CronJob, CronJobError> {
        self.create_cron_job_touched(name, spec)
            .await
            .map(Touched::into_value)
    }

    /// [`Self::create_cron_job`], with the device groups that list the new job.
    ///
    /// # Errors
    /// As [`Self::create_cron_job`].
    pub async fn create_cron_job_touched(
        &self,
        name: CronJobName,
        spec: CronJobSpec,
    ) -> Result<Touched<CronJob>, CronJobError> {
        if self.cron_job_exists(&name).await? {
            return Err(CronJobError::Exists);
        }
        validate_spec(&spec).map_err(CronJobError::Invalid)?;
        let job = CronJob {
            cron_job_name: name,
            cron_job_id: 1,
            incarnation: new_incarnation(),
            spec,
        };
        document::create(self.store.as_ref(), &job).await?;
        tracing::info!(cron_job = %job.cron_job_name, schedule = %job.spec.schedule, "cron job created");
        // A group may list the name already (written while a job of that name existed).
        let device_groups = self.publish_groups_of_cron_job(&job.cron_job_name).await;
        Ok(Touched {
            value: job,
            device_groups,
        })
    }

    /// Read-modify-write with compare-and-swap: `change` edits the spec; the result is
    /// validated, gets `cron_job_id + 1` and is stored.
    async fn modify_cron_job(
        &self,
        name: &CronJobName,
        mut change: impl FnMut(&mut CronJobSpec),
    ) -> Result<Touched<CronJob>, CronJobError> {
        let (job, _) = document::modify(self.store.as_ref(), name.as_str(), |job: &mut CronJob| {
            change(&mut job.spec);
            validate_spec(&job.spec).map_err(CronJobError::Invalid)?;
            job.cron_job_id += 1;
            Ok(())
        })
        .await?;
        tracing::info!(cron_job = %name, cron_job_id = job.cron_job_id, "cron job changed");
        let device_groups = self.publish_groups_of_cron_job(name).await;
        Ok(Touched {
            value: job,
            device_groups,
        })
    }

    /// Replaces the whole spec (POST `/update`); `cron_job_id + 1`.
    ///
    /// # Errors
    /// [`CronJobError::NotFound`], [`CronJobError::Invalid`], store failures.
    pub async fn update_cron_job(
        &self,
        name: &CronJobName,
        spec: CronJobSpec,
    ) -> Result<CronJob, CronJobError> {
        self.update_cron_job_touched(name, spec)
            .await
            .map(Touched::into_value)
    }

    /// [`Self::update_cron_job`], with the device groups that list the job.
    ///
    /// # Errors
    /// As [`Self::update_cron_job`].
    pub async fn update_cron_job_touched(
        &self,
        name: &CronJobName,
        spec: CronJobSpec,
    ) -> Result<Touched<CronJob>, CronJobError> {
        self.modify_cron_job(name, |s| s.clone_from(&spec)).await
    }

    /// Changes only the fields given (PUT/PATCH `/update`); `cron_job_id + 1`.
    ///
    /// # Errors
    /// [`CronJobError::NotFound`], [`CronJobError::Invalid`] (also for an empty patch), store
    /// failures.
    pub async fn patch_cron_job(
        &self,
        name: &CronJobName,
        patch: CronJobPatch,
    ) -> Result<CronJob, CronJobError> {
        self.patch_cron_job_touched(name, patch)
            .await
            .map(Touched::into_value)
    }

    /// [`Self::patch_cron_job`], with the device groups that list the job.
    ///
    /// # Errors
    /// As [`Self::patch_cron_job`].
    pub async fn patch_cron_job_touched(
        &self,
        name: &CronJobName,
        patch: CronJobPatch,
    ) -> Result<Touched<CronJob>, CronJobError> {
        if patch.is_empty() {
            return Err(CronJobError::Invalid(vec![FieldError::new(
                "body",
                "must set at least one field",
            )]));
        }
        self.modify_cron_job(name, |s| patch.clone().apply(s)).await
    }

    /// Deletes a cron job and takes it out of its device groups (`device_group_id + 1` each),
    /// so their workers unschedule it and remove its containers.
    ///
    /// # Errors
    /// [`CronJobError::NotFound`], store failures.
    pub async fn delete_cron_job(&self, name: &CronJobName) -> Result<(), CronJobError> {
        self.delete_cron_job_touched(name)
            .await
            .map(Touched::into_value)
    }

    /// [`Self::delete_cron_job`], with the device groups the job was taken out of.
    ///
    /// # Errors
    /// As [`Self::delete_cron_job`].
    pub async fn delete_cron_job_touched(
        &self,
        name: &CronJobName,
    ) -> Result<Touched<()>, CronJobError> {
        if !self.cron_job_exists(name).await? {
            return Err(CronJobError::NotFound);
        }
        // Out of its groups first, so every reply that lacks the job's document also carries
        // the higher id workers act on; and again after the delete, for a group that took the
        // job meanwhile.
        let mut device_groups = self.remove_cron_job_from_device_groups(name).await?;
        document::delete::<CronJob, _>(self.store.as_ref(), name.as_str(), |_| Ok(())).await?;
        tracing::info!(cron_job = %name, "cron job deleted");
        let device_groups = match self.remove_cron_job_from_device_groups(name).await {
            Ok(more) => {
                for group in more {
                    if !device_groups.contains(&group) {
                        device_groups.push(group);
                    }
                }
                Some(device_groups)
            }
            Err(error) => {
                tracing::warn!(cron_job = %name, %error, "second pass over device groups failed");
                None
            }
        };
        Ok(Touched {
            value: (),
            device_groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::Store;
    use crate::testing::InMemoryStore;

    fn manager() -> Manager {
        Manager::new(Arc::new(InMemoryStore::new()), None)
    }

    fn name(s: &str) -> CronJobName {
        CronJobName::parse(s).unwrap()
    }

    #[tokio::test]
    async fn create_get_list_update_patch_delete() {
        let m = manager();
        let job = m
            .create_cron_job(name("backup"), CronJobSpec::new("0 * * * *", "backup"))
            .await
            .unwrap();
        assert_eq!(job.cron_job_id, 1);
        assert!(job.incarnation > 0);
        assert_eq!(job.spec.networks, ["nebula", "bridge"]);
        assert!(matches!(
            m.create_cron_job(name("backup"), CronJobSpec::new("bad", "backup"))
                .await,
            Err(CronJobError::Exists)
        ));
        assert_eq!(m.get_cron_job(&name("backup")).await.unwrap(), job);
        assert_eq!(m.list_cron_jobs().await.unwrap(), [name("backup")]);

        let mut spec = CronJobSpec::new("*/5 * * * *", "backup:2");
        spec.running = false;
        let updated = m.update_cron_job(&name("backup"), spec).await.unwrap();
        assert_eq!(
            (updated.cron_job_id, updated.incarnation),
            (2, job.incarnation)
        );
        assert!(!updated.spec.running);

        let patched = m
            .patch_cron_job(
                &name("backup"),
                CronJobPatch {
                    running: Some(true),
                    ..CronJobPatch::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(patched.cron_job_id, 3);
        assert_eq!(patched.spec.schedule, "*/5 * * * *");
        assert!(patched.spec.running);

        m.delete_cron_job(&name("backup")).await.unwrap();
        assert!(matches!(
            m.delete_cron_job(&name("backup")).await,
            Err(CronJobError::NotFound)
        ));
        assert!(matches!(
            m.get_cron_job(&name("backup")).await,
            Err(CronJobError::NotFound)
        ));
        let again = m
            .create_cron_job(name("backup"), CronJobSpec::new("0 * * * *", "backup"))
            .await
            .unwrap();
        assert!(again.revision() > patched.revision(), "re-created: newer");
    }

    #[tokio::test]
    async fn invalid_changes_store_nothing() {
        let m = manager();
        let err = m
            .create_cron_job(name("a"), CronJobSpec::new("61 * * * *", "x"))
            .await
            .unwrap_err();
        assert!(err.schedule_invalid());
        assert!(!m.cron_job_exists(&name("a")).await.unwrap());
        m.create_cron_job(name("a"), CronJobSpec::new("* * * * *", "x"))
            .await
            .unwrap();
        let bad = CronJobPatch {
            schedule: Some("* * *".into()),
            ..CronJobPatch::default()
        };
        assert!(
            m.patch_cron_job(&name("a"), bad)
                .await
                .unwrap_err()
                .schedule_invalid()
        );
        assert!(matches!(
            m.patch_cron_job(&name("a"), CronJobPatch::default()).await,
            Err(CronJobError::Invalid(_))
        ));
        let mut no_net = CronJobSpec::new("* * * * *", "x");
        no_net.networks.clear();
        assert!(matches!(
            m.update_cron_job(&name("a"), no_net).await,
            Err(CronJobError::Invalid(e)) if e[0].field == "networks"
        ));
        assert!(matches!(
            m.update_cron_job(&name("zz"), CronJobSpec::new("* * * * *", "x"))
                .await,
            Err(CronJobError::NotFound)
        ));
        assert_eq!(m.get_cron_job(&name("a")).await.unwrap().cron_job_id, 1);
    }

    #[tokio::test]
    async fn device_groups_need_existing_jobs_carry_their_documents_and_lose_deleted_ones() {
        use crate::device_group::{DeviceGroupError, DeviceGroupName, Members, MembersPatch};
        let m = manager();
        let edge = DeviceGroupName::parse("edge").unwrap();
        let members = |jobs: &[&str]| Members {
            apps: Vec::new(),
            cron_jobs: jobs.iter().map(|j| (*j).to_owned()).collect(),
        };
        assert!(matches!(
            m.create_device_group(edge.clone(), members(&["nightly"])).await,
            Err(DeviceGroupError::CronJobNotFound(j)) if j == "nightly"
        ));
        let nightly = m
            .create_cron_job(name("nightly"), CronJobSpec::new("0 3 * * *", "backup"))
            .await
            .unwrap();
        m.create_device_group(edge.clone(), members(&["nightly"]))
            .await
            .unwrap();
        assert!(matches!(
            m.patch_device_group(
                &edge,
                MembersPatch {
                    cron_jobs: Some(vec!["nightly".into(), "hourly".into()]),
                    ..MembersPatch::default()
                }
            )
            .await,
            Err(DeviceGroupError::CronJobNotFound(j)) if j == "hourly"
        ));
        let info = m.device_group_info(&edge).await.unwrap();
        assert_eq!(info.cron_jobs, [nightly]);
        assert_eq!(info.cron_jobs_list, ["nightly"]);

        m.delete_cron_job(&name("nightly")).await.unwrap();
        let group = m.get_device_group(&edge).await.unwrap();
        assert!(group.cron_jobs.is_empty());
        assert_eq!(group.device_group_id, 2, "workers see the removal");
        let info = m.device_group_info(&edge).await.unwrap();
        assert!(info.cron_jobs.is_empty() && info.cron_jobs_list.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_patches_never_skip_or_repeat_a_cron_job_id() {
        let store: Arc<dyn Store> = Arc::new(InMemoryStore::new());
        let a = Manager::new(store.clone(), None);
        let b = Manager::new(store, None);
        a.create_cron_job(name("j"), CronJobSpec::new("* * * * *", "x"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let m = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let mut env = std::collections::BTreeMap::new();
                env.insert("I".to_owned(), i.to_string());
                m.patch_cron_job(
                    &name("j"),
                    CronJobPatch {
                        env_vars: Some(env),
                        ..CronJobPatch::default()
                    },
                )
                .await
                .unwrap()
                .cron_job_id
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids.sort_unstable();
        assert_eq!(ids, (2..=17).collect::<Vec<u64>>());
    }
}
