//! The manager's outbox: a change the bus did not take is published as soon as it takes
//! messages again, by this manager or by any other on the same store.
//!
//! Level-triggered, like the rest of Nebula. After each publish the bus took, the manager
//! writes a *publish mark* in the Store ([`Collection::PublishMarks`], key `app/<name>` or
//! `dg/<group>`): the incarnation and a digest of the state published (for an app, its
//! document; for a group, its `/info` state without the app documents, which the apps'
//! own messages carry), and, for an app, the device groups the message was addressed to. A
//! deletion the bus took removes the mark.
//!
//! [`Manager::republish`] compares the stored state with the marks and publishes the
//! *current* document of anything whose mark is missing or records another state, never the
//! intermediate versions (workers take the last one and ignore what they hold), and the
//! deletion of anything whose mark outlives its document. It sweeps at start (a manager
//! killed between its store write and its publish), soon after a publish failed (0.5 s
//! doubling to 2 s, each wait scaled by a random 0.5-1, while the bus refuses), and every
//! [`SWEEP_INTERVAL`] (another manager that died between write and publish). Two managers
//! may both publish the same pending change: a duplicate, which workers ignore by version.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::Manager;
use crate::backoff::Backoff;
use crate::bus::{Bus, BusMessage};
use crate::cron_job::CronJob;
use crate::device_group::{DeviceGroup, DeviceGroupInfo, DeviceGroupName};
use crate::model::{App, AppName};
use crate::store::{Collection, Expect, StoreError, Stored};

/// How often the republisher compares the stored state with the marks when nothing is
/// known to be pending: the longest a change stored by a manager that died before its
/// publish waits for another manager to publish it.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(15);

/// The first wait after a publish failed, before the republisher tries again; it doubles
/// up to [`MAX_RETRY`] while the bus refuses. A refused publish costs the bus nothing (a
/// broker in its reconnect backoff fails at once), so the waits stay short.
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// How many times a mark write is retried when another manager wrote the mark meanwhile.
const MARK_ATTEMPTS: usize = 4;

/// What the last publish of one topic carried, as kept in [`Collection::PublishMarks`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PublishMark {
    /// The incarnation published: the one a deletion names.
    incarnation: u64,
    /// Digest of the state published.
    digest: String,
    /// For an app: the device groups the message was addressed to (a deletion goes to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    device_groups: Vec<DeviceGroupName>,
}

impl PublishMark {
    /// The mark a publish of `message` leaves; `None` for a deletion, whose publish removes
    /// the mark.
    fn of(message: &BusMessage) -> Option<Self> {
        match message {
            BusMessage::AppChanged { app, device_groups } => Some(Self {
                incarnation: app.incarnation,
                digest: digest(app),
                device_groups: device_groups.clone(),
            }),
            BusMessage::DeviceGroupChanged { info, .. } => Some(Self {
                incarnation: info.incarnation,
                digest: digest(&DeviceGroupInfo {
                    apps: Vec::new(),
                    ..info.clone()
                }),
                device_groups: Vec::new(),
            }),
            BusMessage::AppDeleted { .. } | BusMessage::DeviceGroupDeleted { .. } => None,
        }
    }

    /// Whether both record the same state. The device groups an app was addressed to do
    /// not count: a group that takes the app in publishes its own state, documents included.
    fn same_state(&self, other: &Self) -> bool {
        self.incarnation == other.incarnation && self.digest == other.digest
    }

    /// The deletion to publish when the document marked under `key` is gone.
    fn deletion(&self, key: &str) -> Option<BusMessage> {
        if let Some(name) = key.strip_prefix("app/") {
            return Some(BusMessage::AppDeleted {
                app_name: AppName::parse(name).ok()?,
                incarnation: self.incarnation,
                device_groups: self.device_groups.clone(),
            });
        }
        Some(BusMessage::DeviceGroupDeleted {
            device_group: DeviceGroupName::parse(key.strip_prefix("dg/")?).ok()?,
            incarnation: self.incarnation,
        })
    }
}

/// The mark key of what `message` is about: `app/<name>` or `dg/<group>`.
fn mark_key(message: &BusMessage) -> String {
    match message {
        BusMessage::AppChanged { app, .. } => format!("app/{}", app.app_name),
        BusMessage::AppDeleted { app_name, .. } => format!("app/{app_name}"),
        BusMessage::DeviceGroupChanged { device_group, .. }
        | BusMessage::DeviceGroupDeleted { device_group, .. } => format!("dg/{device_group}"),
    }
}

fn deleted_incarnation(message: &BusMessage) -> Option<u64> {
    match message {
        BusMessage::AppDeleted { incarnation, .. }
        | BusMessage::DeviceGroupDeleted { incarnation, .. } => Some(*incarnation),
        BusMessage::AppChanged { .. } | BusMessage::DeviceGroupChanged { .. } => None,
    }
}

fn digest(value: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Sha256::digest(bytes)
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_mark(stored: &Stored) -> Option<PublishMark> {
    serde_json::from_value(stored.doc.clone()).ok()
}

fn decode<T: serde::de::DeserializeOwned>(
    coll: Collection,
    (key, stored): &(String, Stored),
) -> Result<T, StoreError> {
    serde_json::from_value(stored.doc.clone())
        .map_err(|e| StoreError::Corrupt(format!("{} {key}: {e}", coll.name())))
}

/// What this manager knows is not published yet, and what wakes its republisher.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pending: Mutex<Pending>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    /// Mark keys of the changes the bus refused and no sweep published since.
    keys: BTreeSet<String>,
    /// Pending changes published since publishes became pending.
    published: usize,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A publish of `key` failed: count it and wake the republisher.
    pub(super) fn failed(&self, key: String) {
        let (was_empty, now) = {
            let mut pending = self.lock();
            let was_empty = pending.keys.is_empty();
            pending.keys.insert(key);
            (was_empty, pending.keys.len())
        };
        if was_empty {
            tracing::warn!(
                pending = now,
                "{now} changes pending publish; they are published as soon as the bus takes messages again"
            );
        }
        self.wake.notify_one();
    }

    /// A sweep published `published` changes and left `remaining` pending.
    fn settle(&self, remaining: BTreeSet<String>, published: usize) {
        let mut pending = self.lock();
        let before = pending.keys.len();
        pending.published += published;
        pending.keys = remaining;
        let now = pending.keys.len();
        if now == 0 && pending.published > 0 {
            let published = std::mem::take(&mut pending.published);
            drop(pending);
            tracing::info!(published, "published {published} pending changes");
        } else if before == 0 && now > 0 {
            drop(pending);
            tracing::warn!(
                pending = now,
                "{now} changes pending publish; they are published as soon as the bus takes messages again"
            );
        }
    }

    fn count(&self) -> usize {
        self.lock().keys.len()
    }
}

/// What one sweep did.
struct Swept {
    published: usize,
    remaining: BTreeSet<String>,
}

impl Manager {
    /// How many changes this manager knows are stored but not yet published (the bus
    /// refused them; the republisher publishes them when it takes messages again). Changes
    /// another manager failed to publish count once this manager's republisher found them.
    #[must_use]
    pub fn pending_publishes(&self) -> usize {
        self.outbox.count()
    }

    /// Publishes what the bus did not take, as soon as it takes messages again (see
    /// [`outbox`](self)), until `stop` completes. Run it once per manager process that has a
    /// bus; without a bus it returns at once.
    pub async fn republish(&self, stop: impl Future<Output = ()>) {
        let Some(bus) = self.bus.clone() else {
            return;
        };
        tokio::pin!(stop);
        let mut retry = Backoff::new(FIRST_RETRY, MAX_RETRY).jitter(0.5..=1.0);
        loop {
            let settled = match self.sweep(bus.as_ref()).await {
                Ok(swept) => {
                    let settled = swept.remaining.is_empty();
                    self.outbox.settle(swept.remaining, swept.published);
                    settled
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot compare the stored state with what was published; trying again");
                    false
                }
            };
            let wait = if settled {
                retry.reset();
                SWEEP_INTERVAL
            } else {
                retry.next()
            };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
                () = self.outbox.wake.notified(), if settled => {
                    // A publish just failed: give the bus a moment before trying again.
                    tokio::select! {
                        () = &mut stop => return,
                        () = tokio::time::sleep(FIRST_RETRY) => {}
                    }
                }
            }
        }
    }

    /// Publishes `message` and, once the bus took it, records it in its mark.
    ///
    /// # Errors
    /// The bus's refusal (the mark is left as it was).
    pub(super) async fn publish_marked(
        &self,
        bus: &dyn Bus,
        message: &BusMessage,
    ) -> Result<(), crate::bus::BusError> {
        bus.publish(message).await?;
        let key = mark_key(message);
        let recorded = match PublishMark::of(message) {
            Some(mark) => self.write_mark(&key, &mark).await,
            None => self.clear_mark(&key, deleted_incarnation(message)).await,
        };
        if let Err(error) = recorded {
            tracing::warn!(%key, %error, "cannot record a publish in its mark; it may be published again, which workers ignore");
        }
        Ok(())
    }

    /// Notes that `message` was not published, for the republisher.
    pub(super) fn publish_pending(&self, message: &BusMessage) {
        self.outbox.failed(mark_key(message));
    }

    /// Notes that a device group's state could not be read to publish it.
    pub(super) fn device_group_pending(&self, group: &DeviceGroupName) {
        self.outbox.failed(format!("dg/{group}"));
    }

    async fn write_mark(&self, key: &str, mark: &PublishMark) -> Result<(), StoreError> {
        let doc = serde_json::to_value(mark)
            .map_err(|e| StoreError::Corrupt(format!("publish mark {key}: {e}")))?;
        for _ in 0..MARK_ATTEMPTS {
            let expect = match self.store.get(Collection::PublishMarks, key).await? {
                Some(stored) if decode_mark(&stored).as_ref() == Some(mark) => return Ok(()),
                Some(stored) => Expect::Rev(stored.rev),
                None => Expect::Absent,
            };
            match self
                .store
                .put(Collection::PublishMarks, key, &doc, expect)
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        // Other managers keep writing this mark: the next sweep compares it again.
        Ok(())
    }

    /// Removes the mark of a deleted `incarnation` (not that of a later one).
    async fn clear_mark(&self, key: &str, incarnation: Option<u64>) -> Result<(), StoreError> {
        for _ in 0..MARK_ATTEMPTS {
            let Some(stored) = self.store.get(Collection::PublishMarks, key).await? else {
                return Ok(());
            };
            if decode_mark(&stored).is_some_and(|m| Some(m.incarnation) != incarnation) {
                return Ok(());
            }
            match self
                .store
                .delete(Collection::PublishMarks, key, stored.rev)
                .await
            {
                Ok(()) | Err(StoreError::Conflict { found: None }) => return Ok(()),
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The message each stored app and device group would be published with now, keyed by
    /// mark key: apps first, then groups (a group's state names apps its workers may hear of
    /// first). Four store reads, whatever the number of objects.
    async fn current_messages(&self) -> Result<Vec<(String, BusMessage)>, StoreError> {
        let apps: Vec<App> = self
            .store
            .list(Collection::Apps)
            .await?
            .iter()
            .map(|entry| decode(Collection::Apps, entry))
            .collect::<Result<_, _>>()?;
        let groups: Vec<DeviceGroup> = self
            .store
            .list(Collection::DeviceGroups)
            .await?
            .iter()
            .map(|entry| decode(Collection::DeviceGroups, entry))
            .collect::<Result<_, _>>()?;
        let jobs: Vec<CronJob> = self
            .store
            .list(Collection::CronJobs)
            .await?
            .iter()
            .map(|entry| decode(Collection::CronJobs, entry))
            .collect::<Result<_, _>>()?;
        let apps_by_name: BTreeMap<&AppName, &App> =
            apps.iter().map(|a| (&a.app_name, a)).collect();
        let jobs_by_name: BTreeMap<&str, &CronJob> =
            jobs.iter().map(|j| (j.cron_job_name.as_str(), j)).collect();
        let mut messages = Vec::with_capacity(apps.len() + groups.len());
        for app in &apps {
            let message = BusMessage::AppChanged {
                app: app.clone(),
                device_groups: groups
                    .iter()
                    .filter(|g| g.apps.contains(&app.app_name))
                    .map(|g| g.device_group.clone())
                    .collect(),
            };
            messages.push((mark_key(&message), message));
        }
        for group in groups {
            let info = DeviceGroupInfo {
                apps: group
                    .apps
                    .iter()
                    .filter_map(|a| apps_by_name.get(a).map(|&a| a.clone()))
                    .collect(),
                cron_jobs: group
                    .cron_jobs
                    .iter()
                    .filter_map(|j| jobs_by_name.get(j.as_str()).map(|&j| j.clone()))
                    .collect(),
                apps_list: group.apps,
                cron_jobs_list: group.cron_jobs,
                prune_id: group.prune_id,
                device_group_id: group.device_group_id,
                incarnation: group.incarnation,
            };
            let message = BusMessage::DeviceGroupChanged {
                device_group: group.device_group,
                info,
            };
            messages.push((mark_key(&message), message));
        }
        Ok(messages)
    }

    /// Compares the stored state with the marks and publishes what differs, in order, up to
    /// the first publish the bus refuses.
    async fn sweep(&self, bus: &dyn Bus) -> Result<Swept, StoreError> {
        let current = self.current_messages().await?;
        let marks: BTreeMap<String, Stored> = self
            .store
            .list(Collection::PublishMarks)
            .await?
            .into_iter()
            .collect();
        let mut due = Vec::new();
        let mut live = BTreeSet::new();
        for (key, message) in current {
            let published = marks.get(&key).and_then(decode_mark);
            let now = PublishMark::of(&message);
            if !matches!((&published, &now), (Some(p), Some(n)) if p.same_state(n)) {
                due.push((key.clone(), message));
            }
            live.insert(key);
        }
        for (key, stored) in &marks {
            if live.contains(key) {
                continue;
            }
            match decode_mark(stored).and_then(|m| m.deletion(key)) {
                Some(message) => due.push((key.clone(), message)),
                None => {
                    tracing::warn!(%key, "removing a publish mark that cannot be read");
                    self.store
                        .delete(Collection::PublishMarks, key, stored.rev)
                        .await
                        .or_else(|e| match e {
                            StoreError::Conflict { .. } => Ok(()),
                            e => Err(e),
                        })?;
                }
            }
        }
        let mut published = 0;
        let mut due = due.into_iter();
        while let Some((key, message)) = due.next() {
            match self.publish_marked(bus, &message).await {
                Ok(()) => {
                    tracing::debug!(%key, "published a pending change");
                    published += 1;
                }
                Err(error) => {
                    tracing::debug!(%key, %error, "the bus still refuses publishes");
                    let remaining = std::iter::once(key).chain(due.map(|(k, _)| k)).collect();
                    return Ok(Swept {
                        published,
                        remaining,
                    });
                }
            }
        }
        Ok(Swept {
            published,
            remaining: BTreeSet::new(),
        })
    }
}

#[cfg(test)]
mod tests;
