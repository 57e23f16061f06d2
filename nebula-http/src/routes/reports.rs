//! v2 report routes: workers `POST /reports`; clients page through them with
//! `GET /reports` (the reference's filters and `last_id` paging) and read
//! `GET /apps/<app>/status`, how the hosts run one app according to their latest reports.
//!
//! Every route needs authentication (the router's middleware). Query values that cannot be
//! read answer 400 naming the parameter (the original ignored a bad integer and failed with a
//! 500 on a bad filter or id).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use nebula_core::model::AppName;
use nebula_core::report::{
    MAX_PAGE_SIZE, ReportFilter, ReportId, ReportQuery, TimeFilter, WorkerReport,
};
use nebula_core::validate::FieldError;
use serde_json::{Map, Value, json};

use super::{Body, Reply};
use crate::state::ApiState;

/// How the API keeps reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportsConfig {
    /// How long a report is kept after it is stored (`NEBULA_REPORT_TTL`, the original's
    /// `mongo_report_ttl`, 3600 s). Older reports are never returned.
    pub ttl: Duration,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `POST /api/v2/reports`: a worker's report; 200 `{"_id": {"$oid": <id>}}`.
pub(crate) async fn insert(State(state): State<ApiState>, Body(body): Body) -> Reply {
    let report: WorkerReport = serde_json::from_value(Value::Object(body))
        .map_err(|e| FieldError::new("body", format!("must be a report: {e}")))?;
    let id = state.manager.insert_report(report, now_ns()).await?;
    Ok(Json(json!({"_id": {"$oid": id.to_string()}})).into_response())
}

/// The first value of each query parameter (as Flask's `request.args.get`); empty values
/// count as absent.
fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Reads the query of `GET /reports`.
fn query(pairs: &[(String, String)]) -> Result<ReportQuery, FieldError> {
    let page_size = match first(pairs, "page_size") {
        None => nebula_core::report::DEFAULT_PAGE_SIZE,
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_SIZE).contains(n))
            .ok_or_else(|| {
                FieldError::new(
                    "page_size",
                    format!("must be an integer from 1 to {MAX_PAGE_SIZE}"),
                )
            })?,
    };
    let filter_kind = first(pairs, "report_creation_time_filter")
        .map(TimeFilter::parse)
        .transpose()?
        .unwrap_or_default();
    let creation_time = first(pairs, "report_creation_time")
        .map(|raw| {
            raw.trim().parse::<i64>().map_err(|_| {
                FieldError::new("report_creation_time", "must be an integer (unix seconds)")
            })
        })
        .transpose()?
        .map(|t| (filter_kind, t));
    let updated = first(pairs, "updated")
        .map(|raw| match raw {
            "True" | "true" => Ok(true),
            "False" | "false" => Ok(false),
            _ => Err(FieldError::new("updated", "must be True or False")),
        })
        .transpose()?;
    let last_id = first(pairs, "last_id")
        .map(|raw| ReportId::parse("last_id", raw.trim()))
        .transpose()?;
    Ok(ReportQuery {
        filter: ReportFilter {
            hostname: first(pairs, "hostname").map(str::to_owned),
            device_group: first(pairs, "device_group").map(str::to_owned),
            creation_time,
            updated,
        },
        page_size,
        last_id,
    })
}

/// `GET /api/v2/reports`: `{"data": [...], "last_id": {"$oid": ...}}`, or
/// `{"data": null, "last_id": null}` past the end.
pub(crate) async fn list(
    State(state): State<ApiState>,
    Extension(config): Extension<ReportsConfig>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Reply {
    let query = query(&pairs)?;
    let page = state
        .manager
        .list_reports(&query, now_ns(), config.ttl)
        .await?;
    let Some(last) = page.last_id().cloned() else {
        return Ok(Json(json!({"data": null, "last_id": null})).into_response());
    };
    let data: Vec<Value> = page
        .data
        .into_iter()
        .map(|(id, stored)| {
            let mut doc = Map::new();
            doc.insert("_id".into(), json!({"$oid": id.to_string()}));
            if let Ok(Value::Object(fields)) = serde_json::to_value(&stored) {
                doc.extend(fields);
            }
            Value::Object(doc)
        })
        .collect();
    Ok(Json(json!({"data": data, "last_id": {"$oid": last.to_string()}})).into_response())
}

/// `GET /api/v2/apps/<app>/status`.
pub(crate) async fn app_status(
    State(state): State<ApiState>,
    Extension(config): Extension<ReportsConfig>,
    Path(app): Path<String>,
) -> Reply {
    let name = AppName::parse(&app)?;
    let view = state
        .manager
        .app_status(&name, now_ns(), config.ttl)
        .await?;
    Ok((StatusCode::OK, Json(view)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn query_defaults_and_values() {
        assert_eq!(query(&[]).unwrap(), ReportQuery::default());
        let q = query(&pairs(&[
            ("page_size", "3"),
            ("hostname", "h"),
            ("hostname", "ignored"),
            ("device_group", "g"),
            ("report_creation_time", "-5"),
            ("report_creation_time_filter", "lte"),
            ("updated", "False"),
            ("last_id", "0123456789ABCDEF01234567"),
            ("other", "x"),
        ]))
        .unwrap();
        assert_eq!(q.page_size, 3);
        assert_eq!(q.filter.hostname.as_deref(), Some("h"));
        assert_eq!(q.filter.creation_time, Some((TimeFilter::Lte, -5)));
        assert_eq!(q.filter.updated, Some(false));
        assert_eq!(q.last_id.unwrap().as_str(), "0123456789abcdef01234567");
        let only_filter = query(&pairs(&[("report_creation_time_filter", "gt")])).unwrap();
        assert_eq!(only_filter.filter.creation_time, None);
        let empty = query(&pairs(&[("page_size", ""), ("hostname", "")])).unwrap();
        assert_eq!(empty, ReportQuery::default());
    }

    #[test]
    fn bad_values_name_their_parameter() {
        for (key, value) in [
            ("page_size", "0"),
            ("page_size", "ten"),
            ("page_size", "1001"),
            ("report_creation_time", "1.5"),
            ("report_creation_time_filter", "between"),
            ("updated", "1"),
            ("last_id", "nope"),
        ] {
            let e = query(&pairs(&[(key, value), ("report_creation_time", "1")]))
                .err()
                .or_else(|| query(&pairs(&[(key, value)])).err())
                .unwrap_or_else(|| panic!("{key}={value} accepted"));
            assert_eq!(e.field, key, "{key}={value}");
        }
    }
}
