//! Showing replies: aligned columns for lists, pretty JSON for objects, or JSON throughout.

use std::fmt::Write as _;
use std::str::FromStr;

use serde_json::Value;

use super::http::Shape;

/// How replies are printed (`--output`, `NEBULA_OUTPUT`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Tables for lists, pretty JSON for single objects.
    #[default]
    Auto,
    /// The manager's JSON reply, pretty-printed, for every command.
    Json,
    /// Tables for lists and KEY VALUE rows for objects.
    Table,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "json" => Ok(Self::Json),
            "table" => Ok(Self::Table),
            _ => Err("must be json, table or auto".into()),
        }
    }
}

/// Rows under a header, each column as wide as its widest cell, two spaces apart.
#[must_use]
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:<w$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

/// A cell: strings bare, everything else as compact JSON, null as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
#[must_use]
pub fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn reports_table(body: &Value) -> String {
    let rows: Vec<Vec<String>> = body["data"]
        .as_array()
        .map(|data| {
            data.iter()
                .map(|r| {
                    let selection = match (&r["device_group"], r["app_names"].as_array()) {
                        (Value::String(g), _) => format!("group {g}"),
                        (_, Some(names)) => format!(
                            "apps {}",
                            names.iter().map(cell).collect::<Vec<_>>().join(",")
                        ),
                        _ => "-".into(),
                    };
                    let apps = r["apps_status"].as_object();
                    let held = apps.map_or(0, serde_json::Map::len);
                    let converged =
                        apps.map_or(0, |a| a.values().filter(|s| s["converged"] == true).count());
                    vec![
                        cell(&r["hostname"]),
                        selection,
                        r["report_creation_time"]
                            .as_u64()
                            .map_or_else(|| "-".into(), utc),
                        cell(&r["updated"]),
                        format!("{converged}/{held}"),
                        r["apps_containers"]
                            .as_array()
                            .map_or(0, Vec::len)
                            .to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "HOSTNAME",
            "SELECTION",
            "CREATED (UTC)",
            "UPDATED",
            "CONVERGED",
            "CONTAINERS",
        ],
        &rows,
    )
}

/// What to print on stdout for a successful reply, and a note for stderr.
#[must_use]
pub fn render(
    shape: &Shape,
    format: Format,
    body: &Value,
    manager: &str,
) -> (String, Option<String>) {
    if format == Format::Json {
        return (pretty(body), None);
    }
    match shape {
        Shape::Names(key) => {
            let rows: Vec<Vec<String>> = body[*key]
                .as_array()
                .map(|names| names.iter().map(|n| vec![cell(n)]).collect())
                .unwrap_or_default();
            (table(&["NAME"], &rows), None)
        }
        Shape::Reports => {
            let next = match &body["last_id"] {
                Value::Null => None,
                Value::Object(o) => o.get("$oid").map(cell),
                other => Some(cell(other)),
            };
            (
                reports_table(body),
                next.map(|id| format!("next page: --last-id {id}")),
            )
        }
        Shape::Ping => (
            format!(
                "{manager}: api_available={}\n",
                cell(&body["api_available"])
            ),
            None,
        ),
        Shape::Done(line) => (format!("{line}\n"), None),
        Shape::Object => match (format, body) {
            (Format::Table, Value::Object(map)) => {
                let rows: Vec<Vec<String>> =
                    map.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect();
                (table(&["KEY", "VALUE"], &rows), None)
            }
            _ => (pretty(body), None),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "N"],
            &[
                vec!["a".into(), "1".into()],
                vec!["long-name".into(), "22".into()],
            ],
        );
        assert_eq!(t, "NAME       N\na          1\nlong-name  22\n");
    }

    #[test]
    fn names_reports_and_objects() {
        let names = json!({"apps": ["web", "db"]});
        let (out, note) = render(&Shape::Names("apps"), Format::Auto, &names, "m");
        assert_eq!(out, "NAME\nweb\ndb\n");
        assert!(note.is_none());
        let (out, _) = render(&Shape::Names("apps"), Format::Json, &names, "m");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), names);

        let page = json!({"data": [{"hostname": "h1", "device_group": "edge",
            "report_creation_time": 86_400 + 3661, "updated": true,
            "apps_status": {"web": {"converged": true}, "db": {"converged": false}},
            "apps_containers": [{}, {}]}], "last_id": {"$oid": "abc"}});
        let (out, note) = render(&Shape::Reports, Format::Table, &page, "m");
        assert!(out.starts_with("HOSTNAME"), "{out}");
        assert!(
            out.contains("h1        group edge  1970-01-02 01:01:01  true     1/2        2"),
            "{out}"
        );
        assert_eq!(note.as_deref(), Some("next page: --last-id abc"));
        let end = json!({"data": null, "last_id": null});
        let (out, note) = render(&Shape::Reports, Format::Auto, &end, "m");
        assert_eq!(out.lines().count(), 1);
        assert!(note.is_none());

        let doc = json!({"app_id": 2, "running": false, "env_vars": {"A": "1"}});
        let (out, _) = render(&Shape::Object, Format::Auto, &doc, "m");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), doc);
        let (out, _) = render(&Shape::Object, Format::Table, &doc, "m");
        assert!(out.contains("env_vars  {\"A\":\"1\"}"), "{out}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
    }
}
