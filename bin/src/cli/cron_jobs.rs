//! `nebula cron-jobs ...`.

use clap::Subcommand;

use super::collection::CRON_JOBS;
use super::http::Request;
use super::{Document, UpdateArgs};

/// The verbs on cron jobs.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum CronJobs {
    /// The names of every cron job.
    List,
    /// A cron job's document.
    Get {
        /// The cron job.
        name: String,
    },
    /// Creates a cron job (`schedule` and `docker_image` are required).
    Create {
        /// The cron job.
        name: String,
        /// The document.
        #[command(flatten)]
        doc: Document,
    },
    /// Replaces a cron job's document, or with --patch only the fields given.
    Update {
        /// The cron job.
        name: String,
        /// The document and how it is applied.
        #[command(flatten)]
        update: UpdateArgs,
    },
    /// Deletes a cron job.
    Delete {
        /// The cron job.
        name: String,
    },
}

impl CronJobs {
    /// The request this verb sends.
    ///
    /// # Errors
    /// When the document cannot be read.
    pub fn request(&self) -> Result<Request, String> {
        Ok(match self {
            Self::List => CRON_JOBS.list(),
            Self::Get { name } => CRON_JOBS.get(name),
            Self::Create { name, doc } => CRON_JOBS.create(name, doc.read()?),
            Self::Update { name, update } => CRON_JOBS.update(name, update)?,
            Self::Delete { name } => CRON_JOBS.delete(name),
        })
    }
}
