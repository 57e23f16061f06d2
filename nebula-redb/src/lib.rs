//! Nebula's embedded default [`Store`]: documents with compare-and-swap revisions in one
//! [redb](https://docs.rs/redb) file.
//!
//! [`RedbStore::open`] takes a data directory and keeps everything in `<dir>/nebula.redb`. The
//! file holds one table per [`Collection`], named by [`Collection::name`]; a key is the
//! document's key and a value is a small record, the JSON object `{"rev": <u64>, "doc": <doc>}`.
//!
//! # Guarantees
//! - Every write is one redb write transaction committed with [`Durability::Immediate`], so the
//!   file is fsynced before `put` or `delete` returns: an acknowledged write survives a crash.
//! - The revision check and the write happen in the same write transaction, and redb runs one
//!   write transaction at a time, so compare-and-swap is atomic.
//! - The file is locked while open: a second process (or a second open in this process) gets
//!   [`StoreError::Unavailable`] saying another nebula process uses the data directory.
//!
//! Every call runs on tokio's blocking pool ([`tokio::task::spawn_blocking`]), so it must be
//! made from within a tokio runtime. I/O failures map to [`StoreError::Unavailable`]; records or
//! tables that cannot be decoded map to [`StoreError::Corrupt`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use nebula_core::store::{Collection, Expect, Store, StoreError, Stored};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

/// The name of the database file inside the data directory.
pub const FILE_NAME: &str = "nebula.redb";

/// The [`Store`] on a redb file. Cheap to clone: clones share one open database.
#[derive(Clone)]
pub struct RedbStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A stored value, as written.
#[derive(Serialize)]
struct RecordRef<'a> {
    rev: u64,
    doc: &'a serde_json::Value,
}

/// A stored value, as read.
#[derive(Deserialize)]
struct Record {
    rev: u64,
    doc: serde_json::Value,
}

/// Only the revision of a stored value (the document is skipped, not built).
#[derive(Deserialize)]
struct RevOnly {
    rev: u64,
}

fn table(coll: Collection) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(coll.name())
}

impl RedbStore {
    /// Opens the store in `dir`, creating the directory and `<dir>/nebula.redb` if missing.
    ///
    /// Blocks while it opens the file, checks its integrity and creates the tables of every
    /// [`Collection`]; call it at startup, not on an async hot path.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] if the directory or file cannot be created or opened, or if
    /// another process (another nebula) has the file open; [`StoreError::Corrupt`] if the file
    /// is not a readable redb database.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                    "data dir {} is in use by another nebula process ({} is locked); \
                     stop it or choose another data dir",
                    dir.display(),
                    path.display()
                )),
                e => with_context(&format!("cannot open {}", path.display()), e),
            })?;
        // Create every collection's table up front, so reads never meet a missing table.
        let txn = db.begin_write().map_err(map_err)?;
        for coll in Collection::ALL {
            txn.open_table(table(coll)).map_err(map_err)?;
        }
        txn.commit().map_err(map_err)?;
        Ok(Self {
            db: Arc::new(db),
            path: Arc::new(path),
        })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the database on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

/// Maps any redb error: undecodable data is `Corrupt`, everything else `Unavailable`.
fn map_err(e: impl Into<redb::Error>) -> StoreError {
    with_context("redb", e)
}

fn with_context(context: &str, e: impl Into<redb::Error>) -> StoreError {
    use redb::Error as E;
    let e = e.into();
    let msg = format!("{context}: {e}");
    match e {
        E::Corrupted(_)
        | E::UpgradeRequired(_)
        | E::TableTypeMismatch { .. }
        | E::TypeDefinitionChanged { .. }
        | E::TableIsMultimap(_)
        | E::TableIsNotMultimap(_) => StoreError::Corrupt(msg),
        _ => StoreError::Unavailable(msg),
    }
}

fn corrupt(coll: Collection, key: &str, e: &serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!(
        "record {}/{key} cannot be decoded: {e}",
        coll.name()
    ))
}

fn decode(coll: Collection, key: &str, bytes: &[u8]) -> Result<Stored, StoreError> {
    let r: Record = serde_json::from_slice(bytes).map_err(|e| corrupt(coll, key, &e))?;
    Ok(Stored {
        rev: r.rev,
        doc: r.doc,
    })
}

fn decode_rev(coll: Collection, key: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    let r: RevOnly = serde_json::from_slice(bytes).map_err(|e| corrupt(coll, key, &e))?;
    Ok(r.rev)
}

/// A read-only view of a collection's table, or `None` if the table does not exist yet.
fn read_table(
    db: &Database,
    coll: Collection,
) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>, StoreError> {
    let txn = db.begin_read().map_err(map_err)?;
    match txn.open_table(table(coll)) {
        Ok(t) => Ok(Some(t)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(map_err(e)),
    }
}

/// Runs `f` on the collection's table in one durable write transaction. The transaction
/// commits if `f` returns `Ok` and is rolled back otherwise.
fn write<T>(
    db: &Database,
    coll: Collection,
    f: impl FnOnce(&mut redb::Table<'_, &'static str, &'static [u8]>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut txn = db.begin_write().map_err(map_err)?;
    txn.set_durability(Durability::Immediate).map_err(map_err)?;
    let out = {
        let mut t = txn.open_table(table(coll)).map_err(map_err)?;
        f(&mut t)
    };
    match out {
        Ok(v) => {
            txn.commit().map_err(map_err)?;
            Ok(v)
        }
        Err(e) => {
            // The rollback's own failure matters less than the reason for it.
            let _ = txn.abort();
            Err(e)
        }
    }
}

#[async_trait]
impl Store for RedbStore {
    async fn get(&self, coll: Collection, key: &str) -> Result<Option<Stored>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let Some(t) = read_table(db, coll)? else {
                return Ok(None);
            };
            match t.get(key.as_str()).map_err(map_err)? {
                Some(v) => decode(coll, &key, v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(&self, coll: Collection) -> Result<Vec<(String, Stored)>, StoreError> {
        self.blocking(move |db| {
            let Some(t) = read_table(db, coll)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for entry in t.iter().map_err(map_err)? {
                let (k, v) = entry.map_err(map_err)?;
                let key = k.value().to_owned();
                let stored = decode(coll, &key, v.value())?;
                out.push((key, stored));
            }
            Ok(out)
        })
        .await
    }

    async fn put(
        &self,
        coll: Collection,
        key: &str,
        doc: &serde_json::Value,
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let key = key.to_owned();
        let doc = doc.clone();
        self.blocking(move |db| {
            write(db, coll, |t| {
                let found = match t.get(key.as_str()).map_err(map_err)? {
                    Some(v) => Some(decode_rev(coll, &key, v.value())?),
                    None => None,
                };
                let rev = match (expect, found) {
                    (Expect::Absent, None) => 1,
                    (Expect::Rev(want), Some(have)) if want == have => {
                        have.checked_add(1).ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "record {}/{key} is at the last revision",
                                coll.name()
                            ))
                        })?
                    }
                    _ => return Err(StoreError::Conflict { found }),
                };
                let bytes = serde_json::to_vec(&RecordRef { rev, doc: &doc }).map_err(|e| {
                    StoreError::Unavailable(format!("cannot encode {}/{key}: {e}", coll.name()))
                })?;
                t.insert(key.as_str(), bytes.as_slice()).map_err(map_err)?;
                Ok(rev)
            })
        })
        .await
    }

    async fn delete(&self, coll: Collection, key: &str, rev: u64) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            write(db, coll, |t| {
                let found = match t.get(key.as_str()).map_err(map_err)? {
                    Some(v) => Some(decode_rev(coll, &key, v.value())?),
                    None => None,
                };
                if found != Some(rev) {
                    return Err(StoreError::Conflict { found });
                }
                t.remove(key.as_str()).map_err(map_err)?;
                Ok(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use nebula_core::store::{Collection, Expect, Store, StoreError};
    use serde_json::json;

    use super::{RedbStore, table};

    fn dir(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("nebula-redb-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[tokio::test]
    async fn an_undecodable_record_is_corrupt() {
        let d = dir("corrupt");
        let store = RedbStore::open(&d).unwrap();
        let coll = Collection::Apps;
        store
            .put(coll, "good", &json!({"v": 1}), Expect::Absent)
            .await
            .unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(table(coll))
            .unwrap()
            .insert("bad", b"not json".as_slice())
            .unwrap();
        txn.commit().unwrap();

        let err = store.get(coll, "bad").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt(m) if m.contains("nebula_apps/bad")),
            "{err:?}"
        );
        let err = store.list(coll).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        let err = store
            .put(coll, "bad", &json!({}), Expect::Rev(1))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        let err = store.delete(coll, "bad", 1).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert_eq!(
            store.get(coll, "good").await.unwrap().unwrap().rev,
            1,
            "others still read"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&d);
    }
}
