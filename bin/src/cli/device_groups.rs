//! `nebula device-groups ...`.

use clap::Subcommand;
use reqwest::Method;

use super::http::{Request, Shape};
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
        #[command(flatten)]
        doc: OptionalDocument,
    },
    /// Replaces a group's lists, or with --patch only the lists given.
    Update {
        /// The device group.
        name: String,
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
        use Method as M;
        const DG: &str = "device_groups";
        Ok(match self {
            Self::List => Request::new(M::GET, &[DG], Shape::Names("device_groups")),
            Self::Get { name } => Request::new(M::GET, &[DG, name], Shape::Object),
            Self::Info { name } => Request::new(M::GET, &[DG, name, "info"], Shape::Object),
            Self::Create { name, doc } => {
                Request::new(M::POST, &[DG, name], Shape::Object).with_body(doc.read()?)
            }
            Self::Update { name, update } => update.request(&[DG, name, "update"])?,
            Self::Delete { name } => Request::new(
                M::DELETE,
                &[DG, name],
                Shape::Done(format!("deleted device group {name}")),
            ),
            Self::Prune { name } => Request::new(M::POST, &[DG, name, "prune"], Shape::Object),
        })
    }
}
