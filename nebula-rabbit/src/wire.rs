//! What travels through the broker: routing keys, binding keys and the versioned JSON envelope.
//!
//! A message is for one or more topics ([`BusMessage::topics`]), each with its key: `app.<name>`
//! for an app, `dg.<group>` for a device group. It is published once, with the first key as
//! its routing key and the others in the `BCC` header ([`routes`]); a queue bound to any of
//! them gets one copy.
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
use nebula_core::device_group::DeviceGroupName;
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

/// The routing key of messages for device group `group`: `dg.<name>` (group names follow the
/// app name rule: no wildcards). The prefix keeps groups and apps of the same name apart.
#[must_use]
pub fn group_routing_key(group: &DeviceGroupName) -> String {
    format!("dg.{group}")
}

/// The binding key a queue uses for `topic`, which is also the routing key of a message for
/// it: `app.<name>` for one app, `dg.<group>` for one device group, `app.#` for every app
/// (which matches no `dg.` key).
#[must_use]
pub fn binding_key(topic: &Topic) -> String {
    match topic {
        Topic::AllApps => "app.#".to_owned(),
        Topic::App(name) => routing_key(name),
        Topic::DeviceGroup(group) => group_routing_key(group),
    }
}

/// The keys of every topic `message` is for, the first being what it is about.
#[must_use]
pub fn routing_keys(message: &BusMessage) -> Vec<String> {
    message.topics().iter().map(binding_key).collect()
}

/// What one `BCC` entry costs in the content header: its type tag, length and bytes.
fn header_cost(key: &str) -> usize {
    1 + 4 + key.len()
}

/// The publishes that carry a message for `keys`: each a routing key and the keys of its
/// `BCC` header. One publish, unless the keys do not fit in `header_budget` bytes of
/// header (an app listed by more groups than a content header frame holds): then as many
/// publishes as needed, each key in exactly one of them. A queue bound to keys of two
/// publishes then gets the message twice, which workers ignore by version.
#[must_use]
pub fn routes(keys: &[String], header_budget: usize) -> Vec<(String, Vec<String>)> {
    let mut routes: Vec<(String, Vec<String>)> = Vec::new();
    let mut used = 0;
    for key in keys {
        match routes.last_mut() {
            Some((_, bcc)) if used + header_cost(key) <= header_budget => {
                used += header_cost(key);
                bcc.push(key.clone());
            }
            _ => {
                used = 0;
                routes.push((key.clone(), Vec::new()));
            }
        }
    }
    routes
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
    // Names deserialise without their rule; the edge checks them.
    let malformed = |e: nebula_core::validate::FieldError| DecodeError::Malformed(e.to_string());
    for topic in message.topics() {
        match topic {
            Topic::App(name) => AppName::parse(name.as_str()).map(drop).map_err(malformed)?,
            Topic::DeviceGroup(group) => DeviceGroupName::parse(group.as_str())
                .map(drop)
                .map_err(malformed)?,
            Topic::AllApps => {}
        }
    }
    if let BusMessage::DeviceGroupChanged { info, .. } = &message {
        for name in info.apps.iter().map(|a| &a.app_name).chain(&info.apps_list) {
            AppName::parse(name.as_str()).map_err(malformed)?;
        }
    }
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
        BusMessage::DeviceGroupChanged { .. } => "device_group_changed",
        BusMessage::DeviceGroupDeleted { .. } => "device_group_deleted",
    }
}

/// The AMQP `message-id` of `message`: what it is about and which version it carries.
pub(crate) fn message_id(message: &BusMessage) -> String {
    match message {
        BusMessage::AppChanged { app, .. } => {
            format!("{}/{}/{}", app.app_name, app.incarnation, app.app_id)
        }
        BusMessage::AppDeleted {
            app_name,
            incarnation,
            ..
        } => format!("{app_name}/{incarnation}/deleted"),
        BusMessage::DeviceGroupChanged { device_group, info } => format!(
            "dg.{device_group}/{}/{}/{}",
            info.incarnation, info.device_group_id, info.prune_id
        ),
        BusMessage::DeviceGroupDeleted {
            device_group,
            incarnation,
        } => format!("dg.{device_group}/{incarnation}/deleted"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nebula_core::device_group::DeviceGroupInfo;
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
            device_groups: Vec::new(),
        };
        let body: serde_json::Value = serde_json::from_slice(&encode(&deleted).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"v": 1, "kind": "app_deleted", "app_name": "web.v2", "incarnation": 7})
        );
        assert_eq!(message_id(&deleted), "web.v2/7/deleted");
        let for_groups = BusMessage::AppDeleted {
            app_name: name("web"),
            incarnation: 7,
            device_groups: vec![group("edge")],
        };
        let body: serde_json::Value =
            serde_json::from_slice(&encode(&for_groups).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"v": 1, "kind": "app_deleted", "app_name": "web", "incarnation": 7,
                "device_groups": ["edge"]})
        );
        let gone = BusMessage::DeviceGroupDeleted {
            device_group: group("edge"),
            incarnation: 9,
        };
        let body: serde_json::Value = serde_json::from_slice(&encode(&gone).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"v": 1, "kind": "device_group_deleted", "device_group": "edge",
                "incarnation": 9})
        );
        assert_eq!(message_id(&gone), "dg.edge/9/deleted");
    }

    #[test]
    fn envelopes_without_device_groups_still_decode() {
        let old = br#"{"v":1,"kind":"app_deleted","app_name":"web","incarnation":7}"#;
        let message = decode(old).unwrap();
        assert_eq!(message.topics(), [Topic::App(name("web"))]);
    }

    #[test]
    fn group_messages_round_trip_with_the_whole_state() {
        let changed = BusMessage::DeviceGroupChanged {
            device_group: group("edge"),
            info: DeviceGroupInfo {
                apps: vec![web()],
                apps_list: vec![name("web")],
                cron_jobs: Vec::new(),
                cron_jobs_list: Vec::new(),
                prune_id: 3,
                device_group_id: 2,
                incarnation: 5,
            },
        };
        let body = encode(&changed).unwrap();
        assert_eq!(decode(&body).unwrap(), changed);
        assert_eq!(kind(&changed), "device_group_changed");
        assert_eq!(message_id(&changed), "dg.edge/5/2/3");
        assert_eq!(routing_keys(&changed), ["dg.edge"]);
        let mut value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        value["info"]["apps_list"] = json!(["has space"]);
        assert!(matches!(
            decode(&serde_json::to_vec(&value).unwrap()),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(
                br#"{"v":1,"kind":"device_group_deleted","device_group":"a b","incarnation":1}"#
            ),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(br#"{"v":1,"kind":"app_deleted","app_name":"a","incarnation":1,"device_groups":["a*"]}"#),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn an_app_message_goes_to_its_app_key_and_its_groups_keys_once_each() {
        let message = BusMessage::AppChanged {
            app: web(),
            device_groups: vec![group("edge"), group("core"), group("edge")],
        };
        assert_eq!(routing_keys(&message), ["app.web", "dg.edge", "dg.core"]);
        assert_eq!(
            routes(&routing_keys(&message), 4096),
            [(
                "app.web".to_owned(),
                vec!["dg.edge".to_owned(), "dg.core".to_owned()]
            )],
            "one publish: the app's key, the groups in BCC"
        );
    }

    #[test]
    fn keys_beyond_the_header_budget_go_in_further_publishes_each_key_once() {
        let keys: Vec<String> = (0..100).map(|i| format!("dg.group-{i:03}")).collect();
        // Each entry costs 5 + 12 bytes: 10 fit in 170.
        let parts = routes(&keys, 170);
        assert_eq!(parts.len(), 10, "{parts:?}");
        let mut all: Vec<String> = Vec::new();
        for (key, bcc) in &parts {
            assert!(bcc.iter().map(|k| 5 + k.len()).sum::<usize>() <= 170);
            all.push(key.clone());
            all.extend(bcc.iter().cloned());
        }
        assert_eq!(all, keys, "every key once, in order");
        assert_eq!(routes(&keys[..1], 0), [(keys[0].clone(), Vec::new())]);
        assert!(routes(&[], 100).is_empty());
    }

    fn group(n: &str) -> DeviceGroupName {
        DeviceGroupName::parse(n).unwrap()
    }

    fn web() -> App {
        App {
            app_name: name("web"),
            app_id: 3,
            incarnation: 1_700_000_000_000_000_000,
            restart_generation: 2,
            restart_mode: RestartMode::AsConfigured,
            prune_generation: 0,
            spec: AppSpec::with_image("busybox"),
            fleet_rollout: None,
        }
    }

    #[test]
    fn messages_round_trip() {
        let changed = BusMessage::app_changed(web());
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
            device_groups: Vec::new(),
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
        assert_eq!(binding_key(&Topic::DeviceGroup(group("x"))), "dg.x");
        assert_eq!(group_routing_key(&group("a.b")), "dg.a.b");
    }
}
