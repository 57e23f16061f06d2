//! `nebula reports list`.

use clap::{Args, Subcommand, ValueEnum};
use reqwest::Method;

use super::http::{Request, Shape};

/// The verbs on reports.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Reports {
    /// A page of the workers' reports, oldest first.
    List(Filters),
}

/// How a report's creation time compares with `--creation-time`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeFilter {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
}

/// The filters of `GET /api/v2/reports`.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Only the reports of this host.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Only the reports of workers of this device group.
    #[arg(long)]
    pub device_group: Option<String>,
    /// Reports per page (the manager's default: 10).
    #[arg(long)]
    pub page_size: Option<u32>,
    /// The page after this report id (printed after each page).
    #[arg(long)]
    pub last_id: Option<String>,
    /// Only reports whose host changed (true) or did not (false) since its previous report.
    #[arg(long)]
    pub updated: Option<bool>,
    /// Compare the reports' creation time (unix seconds) with this.
    #[arg(long, value_name = "UNIX_SECONDS")]
    pub creation_time: Option<i64>,
    /// How to compare with --creation-time [default: eq].
    #[arg(long, value_enum, requires = "creation_time")]
    pub creation_time_filter: Option<TimeFilter>,
}

impl Reports {
    /// The request this verb sends.
    #[must_use]
    pub fn request(&self) -> Request {
        let Self::List(f) = self;
        let mut req = Request::new(Method::GET, &["reports"], Shape::Reports);
        let mut add = |key: &'static str, value: Option<String>| {
            if let Some(v) = value {
                req.query.push((key, v));
            }
        };
        add("hostname", f.hostname.clone());
        add("device_group", f.device_group.clone());
        add("page_size", f.page_size.map(|n| n.to_string()));
        add("last_id", f.last_id.clone());
        add(
            "updated",
            f.updated
                .map(|u| if u { "True" } else { "False" }.to_owned()),
        );
        add(
            "report_creation_time",
            f.creation_time.map(|t| t.to_string()),
        );
        add(
            "report_creation_time_filter",
            f.creation_time_filter
                .and_then(|t| t.to_possible_value().map(|v| v.get_name().to_owned())),
        );
        req
    }
}
