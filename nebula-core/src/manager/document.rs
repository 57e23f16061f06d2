//! The typed document layer over [`Store`]: what a stored kind is ([`Document`]) and the one
//! create / read / modify / delete every manager command uses, with the compare-and-swap
//! retry in one place ([`cas`]).
//!
//! # Adding a stored kind
//! 1. Define the type (`Serialize + Deserialize + Clone`) and, if new, its [`Collection`].
//! 2. `impl Document for Kind`: its collection, its key, its error type and the three errors
//!    a command reports (not found, exists, contended) — a few lines, next to the commands.
//! 3. Write the commands with [`create`], [`get`], [`list`], [`modify`] and [`delete`] (or
//!    [`cas`] for a write that is not one of those, e.g. an upsert); none of them holds a
//!    retry loop or a `serde_json` call of its own.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::CAS_ATTEMPTS;
use crate::store::{Collection, Expect, Store, StoreError, Stored};

/// A kind of document the manager keeps in the [`Store`].
pub(crate) trait Document: Serialize + DeserializeOwned + Clone + Send + Sync {
    /// The collection documents of this kind live in.
    const COLLECTION: Collection;
    /// The error the commands on this kind return.
    type Error: From<StoreError>;
    /// The document's key in [`Self::COLLECTION`].
    fn key(&self) -> String;
    /// The error for a command on a key that holds no document.
    fn not_found() -> Self::Error;
    /// The error for a create of a key that holds a document.
    fn exists() -> Self::Error;
    /// The error for a write that kept losing to concurrent writers.
    fn contended() -> Self::Error;
}

/// Reads a stored document of kind `D`.
///
/// # Errors
/// [`StoreError::Malformed`] (keeping the decoder's error) when it is not a `D`.
pub(crate) fn decode<D: Document>(key: &str, stored: &Stored) -> Result<D, StoreError> {
    serde_json::from_value(stored.doc.clone()).map_err(|source| StoreError::Malformed {
        collection: D::COLLECTION.name(),
        key: key.to_owned(),
        source,
    })
}

/// The stored form of `doc`.
///
/// # Errors
/// [`StoreError::Malformed`] when `doc` does not serialize (a map with non-string keys).
pub(crate) fn encode<D: Document>(doc: &D) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(doc).map_err(|source| StoreError::Malformed {
        collection: D::COLLECTION.name(),
        key: doc.key(),
        source,
    })
}

/// One document with its revision, if the key holds one.
///
/// # Errors
/// Store failures, an undecodable document.
pub(crate) async fn get<D: Document>(
    store: &dyn Store,
    key: &str,
) -> Result<Option<(u64, D)>, D::Error> {
    match store.get(D::COLLECTION, key).await? {
        Some(stored) => Ok(Some((stored.rev, decode(key, &stored)?))),
        None => Ok(None),
    }
}

/// Every document of the kind, sorted by key.
///
/// # Errors
/// Store failures, an undecodable document.
pub(crate) async fn list<D: Document>(store: &dyn Store) -> Result<Vec<D>, D::Error> {
    Ok(store
        .list(D::COLLECTION)
        .await?
        .iter()
        .map(|(key, stored)| decode(key, stored))
        .collect::<Result<_, _>>()?)
}

/// Stores a new document under its key.
///
/// # Errors
/// [`Document::exists`] when the key holds a document, store failures.
pub(crate) async fn create<D: Document>(store: &dyn Store, doc: &D) -> Result<(), D::Error> {
    match store
        .put(D::COLLECTION, &doc.key(), &encode(doc)?, Expect::Absent)
        .await
    {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict { .. }) => Err(D::exists()),
        Err(e) => Err(e.into()),
    }
}

/// Read-modify-write with compare-and-swap: `change` edits the document (and may refuse);
/// the result is stored at the revision it was read at, re-read and re-changed on conflict.
/// Returns the stored document and the one it replaced.
///
/// # Errors
/// [`Document::not_found`], what `change` returns, [`Document::contended`], store failures.
pub(crate) async fn modify<D: Document>(
    store: &dyn Store,
    key: &str,
    mut change: impl FnMut(&mut D) -> Result<(), D::Error>,
) -> Result<(D, D), D::Error> {
    cas::<D, _>(store, key, true, |current| {
        let old: D = decode(key, current.ok_or_else(D::not_found)?)?;
        let mut new = old.clone();
        change(&mut new)?;
        Ok((Write::Put(new.clone()), (new, old)))
    })
    .await
}

/// Deletes the document under `key` at the revision read; `inspect` looks at it first (and
/// may refuse) and gives what is returned.
///
/// # Errors
/// [`Document::not_found`], what `inspect` returns, [`Document::contended`], store failures.
pub(crate) async fn delete<D: Document, T>(
    store: &dyn Store,
    key: &str,
    mut inspect: impl FnMut(&Stored) -> Result<T, D::Error>,
) -> Result<T, D::Error> {
    cas::<D, _>(store, key, true, |current| {
        let out = inspect(current.ok_or_else(D::not_found)?)?;
        Ok((Write::Delete, out))
    })
    .await
}

/// What one attempt of [`cas`] writes.
pub(crate) enum Write<D> {
    /// Store this document (at the revision read, or as new if there was none).
    Put(D),
    /// Delete the document read (nothing if there was none).
    Delete,
    /// Write nothing.
    Nothing,
}

/// The compare-and-swap retry: reads `key`, lets `step` decide the write and its result,
/// writes expecting exactly what was read, and starts again when another writer came first,
/// at most [`CAS_ATTEMPTS`] times. With `vanished_is_not_found`, a document deleted between
/// the read and the write ends the loop with [`Document::not_found`] instead of a retry.
///
/// # Errors
/// What `step` returns, [`Document::contended`], store failures.
pub(crate) async fn cas<D: Document, T>(
    store: &dyn Store,
    key: &str,
    vanished_is_not_found: bool,
    mut step: impl FnMut(Option<&Stored>) -> Result<(Write<D>, T), D::Error>,
) -> Result<T, D::Error> {
    for _ in 0..CAS_ATTEMPTS {
        let current = store.get(D::COLLECTION, key).await?;
        let (write, out) = step(current.as_ref())?;
        let expect = current
            .as_ref()
            .map_or(Expect::Absent, |s| Expect::Rev(s.rev));
        let written = match (write, &current) {
            (Write::Put(doc), _) => store
                .put(D::COLLECTION, key, &encode(&doc)?, expect)
                .await
                .map(drop),
            (Write::Delete, Some(stored)) => store.delete(D::COLLECTION, key, stored.rev).await,
            (Write::Delete | Write::Nothing, _) => Ok(()),
        };
        match written {
            Ok(()) => return Ok(out),
            Err(StoreError::Conflict { found: None })
                if vanished_is_not_found && current.is_some() =>
            {
                return Err(D::not_found());
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(D::contended())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use serde::Deserialize;

    use super::*;
    use crate::testing::InMemoryStore;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Note {
        name: String,
        n: u64,
    }

    #[derive(Debug, PartialEq)]
    enum NoteError {
        NotFound,
        Exists,
        Contended,
        Refused,
        Store(String),
    }

    impl From<StoreError> for NoteError {
        fn from(e: StoreError) -> Self {
            Self::Store(e.to_string())
        }
    }

    impl Document for Note {
        const COLLECTION: Collection = Collection::CronJobs;
        type Error = NoteError;
        fn key(&self) -> String {
            self.name.clone()
        }
        fn not_found() -> NoteError {
            NoteError::NotFound
        }
        fn exists() -> NoteError {
            NoteError::Exists
        }
        fn contended() -> NoteError {
            NoteError::Contended
        }
    }

    fn note(n: u64) -> Note {
        Note {
            name: "a".into(),
            n,
        }
    }

    #[tokio::test]
    async fn create_get_list_modify_delete() {
        let store = InMemoryStore::new();
        assert_eq!(get::<Note>(&store, "a").await, Ok(None));
        create(&store, &note(1)).await.unwrap();
        assert_eq!(create(&store, &note(2)).await, Err(NoteError::Exists));
        assert_eq!(get::<Note>(&store, "a").await, Ok(Some((1, note(1)))));
        let (new, old) = modify::<Note>(&store, "a", |d| {
            d.n += 1;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!((new, old), (note(2), note(1)));
        assert_eq!(
            modify::<Note>(&store, "a", |_| Err(NoteError::Refused)).await,
            Err(NoteError::Refused)
        );
        assert_eq!(list::<Note>(&store).await, Ok(vec![note(2)]));
        let rev = delete::<Note, _>(&store, "a", |s| Ok(s.rev)).await.unwrap();
        assert_eq!(rev, 2);
        assert_eq!(
            delete::<Note, _>(&store, "a", |_| Ok(())).await,
            Err(NoteError::NotFound)
        );
        assert_eq!(
            modify::<Note>(&store, "a", |_| Ok(())).await,
            Err(NoteError::NotFound)
        );
    }

    #[tokio::test]
    async fn a_document_that_does_not_decode_is_malformed_with_its_cause() {
        let store = InMemoryStore::new();
        store
            .put(
                Collection::CronJobs,
                "a",
                &serde_json::json!({"name": 1}),
                Expect::Absent,
            )
            .await
            .unwrap();
        let err = decode::<Note>(
            "a",
            &store.get(Collection::CronJobs, "a").await.unwrap().unwrap(),
        )
        .unwrap_err();
        assert!(matches!(&err, StoreError::Malformed { key, .. } if key == "a"));
        assert!(std::error::Error::source(&err).is_some(), "keeps the cause");
        assert!(matches!(
            get::<Note>(&store, "a").await,
            Err(NoteError::Store(m)) if m.contains("nebula_cron_jobs/a")
        ));
    }

    /// A store whose writes lose to another writer the first `losses` times.
    struct Losing {
        inner: InMemoryStore,
        losses: AtomicUsize,
    }

    #[async_trait]
    impl Store for Losing {
        async fn get(&self, coll: Collection, key: &str) -> Result<Option<Stored>, StoreError> {
            self.inner.get(coll, key).await
        }
        async fn list(&self, coll: Collection) -> Result<Vec<(String, Stored)>, StoreError> {
            self.inner.list(coll).await
        }
        async fn put(
            &self,
            coll: Collection,
            key: &str,
            doc: &serde_json::Value,
            expect: Expect,
        ) -> Result<u64, StoreError> {
            if self.losses.load(Ordering::SeqCst) > 0 {
                self.losses.fetch_sub(1, Ordering::SeqCst);
                return Err(StoreError::Conflict { found: Some(99) });
            }
            self.inner.put(coll, key, doc, expect).await
        }
        async fn delete(&self, coll: Collection, key: &str, rev: u64) -> Result<(), StoreError> {
            self.inner.delete(coll, key, rev).await
        }
    }

    #[tokio::test]
    async fn a_lost_write_is_retried_and_endless_losses_are_contended() {
        let store = Arc::new(Losing {
            inner: InMemoryStore::new(),
            losses: AtomicUsize::new(0),
        });
        create(store.as_ref(), &note(1)).await.unwrap();
        store.losses.store(3, Ordering::SeqCst);
        let mut calls = 0;
        let (new, _) = modify::<Note>(store.as_ref(), "a", |d| {
            calls += 1;
            d.n = 7;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!((new.n, calls), (7, 4), "re-read and re-changed per loss");
        store.losses.store(usize::MAX, Ordering::SeqCst);
        assert_eq!(
            modify::<Note>(store.as_ref(), "a", |_| Ok(())).await,
            Err(NoteError::Contended)
        );
    }

    #[tokio::test]
    async fn cas_upserts_and_deletes_by_what_it_read() {
        let store = InMemoryStore::new();
        let bump = |current: Option<&Stored>| {
            let mut n = match current {
                Some(s) => decode::<Note>("a", s)?,
                None => note(0),
            };
            n.n += 1;
            let write = if n.n > 2 {
                Write::Delete
            } else {
                Write::Put(n.clone())
            };
            Ok::<_, NoteError>((write, n.n))
        };
        assert_eq!(cas::<Note, _>(&store, "a", false, bump).await, Ok(1));
        assert_eq!(cas::<Note, _>(&store, "a", false, bump).await, Ok(2));
        assert_eq!(cas::<Note, _>(&store, "a", false, bump).await, Ok(3));
        assert_eq!(get::<Note>(&store, "a").await, Ok(None), "deleted");
        let nothing = cas::<Note, _>(&store, "a", false, |_| Ok((Write::Nothing, ()))).await;
        assert_eq!(nothing, Ok(()));
        assert_eq!(get::<Note>(&store, "a").await, Ok(None));
    }
}
