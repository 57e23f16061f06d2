//! `nebula apps ...`.

use clap::Subcommand;

use super::collection::APPS;
use super::http::Request;
use super::{Document, UpdateArgs};

/// The verbs on apps.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Apps {
    /// The names of every app.
    List,
    /// An app's document.
    Get {
        /// The app.
        name: String,
    },
    /// Creates an app from a JSON document (fields not given take their defaults).
    Create {
        /// The app.
        name: String,
        /// The document.
        #[command(flatten)]
        doc: Document,
    },
    /// Replaces an app's document (missing fields reset to defaults), or with --patch changes
    /// only the fields given.
    Update {
        /// The app.
        name: String,
        /// The document and how it is applied.
        #[command(flatten)]
        update: UpdateArgs,
    },
    /// Deletes an app: its containers are removed on every host.
    Delete {
        /// The app.
        name: String,
    },
    /// Stops an app on every host.
    Stop {
        /// The app.
        name: String,
    },
    /// Starts an app on every host (a running app restarts).
    Start {
        /// The app.
        name: String,
    },
    /// Restarts a running app (pulling its image first).
    Restart {
        /// The app.
        name: String,
    },
    /// How many hosts run which version of an app, from the workers' reports.
    Status {
        /// The app.
        name: String,
    },
}

impl Apps {
    /// The request this verb sends.
    ///
    /// # Errors
    /// When the document cannot be read.
    pub fn request(&self) -> Result<Request, String> {
        Ok(match self {
            Self::List => APPS.list(),
            Self::Get { name } => APPS.get(name),
            Self::Create { name, doc } => APPS.create(name, doc.read()?),
            Self::Update { name, update } => APPS.update(name, update)?,
            Self::Delete { name } => APPS.delete(name),
            Self::Stop { name } => APPS.act(name, "stop"),
            Self::Start { name } => APPS.act(name, "start"),
            Self::Restart { name } => APPS.act(name, "restart"),
            Self::Status { name } => APPS.view(name, "status"),
        })
    }
}
