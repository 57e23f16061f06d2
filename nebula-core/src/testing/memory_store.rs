use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::store::{Collection, Expect, Store, StoreError, Stored};

type Docs = BTreeMap<(Collection, String), Stored>;

/// A [`Store`] in memory, with the same revision rules as the real ones.
#[derive(Clone, Debug, Default)]
pub struct InMemoryStore {
    docs: Arc<Mutex<Docs>>,
}

impl InMemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Docs>, StoreError> {
        self.docs
            .lock()
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

#[async_trait]
impl Store for InMemoryStore {
    async fn get(&self, coll: Collection, key: &str) -> Result<Option<Stored>, StoreError> {
        Ok(self.lock()?.get(&(coll, key.to_owned())).cloned())
    }

    async fn list(&self, coll: Collection) -> Result<Vec<(String, Stored)>, StoreError> {
        Ok(self
            .lock()?
            .iter()
            .filter(|((c, _), _)| *c == coll)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn put(
        &self,
        coll: Collection,
        key: &str,
        doc: &serde_json::Value,
        expect: Expect,
    ) -> Result<u64, StoreError> {
        let mut docs = self.lock()?;
        let found = docs.get(&(coll, key.to_owned())).map(|s| s.rev);
        let rev = match (expect, found) {
            (Expect::Absent, None) => 1,
            (Expect::Rev(want), Some(have)) if want == have => have + 1,
            _ => return Err(StoreError::Conflict { found }),
        };
        docs.insert(
            (coll, key.to_owned()),
            Stored {
                rev,
                doc: doc.clone(),
            },
        );
        Ok(rev)
    }

    async fn delete(&self, coll: Collection, key: &str, rev: u64) -> Result<(), StoreError> {
        let mut docs = self.lock()?;
        let found = docs.get(&(coll, key.to_owned())).map(|s| s.rev);
        if found != Some(rev) {
            return Err(StoreError::Conflict { found });
        }
        docs.remove(&(coll, key.to_owned()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_the_store_contract() {
        super::super::contract::store(&super::InMemoryStore::new(), "mem").await;
    }
}
