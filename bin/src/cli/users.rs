//! `nebula users ...` and `nebula user-groups ...` (admin only, except the lists).

use clap::Subcommand;

use super::collection::{USER_GROUPS, USERS};
use super::http::Request;
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
        /// The document.
        #[command(flatten)]
        doc: OptionalDocument,
    },
    /// Changes a user's password and/or token.
    Update {
        /// The user.
        name: String,
        /// The document.
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
        /// The document.
        #[command(flatten)]
        doc: OptionalDocument,
    },
    /// Changes the fields given.
    Update {
        /// The user group.
        name: String,
        /// The document.
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
        Ok(match self {
            Self::List => USERS.list(),
            Self::Get { name } => USERS.get(name),
            Self::Create { name, doc } => USERS.create(name, doc.read()?),
            Self::Update { name, doc } => USERS.patch(name, doc.read()?),
            Self::Delete { name } => USERS.delete(name),
            Self::Refresh { name } => USERS.act(name, "refresh"),
        })
    }
}

impl UserGroups {
    /// The request this verb sends.
    ///
    /// # Errors
    /// When the document cannot be read.
    pub fn request(&self) -> Result<Request, String> {
        Ok(match self {
            Self::List => USER_GROUPS.list(),
            Self::Get { name } => USER_GROUPS.get(name),
            Self::Create { name, doc } => USER_GROUPS.create(name, doc.read()?),
            Self::Update { name, doc } => USER_GROUPS.patch(name, doc.read()?),
            Self::Delete { name } => USER_GROUPS.delete(name),
        })
    }
}
