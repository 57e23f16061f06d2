//! `nebula apps ...`.

use clap::Subcommand;
use reqwest::Method;

use super::http::{Request, Shape};
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
        #[command(flatten)]
        doc: Document,
    },
    /// Replaces an app's document (missing fields reset to defaults), or with --patch changes
    /// only the fields given.
    Update {
        /// The app.
        name: String,
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
        use Method as M;
        Ok(match self {
            Self::List => Request::new(M::GET, &["apps"], Shape::Names("apps")),
            Self::Get { name } => Request::new(M::GET, &["apps", name], Shape::Object),
            Self::Create { name, doc } => {
                Request::new(M::POST, &["apps", name], Shape::Object).with_body(doc.read()?)
            }
            Self::Update { name, update } => update.request(&["apps", name, "update"])?,
            Self::Delete { name } => Request::new(
                M::DELETE,
                &["apps", name],
                Shape::Done(format!("deleted app {name}")),
            ),
            Self::Stop { name } => Request::new(M::POST, &["apps", name, "stop"], Shape::Object),
            Self::Start { name } => Request::new(M::POST, &["apps", name, "start"], Shape::Object),
            Self::Restart { name } => {
                Request::new(M::POST, &["apps", name, "restart"], Shape::Object)
            }
            Self::Status { name } => Request::new(M::GET, &["apps", name, "status"], Shape::Object),
        })
    }
}
