//! `nebula users ...` and `nebula user-groups ...` (admin only, except the lists).

use clap::Subcommand;
use reqwest::Method;

use super::http::{Request, Shape};
use super::{Document, OptionalDocument};

/// The verbs on users.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Users {
    /// The names of every user.
    List,
    /// A user (password and token as stored: hashed).
    Get {
        /// The user.
        name: String,
    },
    /// Creates a user from `{"password": ..., "token": ...}` (a token is generated when absent).
    Create {
        /// The user.
        name: String,
        #[command(flatten)]
        doc: OptionalDocument,
    },
    /// Changes a user's password and/or token.
    Update {
        /// The user.
        name: String,
        #[command(flatten)]
        doc: Document,
    },
    /// Deletes a user.
    Delete {
        /// The user.
        name: String,
    },
    /// Replaces a user's token with a new one, shown once.
    Refresh {
        /// The user.
        name: String,
    },
}

/// The verbs on user groups.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum UserGroups {
    /// The names of every user group.
    List,
    /// A user group.
    Get {
        /// The user group.
        name: String,
    },
    /// Creates a user group (`group_members`, `apps`, `device_groups`, `cron_jobs`,
    /// `pruning_allowed`, `admin`; all optional).
    Create {
        /// The user group.
        name: String,
        #[command(flatten)]
        doc: OptionalDocument,
    },
    /// Changes the fields given.
    Update {
        /// The user group.
        name: String,
        #[command(flatten)]
        doc: Document,
    },
    /// Deletes a user group.
    Delete {
        /// The user group.
        name: String,
    },
}

impl Users {
    /// The request this verb sends.
    ///
    /// # Errors
    /// When the document cannot be read.
    pub fn request(&self) -> Result<Request, String> {
        use Method as M;
        Ok(match self {
            Self::List => Request::new(M::GET, &["users"], Shape::Names("users")),
            Self::Get { name } => Request::new(M::GET, &["users", name], Shape::Object),
            Self::Create { name, doc } => {
                Request::new(M::POST, &["users", name], Shape::Object).with_body(doc.read()?)
            }
            Self::Update { name, doc } => {
                Request::new(M::PATCH, &["users", name, "update"], Shape::Object)
                    .with_body(doc.read()?)
            }
            Self::Delete { name } => Request::new(
                M::DELETE,
                &["users", name],
                Shape::Done(format!("deleted user {name}")),
            ),
            Self::Refresh { name } => {
                Request::new(M::POST, &["users", name, "refresh"], Shape::Object)
            }
        })
    }
}

impl UserGroups {
    /// The request this verb sends.
    ///
    /// # Errors
    /// When the document cannot be read.
    pub fn request(&self) -> Result<Request, String> {
        use Method as M;
        const UG: &str = "user_groups";
        Ok(match self {
            Self::List => Request::new(M::GET, &[UG], Shape::Names("user_groups")),
            Self::Get { name } => Request::new(M::GET, &[UG, name], Shape::Object),
            Self::Create { name, doc } => {
                Request::new(M::POST, &[UG, name], Shape::Object).with_body(doc.read()?)
            }
            Self::Update { name, doc } => {
                Request::new(M::PATCH, &[UG, name, "update"], Shape::Object).with_body(doc.read()?)
            }
            Self::Delete { name } => Request::new(
                M::DELETE,
                &[UG, name],
                Shape::Done(format!("deleted user group {name}")),
            ),
        })
    }
}
