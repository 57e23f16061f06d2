//! The manager's users and user groups: compare-and-swap writes like apps, plus the token
//! index that lets the API authenticate a token without scanning every user.
//!
//! # The token index
//! Users live in [`Collection::Users`] under their name. Next to them, under keys that are never
//! valid user names (`~token/<index>`), are the token buckets: for each [`token_index`] value,
//! the `(user_name, token hash)` entries of the users whose token has that index. An entry stands
//! only while the user's document still holds that very hash, so stale entries (left by a crash
//! or a race) are harmless; entries are added before the user document is written and removed
//! after, so a user's current token is always findable.
//!
//! [`token_index`]: crate::users::token_index

use serde::{Deserialize, Serialize};

use super::Manager;
use super::document::{self, Document, Write};
use crate::store::Collection;
use crate::users::{
    Permissions, TokenCandidate, TokenHash, User, UserGroup, UserGroupPatch, UserUpdate,
    UsersError, validate_user_group, validate_user_group_name, validate_user_name,
};

/// Keys of token buckets start with this; user names never do.
const BUCKET_PREFIX: &str = "~token/";

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Bucket {
    token_index: String,
    entries: Vec<TokenCandidate>,
}

impl Document for Bucket {
    const COLLECTION: Collection = Collection::Users;
    type Error = UsersError;
    fn key(&self) -> String {
        bucket_key(&self.token_index)
    }
    // A bucket is only edited through `cas`, which never asks for these three but the last.
    fn not_found() -> UsersError {
        UsersError::UserNotFound
    }
    fn exists() -> UsersError {
        UsersError::UserExists
    }
    fn contended() -> UsersError {
        UsersError::Contended
    }
}

impl Document for User {
    const COLLECTION: Collection = Collection::Users;
    type Error = UsersError;
    fn key(&self) -> String {
        self.user_name.clone()
    }
    fn not_found() -> UsersError {
        UsersError::UserNotFound
    }
    fn exists() -> UsersError {
        UsersError::UserExists
    }
    fn contended() -> UsersError {
        UsersError::Contended
    }
}

impl Document for UserGroup {
    const COLLECTION: Collection = Collection::UserGroups;
    type Error = UsersError;
    fn key(&self) -> String {
        self.user_group.clone()
    }
    fn not_found() -> UsersError {
        UsersError::UserGroupNotFound
    }
    fn exists() -> UsersError {
        UsersError::UserGroupExists
    }
    fn contended() -> UsersError {
        UsersError::Contended
    }
}

fn bucket_key(index: &str) -> String {
    format!("{BUCKET_PREFIX}{index}")
}

impl Manager {
    async fn stored_user(&self, name: &str) -> Result<Option<(u64, User)>, UsersError> {
        document::get(self.store.as_ref(), name).await
    }

    /// Adds (`add: true`) or removes an entry of a token bucket, with compare-and-swap.
    async fn edit_bucket(
        &self,
        index: &str,
        entry: &TokenCandidate,
        add: bool,
    ) -> Result<(), UsersError> {
        let key = bucket_key(index);
        document::cas::<Bucket, _>(self.store.as_ref(), &key, false, |current| {
            let mut bucket = match current {
                Some(stored) => document::decode::<Bucket>(&key, stored)?,
                None => Bucket {
                    token_index: index.to_owned(),
                    entries: Vec::new(),
                },
            };
            let present = bucket.entries.contains(entry);
            if add == present {
                return Ok((Write::Nothing, ()));
            }
            if add {
                bucket.entries.push(entry.clone());
            } else {
                bucket.entries.retain(|e| e != entry);
            }
            if bucket.entries.is_empty() {
                Ok((Write::Delete, ()))
            } else {
                Ok((Write::Put(bucket), ()))
            }
        })
        .await
    }

    /// Removes a bucket entry; a failure only leaves a harmless stale entry, so it is logged.
    async fn drop_bucket_entry(&self, index: &str, user_name: &str, token: &str) {
        let entry = TokenCandidate {
            user_name: user_name.to_owned(),
            token: token.to_owned(),
        };
        if let Err(error) = self.edit_bucket(index, &entry, false).await {
            tracing::warn!(user = user_name, %error, "could not remove a stale token index entry");
        }
    }

    /// Every user name, sorted.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_users(&self) -> Result<Vec<String>, UsersError> {
        Ok(self
            .store
            .list(Collection::Users)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| !key.starts_with(BUCKET_PREFIX))
            .collect())
    }

    /// One user (with hashes only).
    ///
    /// # Errors
    /// [`UsersError::Invalid`] for a bad name, [`UsersError::UserNotFound`], store failures.
    pub async fn get_user(&self, name: &str) -> Result<User, UsersError> {
        validate_user_name(name).map_err(|e| UsersError::Invalid(vec![e]))?;
        self.stored_user(name)
            .await?
            .map(|(_, user)| user)
            .ok_or(UsersError::UserNotFound)
    }

    /// One user if the name is a valid user name and the user exists (for authentication).
    ///
    /// # Errors
    /// Store failures.
    pub async fn find_user(&self, name: &str) -> Result<Option<User>, UsersError> {
        if validate_user_name(name).is_err() {
            return Ok(None);
        }
        Ok(self.stored_user(name).await?.map(|(_, user)| user))
    }

    /// Creates a user from already hashed secrets.
    ///
    /// # Errors
    /// [`UsersError::Invalid`], [`UsersError::UserExists`], store failures.
    pub async fn create_user(
        &self,
        name: &str,
        password_hash: String,
        token: TokenHash,
    ) -> Result<User, UsersError> {
        validate_user_name(name).map_err(|e| UsersError::Invalid(vec![e]))?;
        if self.stored_user(name).await?.is_some() {
            return Err(UsersError::UserExists);
        }
        let user = User {
            user_name: name.to_owned(),
            password: password_hash,
            token: token.hash,
            token_index: token.index,
        };
        let entry = TokenCandidate {
            user_name: user.user_name.clone(),
            token: user.token.clone(),
        };
        self.edit_bucket(&user.token_index, &entry, true).await?;
        match document::create(self.store.as_ref(), &user).await {
            Ok(()) => {
                tracing::info!(user = name, "user created");
                Ok(user)
            }
            Err(e) => {
                self.drop_bucket_entry(&user.token_index, name, &user.token)
                    .await;
                Err(e)
            }
        }
    }

    /// Changes a user's password and/or token (already hashed).
    ///
    /// # Errors
    /// [`UsersError::Invalid`] (also for an empty update), [`UsersError::UserNotFound`], store
    /// failures.
    pub async fn update_user(&self, name: &str, update: UserUpdate) -> Result<User, UsersError> {
        validate_user_name(name).map_err(|e| UsersError::Invalid(vec![e]))?;
        if update == UserUpdate::default() {
            return Err(UsersError::Invalid(vec![crate::validate::FieldError::new(
                "body",
                "must set password and/or token",
            )]));
        }
        if let Some(token) = &update.token {
            // Findable before the document says so.
            let entry = TokenCandidate {
                user_name: name.to_owned(),
                token: token.hash.clone(),
            };
            self.edit_bucket(&token.index, &entry, true).await?;
        }
        let result = self.write_user_update(name, &update).await;
        match (&result, &update.token) {
            (Ok((_, old)), Some(_)) => {
                self.drop_bucket_entry(&old.token_index, name, &old.token)
                    .await;
            }
            (Err(_), Some(token)) => {
                self.drop_bucket_entry(&token.index, name, &token.hash)
                    .await
            }
            _ => {}
        }
        let (user, _) = result?;
        tracing::info!(user = name, "user updated");
        Ok(user)
    }

    /// The CAS loop of [`Self::update_user`]: the new and the replaced document.
    async fn write_user_update(
        &self,
        name: &str,
        update: &UserUpdate,
    ) -> Result<(User, User), UsersError> {
        document::modify(self.store.as_ref(), name, |user: &mut User| {
            if let Some(password) = &update.password {
                user.password.clone_from(password);
            }
            if let Some(token) = &update.token {
                user.token.clone_from(&token.hash);
                user.token_index.clone_from(&token.index);
            }
            Ok(())
        })
        .await
    }

    /// Deletes a user. Group memberships are left as they are.
    ///
    /// # Errors
    /// [`UsersError::Invalid`], [`UsersError::UserNotFound`], store failures.
    pub async fn delete_user(&self, name: &str) -> Result<(), UsersError> {
        validate_user_name(name).map_err(|e| UsersError::Invalid(vec![e]))?;
        let user = document::delete::<User, _>(self.store.as_ref(), name, |stored| {
            Ok(document::decode::<User>(name, stored)?)
        })
        .await?;
        tracing::info!(user = name, "user deleted");
        self.drop_bucket_entry(&user.token_index, name, &user.token)
            .await;
        Ok(())
    }

    /// The users whose token may be one with this index: one bucket read, whatever the number
    /// of users. The caller verifies each candidate's hash, then checks with [`Self::find_user`]
    /// that the user still holds it.
    ///
    /// # Errors
    /// Store failures.
    pub async fn token_candidates(&self, index: &str) -> Result<Vec<TokenCandidate>, UsersError> {
        match self
            .store
            .get(Collection::Users, &bucket_key(index))
            .await?
        {
            Some(stored) => Ok(document::decode::<Bucket>(&bucket_key(index), &stored)?.entries),
            None => Ok(Vec::new()),
        }
    }

    /// The merged permissions of a user (the union of every group listing them).
    ///
    /// # Errors
    /// Store failures.
    pub async fn permissions(&self, user_name: &str) -> Result<Permissions, UsersError> {
        let groups = self.user_groups().await?;
        Ok(Permissions::of(user_name, &groups))
    }

    async fn user_groups(&self) -> Result<Vec<UserGroup>, UsersError> {
        document::list(self.store.as_ref()).await
    }

    /// Every user group name, sorted.
    ///
    /// # Errors
    /// Store failures.
    pub async fn list_user_groups(&self) -> Result<Vec<String>, UsersError> {
        Ok(self
            .store
            .list(Collection::UserGroups)
            .await?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// One user group.
    ///
    /// # Errors
    /// [`UsersError::Invalid`] for a bad name, [`UsersError::UserGroupNotFound`], store failures.
    pub async fn get_user_group(&self, name: &str) -> Result<UserGroup, UsersError> {
        validate_user_group_name(name).map_err(|e| UsersError::Invalid(vec![e]))?;
        document::get(self.store.as_ref(), name)
            .await?
            .map(|(_, group)| group)
            .ok_or(UsersError::UserGroupNotFound)
    }

    /// Creates a user group: the fields of `patch`, the rest defaulted (no members, no rights).
    ///
    /// # Errors
    /// [`UsersError::Invalid`], [`UsersError::UserGroupExists`], store failures.
    pub async fn create_user_group(
        &self,
        name: &str,
        patch: UserGroupPatch,
    ) -> Result<UserGroup, UsersError> {
        validate_user_group_name(name).map_err(|e| UsersError::Invalid(vec![e]))?;
        let mut group = UserGroup {
            user_group: name.to_owned(),
            ..UserGroup::default()
        };
        patch.apply(&mut group);
        validate_user_group(&group).map_err(UsersError::Invalid)?;
        document::create(self.store.as_ref(), &group).await?;
        tracing::info!(user_group = name, "user group created");
        Ok(group)
    }

    /// Changes the fields given of a user group.
    ///
    /// # Errors
    /// [`UsersError::Invalid`] (also for an empty patch), [`UsersError::UserGroupNotFound`],
    /// store failures.
    pub async fn update_user_group(
        &self,
        name: &str,
        patch: UserGroupPatch,
    ) -> Result<UserGroup, UsersError> {
        validate_user_group_name(name).map_err(|e| UsersError::Invalid(vec![e]))?;
        if patch.is_empty() {
            return Err(UsersError::Invalid(vec![crate::validate::FieldError::new(
                "body",
                "must set at least one field",
            )]));
        }
        let (group, _) = document::modify(self.store.as_ref(), name, |group: &mut UserGroup| {
            patch.clone().apply(group);
            validate_user_group(group).map_err(UsersError::Invalid)
        })
        .await?;
        tracing::info!(user_group = name, "user group updated");
        Ok(group)
    }

    /// Deletes a user group.
    ///
    /// # Errors
    /// [`UsersError::Invalid`], [`UsersError::UserGroupNotFound`], store failures.
    pub async fn delete_user_group(&self, name: &str) -> Result<(), UsersError> {
        validate_user_group_name(name).map_err(|e| UsersError::Invalid(vec![e]))?;
        document::delete::<UserGroup, _>(self.store.as_ref(), name, |_| Ok(())).await?;
        tracing::info!(user_group = name, "user group deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testing::InMemoryStore;
    use crate::users::{Access, token_index};

    fn manager() -> Manager {
        Manager::new(Arc::new(InMemoryStore::new()), None)
    }

    fn token(plain: &str) -> TokenHash {
        TokenHash {
            hash: format!("hash-of-{plain}"),
            index: token_index(plain),
        }
    }

    #[tokio::test]
    async fn users_crud_keeps_the_token_index_exact() {
        let m = manager();
        let alice = m
            .create_user("alice", "pw-hash".into(), token("t1"))
            .await
            .unwrap();
        assert_eq!(alice.token_index, token_index("t1"));
        assert!(matches!(
            m.create_user("alice", "x".into(), token("t9")).await,
            Err(UsersError::UserExists)
        ));
        assert!(
            m.token_candidates(&token_index("t9"))
                .await
                .unwrap()
                .is_empty(),
            "a refused create leaves no entry"
        );
        m.create_user("bob", "pw".into(), token("t2"))
            .await
            .unwrap();
        assert_eq!(m.list_users().await.unwrap(), ["alice", "bob"]);
        let cands = m.token_candidates(&token_index("t1")).await.unwrap();
        assert_eq!(cands.len(), 1);
        assert_eq!(
            (cands[0].user_name.as_str(), cands[0].token.as_str()),
            ("alice", "hash-of-t1")
        );

        let updated = m
            .update_user(
                "alice",
                UserUpdate {
                    token: Some(token("t3")),
                    ..UserUpdate::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(updated.password, "pw-hash");
        assert!(
            m.token_candidates(&token_index("t1"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            m.token_candidates(&token_index("t3")).await.unwrap()[0].user_name,
            "alice"
        );
        let updated = m
            .update_user(
                "alice",
                UserUpdate {
                    password: Some("pw2".into()),
                    ..UserUpdate::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (updated.password.as_str(), updated.token.as_str()),
            ("pw2", "hash-of-t3")
        );
        assert!(matches!(
            m.update_user("alice", UserUpdate::default()).await,
            Err(UsersError::Invalid(_))
        ));
        assert!(matches!(
            m.update_user(
                "carol",
                UserUpdate {
                    password: Some("p".into()),
                    token: None
                }
            )
            .await,
            Err(UsersError::UserNotFound)
        ));

        m.delete_user("alice").await.unwrap();
        assert!(matches!(
            m.delete_user("alice").await,
            Err(UsersError::UserNotFound)
        ));
        assert!(matches!(
            m.get_user("alice").await,
            Err(UsersError::UserNotFound)
        ));
        assert!(
            m.token_candidates(&token_index("t3"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(m.list_users().await.unwrap(), ["bob"]);
        assert!(matches!(
            m.get_user("~token/abcd").await,
            Err(UsersError::Invalid(_))
        ));
        assert!(m.find_user("~token/abcd").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn user_groups_crud_and_permissions() {
        let m = manager();
        let group = m
            .create_user_group(
                "ops",
                UserGroupPatch {
                    group_members: Some(vec!["alice".into()]),
                    apps: Some([("site".to_owned(), Access::Ro)].into()),
                    ..UserGroupPatch::default()
                },
            )
            .await
            .unwrap();
        assert!(!group.admin && !group.pruning_allowed);
        assert!(matches!(
            m.create_user_group("ops", UserGroupPatch::default()).await,
            Err(UsersError::UserGroupExists)
        ));
        m.create_user_group(
            "writers",
            UserGroupPatch {
                group_members: Some(vec!["alice".into(), "bob".into()]),
                apps: Some([("site".to_owned(), Access::Rw)].into()),
                ..UserGroupPatch::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(m.list_user_groups().await.unwrap(), ["ops", "writers"]);
        assert_eq!(
            m.permissions("alice").await.unwrap().apps["site"],
            Access::Rw
        );
        m.update_user_group(
            "writers",
            UserGroupPatch {
                group_members: Some(vec!["bob".into()]),
                ..UserGroupPatch::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            m.permissions("alice").await.unwrap().apps["site"],
            Access::Ro
        );
        assert!(matches!(
            m.update_user_group(
                "nope",
                UserGroupPatch {
                    admin: Some(true),
                    ..UserGroupPatch::default()
                }
            )
            .await,
            Err(UsersError::UserGroupNotFound)
        ));
        assert!(matches!(
            m.update_user_group("ops", UserGroupPatch::default()).await,
            Err(UsersError::Invalid(_))
        ));
        assert!(matches!(
            m.update_user_group(
                "ops",
                UserGroupPatch {
                    group_members: Some(vec!["bad name".into()]),
                    ..UserGroupPatch::default()
                }
            )
            .await,
            Err(UsersError::Invalid(_))
        ));
        m.delete_user_group("ops").await.unwrap();
        assert!(matches!(
            m.delete_user_group("ops").await,
            Err(UsersError::UserGroupNotFound)
        ));
        assert!(m.permissions("alice").await.unwrap().apps.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_token_changes_leave_the_current_token_findable() {
        let m = manager();
        m.create_user("alice", "pw".into(), token("t0"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let m = m.clone();
            tasks.push(tokio::spawn(async move {
                // Real hashes are salted: every token set gets its own hash.
                let token = TokenHash {
                    hash: format!("hash-{i}"),
                    index: token_index(&format!("t{}", i % 3)),
                };
                m.update_user(
                    "alice",
                    UserUpdate {
                        token: Some(token),
                        ..UserUpdate::default()
                    },
                )
                .await
                .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let user = m.get_user("alice").await.unwrap();
        let cands = m.token_candidates(&user.token_index).await.unwrap();
        assert!(
            cands
                .iter()
                .any(|c| c.user_name == "alice" && c.token == user.token)
        );
    }
}
