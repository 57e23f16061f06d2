//! `nebula cron-jobs ...`.

use clap::Subcommand;
use reqwest::Method;

use super::http::{Request, Shape};
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
        #[command(flatten)]
        doc: Document,
    },
    /// Replaces a cron job's document, or with --patch only the fields given.
    Update {
        /// The cron job.
        name: String,
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
        use Method as M;
        const CJ: &str = "cron_jobs";
        Ok(match self {
            Self::List => Request::new(M::GET, &[CJ], Shape::Names("cron_jobs")),
            Self::Get { name } => Request::new(M::GET, &[CJ, name], Shape::Object),
            Self::Create { name, doc } => {
                Request::new(M::POST, &[CJ, name], Shape::Object).with_body(doc.read()?)
            }
            Self::Update { name, update } => update.request(&[CJ, name, "update"])?,
            Self::Delete { name } => Request::new(
                M::DELETE,
                &[CJ, name],
                Shape::Done(format!("deleted cron job {name}")),
            ),
        })
    }
}
