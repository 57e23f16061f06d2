//! What travels through the broker: routing keys, binding keys and the versioned JSON envelope.
//!
//! The body of every message is `{"v":1, "kind": ..., ...}`: the JSON of
//! [`BusMessage`] (tagged by `kind`) with the envelope version `v` added. A consumer that
//! meets another version, or a body that does not decode, acknowledges and skips it (the
//! worker's HTTP resync covers whatever it carried).
//!
//! A worker's report travels as `{"v":1, "kind":"report", "report":{...}}`, the report being
//! the JSON of [`WorkerReport`] as `POST /api/v2/reports` takes it, with routing key
//! [`REPORT_ROUTING_KEY`]. A manager acknowledges and skips a report body it cannot decode
//! (the worker's next report covers it).

use nebula_core::bus::{BusMessage, Topic};
use nebula_core::model::AppName;
use nebula_core::report::WorkerReport;

/// The envelope version this crate writes and reads.
pub const ENVELOPE_VERSION: u64 = 1;

/// The routing key of messages about `app`: `app.<name>`. App names are made of
/// `A-Z a-z 0-9 _ . -`, so they never contain the topic wildcards `*` and `#`.
#[must_use]
pub fn routing_key(app: &AppName) -> String {
    format!("app.{app}")
}

/// The binding key a queue uses for `topic`: `app.<name>` for one app, `app.#` for every
/// app. (Device groups will bind `dg.<group>`; the `app.` prefix keeps them apart.)
#[must_use]
pub fn binding_key(topic: &Topic) -> String {
    match topic {
        Topic::AllApps => "app.#".to_owned(),
        Topic::App(name) => routing_key(name),
    }
}

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON, not an object, or not a [`BusMessage`].
    #[error("undecodable message: {0}")]
    Malformed(String),
    /// An envelope version this build does not read.
    #[error("unsupported envelope version {0}")]
    Version(u64),
}

/// The body of `message`.
///
/// # Errors
/// Serde's, should the message not serialise (it always does for documents the model made).
pub fn encode(message: &BusMessage) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = serde_json::to_value(message)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("v".to_owned(), ENVELOPE_VERSION.into());
    }
    serde_json::to_vec(&value)
}

/// The message in `body`.
///
/// # Errors
/// [`DecodeError`] when the body is not a version-1 envelope of a [`BusMessage`].
pub fn decode(body: &[u8]) -> Result<BusMessage, DecodeError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| DecodeError::Malformed("not a JSON object".to_owned()))?;
    match object.remove("v").and_then(|v| v.as_u64()) {
        Some(ENVELOPE_VERSION) => {}
        Some(other) => return Err(DecodeError::Version(other)),
        None => return Err(DecodeError::Malformed("no envelope version".to_owned())),
    }
    let message: BusMessage =
        serde_json::from_value(value).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    // `AppName` deserialises without its rule; the edge checks it.
    AppName::parse(message.app_name().as_str())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(message)
}

/// The `kind` of a report envelope, and the AMQP `type` of a report message.
pub const REPORT_KIND: &str = "report";

/// The routing key of every report (the report exchange is a direct exchange).
pub const REPORT_ROUTING_KEY: &str = "report";

/// The body of `report`.
///
/// # Errors
/// Serde's, should the report not serialise (it always does for reports the model made).
pub fn encode_report(report: &WorkerReport) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&serde_json::json!({
        "v": ENVELOPE_VERSION,
        "kind": REPORT_KIND,
        "report": report,
    }))
}

/// The report in `body`.
///
/// # Errors
/// [`DecodeError`] when the body is not a version-1 report envelope.
pub fn decode_report(body: &[u8]) -> Result<WorkerReport, DecodeError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| DecodeError::Malformed("not a JSON object".to_owned()))?;
    match object.get("v").and_then(serde_json::Value::as_u64) {
        Some(ENVELOPE_VERSION) => {}
        Some(other) => return Err(DecodeError::Version(other)),
        None => return Err(DecodeError::Malformed("no envelope version".to_owned())),
    }
    match object.get("kind").and_then(serde_json::Value::as_str) {
        Some(REPORT_KIND) => {}
        other => {
            return Err(DecodeError::Malformed(format!(
                "kind {other:?} is not a report"
            )));
        }
    }
    let report = object
        .remove("report")
        .ok_or_else(|| DecodeError::Malformed("no report".to_owned()))?;
    serde_json::from_value(report).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// The AMQP `message-id` of a report: its host and creation time (never its content).
pub(crate) fn report_id(report: &WorkerReport) -> String {
    format!("{}/{}", report.hostname, report.report_creation_time)
}

/// The AMQP `type` property of `message` (for people looking at a queue).
pub(crate) fn kind(message: &BusMessage) -> &'static str {
    match message {
        BusMessage::AppChanged { .. } => "app_changed",
        BusMessage::AppDeleted { .. } => "app_deleted",
    }
}

/// The AMQP `message-id` of `message`: what it is about and which version it carries.
pub(crate) fn message_id(message: &BusMessage) -> String {
    match message {
        BusMessage::AppChanged { app } => {
            format!("{}/{}/{}", app.app_name, app.incarnation, app.app_id)
        }
        BusMessage::AppDeleted {
            app_name,
            incarnation,
        } => format!("{app_name}/{incarnation}/deleted"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nebula_core::model::{App, AppSpec, RestartMode};
    use serde_json::json;

    fn name(n: &str) -> AppName {
        AppName::parse(n).unwrap()
    }

    #[test]
    fn the_wire_shape_is_pinned() {
        let deleted = BusMessage::AppDeleted {
            app_name: name("web.v2"),
            incarnation: 7,
        };
        let body: serde_json::Value = serde_json::from_slice(&encode(&deleted).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"v": 1, "kind": "app_deleted", "app_name": "web.v2", "incarnation": 7})
        );
        assert_eq!(message_id(&deleted), "web.v2/7/deleted");
    }

    #[test]
    fn messages_round_trip() {
        let changed = BusMessage::AppChanged {
            app: App {
                app_name: name("web"),
                app_id: 3,
                incarnation: 1_700_000_000_000_000_000,
                restart_generation: 2,
                restart_mode: RestartMode::AsConfigured,
                prune_generation: 0,
                spec: AppSpec::with_image("busybox"),
            },
        };
        let body = encode(&changed).unwrap();
        assert_eq!(decode(&body).unwrap(), changed);
        assert_eq!(kind(&changed), "app_changed");
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        assert!(matches!(
            decode(br#"{"v":2,"kind":"app_deleted","app_name":"a","incarnation":1}"#),
            Err(DecodeError::Version(2))
        ));
        for body in [
            &b"not json"[..],
            b"[1]",
            br#"{"kind":"app_deleted","app_name":"a","incarnation":1}"#,
            br#"{"v":1,"kind":"nope"}"#,
            br#"{"v":1,"kind":"app_deleted","app_name":"has space","incarnation":1}"#,
        ] {
            assert!(
                matches!(decode(body), Err(DecodeError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_report_wire_shape_is_pinned_and_round_trips() {
        let report = WorkerReport {
            hostname: "edge-1".to_owned(),
            report_creation_time: 1_700_000_000,
            device_group: Some("edge".to_owned()),
            updated: true,
            ..WorkerReport::default()
        };
        let body = encode_report(&report).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (value["v"].clone(), value["kind"].clone()),
            (json!(1), json!("report"))
        );
        assert_eq!(value["report"], serde_json::to_value(&report).unwrap());
        assert_eq!(decode_report(&body).unwrap(), report);
        assert_eq!(report_id(&report), "edge-1/1700000000");
    }

    #[test]
    fn bodies_that_are_not_version_1_reports_are_refused() {
        assert!(matches!(
            decode_report(br#"{"v":2,"kind":"report","report":{}}"#),
            Err(DecodeError::Version(2))
        ));
        let deleted = encode(&BusMessage::AppDeleted {
            app_name: name("a"),
            incarnation: 1,
        })
        .unwrap();
        for body in [
            &b"not json"[..],
            b"[1]",
            br#"{"kind":"report","report":{"hostname":"h","report_creation_time":1}}"#,
            br#"{"v":1,"kind":"report"}"#,
            br#"{"v":1,"kind":"report","report":{"hostname":"h"}}"#,
            &deleted,
        ] {
            assert!(
                matches!(decode_report(body), Err(DecodeError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn keys() {
        assert_eq!(routing_key(&name("a.b")), "app.a.b");
        assert_eq!(binding_key(&Topic::AllApps), "app.#");
        assert_eq!(binding_key(&Topic::App(name("x"))), "app.x");
    }
}
