//! `nebula device-groups ...`.

use clap::Subcommand;

use super::collection::DEVICE_GROUPS;
use super::http::Request;
use super::{OptionalDocument, UpdateArgs};

/// The verbs on device groups.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum DeviceGroups {
    /// The names of every device group.
    List,
    /// A group: its apps and cron jobs by name, and its versions.
    Get {
        /// The device group.
        name: String,
    },
    /// What a group's workers run: the full documents of its apps and cron jobs.
    Info {
        /// The device group.
        name: String,
    },
    /// Creates a group; the document (`{"apps": [...], "cron_jobs": [...]}`) is optional.
    Create {
        /// The device group.
        name: String,
        /// The document.
        #[command(flatten)]
        doc: OptionalDocument,
    },
    /// Replaces a group's lists, or with --patch only the lists given.
    Update {
        /// The device group.
        name: String,
        /// The document and how it is applied.
        #[command(flatten)]
        update: UpdateArgs,
    },
    /// Deletes a group.
    Delete {
        /// The device group.
        name: String,
    },
    /// Removes unused images on the group's hosts.
    Prune {
        /// The device group.
        name: String,
    },
}

impl DeviceGroups {
    /// The request this verb sends.
    ///
    /// # Errors
    /// When the document cannot be read.
    pub fn request(&self) -> Result<Request, String> {
        Ok(match self {
            Self::List => DEVICE_GROUPS.list(),
            Self::Get { name } => DEVICE_GROUPS.get(name),
            Self::Info { name } => DEVICE_GROUPS.view(name, "info"),
            Self::Create { name, doc } => DEVICE_GROUPS.create(name, doc.read()?),
            Self::Update { name, update } => DEVICE_GROUPS.update(name, update)?,
            Self::Delete { name } => DEVICE_GROUPS.delete(name),
            Self::Prune { name } => DEVICE_GROUPS.act(name, "prune"),
        })
    }
}
