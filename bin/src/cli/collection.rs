//! The requests every noun of the CLI shares: the v2 API keeps each kind of named document
//! (apps, device groups, cron jobs, users, user groups) as a collection under one path.

use reqwest::Method;
use serde_json::Value;

use super::UpdateArgs;
use super::http::{Request, Shape};

/// A collection of named documents under `/api/v2/<path>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Collection {
    /// The path segment, also the key of the list of names the manager replies with.
    pub path: &'static str,
    /// What one document is called in messages (`app`, `device group`, ...).
    pub noun: &'static str,
}

/// Apps.
pub const APPS: Collection = Collection::new("apps", "app");
/// Device groups.
pub const DEVICE_GROUPS: Collection = Collection::new("device_groups", "device group");
/// Cron jobs.
pub const CRON_JOBS: Collection = Collection::new("cron_jobs", "cron job");
/// Users.
pub const USERS: Collection = Collection::new("users", "user");
/// User groups.
pub const USER_GROUPS: Collection = Collection::new("user_groups", "user group");

impl Collection {
    /// The collection under `/api/v2/<path>` of documents called `noun`.
    #[must_use]
    pub const fn new(path: &'static str, noun: &'static str) -> Self {
        Self { path, noun }
    }

    /// `GET <path>`: the names of every document, as a one-column table.
    #[must_use]
    pub fn list(self) -> Request {
        Request::new(Method::GET, &[self.path], Shape::Names(self.path))
    }

    /// `GET <path>/<name>`: one document.
    #[must_use]
    pub fn get(self, name: &str) -> Request {
        Request::new(Method::GET, &[self.path, name], Shape::Object)
    }

    /// `POST <path>/<name>` with `doc`: creates the document.
    #[must_use]
    pub fn create(self, name: &str, doc: Value) -> Request {
        Request::new(Method::POST, &[self.path, name], Shape::Object).with_body(doc)
    }

    /// `POST <path>/<name>/update` with the whole document, or `PATCH` with --patch.
    ///
    /// # Errors
    /// When the document cannot be read.
    pub fn update(self, name: &str, update: &UpdateArgs) -> Result<Request, String> {
        update.request(&[self.path, name, "update"])
    }

    /// `PATCH <path>/<name>/update` with `doc`: changes only the fields given.
    #[must_use]
    pub fn patch(self, name: &str, doc: Value) -> Request {
        Request::new(Method::PATCH, &[self.path, name, "update"], Shape::Object).with_body(doc)
    }

    /// `DELETE <path>/<name>`, shown as `deleted <noun> <name>`.
    #[must_use]
    pub fn delete(self, name: &str) -> Request {
        let done = Shape::Done(format!("deleted {} {name}", self.noun));
        Request::new(Method::DELETE, &[self.path, name], done)
    }

    /// `GET <path>/<name>/<view>`: what the manager derives from a document (`status`,
    /// `info`).
    #[must_use]
    pub fn view(self, name: &str, view: &str) -> Request {
        Request::new(Method::GET, &[self.path, name, view], Shape::Object)
    }

    /// `POST <path>/<name>/<action>` without a body (`stop`, `prune`, `refresh`, ...).
    #[must_use]
    pub fn act(self, name: &str, action: &str) -> Request {
        Request::new(Method::POST, &[self.path, name, action], Shape::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_collection_lists_by_its_path_and_names_itself_when_deleting() {
        for (c, deleted) in [
            (APPS, "deleted app x"),
            (DEVICE_GROUPS, "deleted device group x"),
            (CRON_JOBS, "deleted cron job x"),
            (USERS, "deleted user x"),
            (USER_GROUPS, "deleted user group x"),
        ] {
            let list = c.list();
            assert_eq!(
                (list.method, list.path, list.shape),
                (Method::GET, vec![c.path.to_owned()], Shape::Names(c.path))
            );
            let delete = c.delete("x");
            assert_eq!(
                (delete.method, delete.path, delete.shape),
                (
                    Method::DELETE,
                    vec![c.path.to_owned(), "x".to_owned()],
                    Shape::Done(deleted.to_owned())
                )
            );
        }
        let patch = USERS.patch("u", serde_json::json!({"token": "t"}));
        assert_eq!(
            (patch.method, patch.path.join("/")),
            (Method::PATCH, "users/u/update".to_owned())
        );
        assert!(patch.body.is_some());
    }
}
