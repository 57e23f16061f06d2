//! The Store seam: durable documents with compare-and-swap on a per-key revision.
//!
//! Documents are JSON values grouped in [`Collection`]s. Every write names the revision it
//! expects, so two API managers never lose each other's updates: the loser gets
//! [`StoreError::Conflict`], re-reads and tries again.
//!
//! The manager reads and writes typed documents over this seam (`manager::document`: a
//! stored kind implements `Document`, and one generic create / modify / delete holds the
//! compare-and-swap retry).

use async_trait::async_trait;

/// The kinds of documents Nebula keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Collection {
    /// App documents, keyed by app name.
    Apps,
    /// Device groups, keyed by group name.
    DeviceGroups,
    /// Cron jobs, keyed by job name.
    CronJobs,
    /// Users, keyed by user name.
    Users,
    /// User groups, keyed by group name.
    UserGroups,
    /// Worker reports, keyed by a sortable report id.
    Reports,
    /// What the managers last published per topic (`app/<name>`, `dg/<group>`): the marks
    /// the manager's outbox compares the stored state with (`manager::outbox`).
    PublishMarks,
    /// Fleet rollouts, keyed by app name (each app's last one).
    FleetRollouts,
}

impl Collection {
    /// The collection's name, as the original's MongoDB collection.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Apps => "nebula_apps",
            Self::DeviceGroups => "nebula_device_groups",
            Self::CronJobs => "nebula_cron_jobs",
            Self::Users => "nebula_users",
            Self::UserGroups => "nebula_user_groups",
            Self::Reports => "nebula_reports",
            Self::PublishMarks => "nebula_publish_marks",
            Self::FleetRollouts => "nebula_fleet_rollouts",
        }
    }

    /// Every collection.
    pub const ALL: [Self; 8] = [
        Self::Apps,
        Self::DeviceGroups,
        Self::CronJobs,
        Self::Users,
        Self::UserGroups,
        Self::Reports,
        Self::PublishMarks,
        Self::FleetRollouts,
    ];
}

/// A document with its store revision (1 on create, +1 per write).
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// The store revision.
    pub rev: u64,
    /// The document.
    pub doc: serde_json::Value,
}

/// What a write expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No document under the key.
    Absent,
    /// A document at exactly this revision.
    Rev(u64),
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The document is not at the expected revision (or exists when absence was expected).
    #[error("conflict: the document changed (found revision {found:?})")]
    Conflict {
        /// The revision found, if any.
        found: Option<u64>,
    },
    /// The backend cannot be reached now; retrying may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend holds something it cannot read.
    #[error("store data corrupt: {0}")]
    Corrupt(String),
    /// A stored document is not of the kind its collection holds (or a document does not
    /// serialize); the decoder's error is the source.
    #[error("store data corrupt: {collection}/{key}: {source}")]
    Malformed {
        /// The collection's name.
        collection: &'static str,
        /// The document's key.
        key: String,
        /// Why it does not decode.
        #[source]
        source: serde_json::Error,
    },
}

/// Durable documents with compare-and-swap.
///
/// # Guarantees (checked by `testing::contract::store`)
/// - A write that returned `Ok` survives a crash of the process.
/// - `put` with [`Expect::Absent`] fails with `Conflict` if the key exists; with
///   [`Expect::Rev`] it fails unless the key holds exactly that revision.
/// - `list` returns keys in ascending order.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// One document.
    async fn get(&self, coll: Collection, key: &str) -> Result<Option<Stored>, StoreError>;
    /// Every document of a collection, sorted by key.
    async fn list(&self, coll: Collection) -> Result<Vec<(String, Stored)>, StoreError>;
    /// Writes a document if the expectation holds; returns the new revision.
    async fn put(
        &self,
        coll: Collection,
        key: &str,
        doc: &serde_json::Value,
        expect: Expect,
    ) -> Result<u64, StoreError>;
    /// Deletes a document if it is at revision `rev`.
    async fn delete(&self, coll: Collection, key: &str, rev: u64) -> Result<(), StoreError>;
}
