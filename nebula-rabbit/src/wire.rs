//! What travels through the broker: routing keys, binding keys and the versioned JSON envelope.
//!
//! The body of every message is `{"v":1, "kind": ..., ...}`: the JSON of
//! [`BusMessage`] (tagged by `kind`) with the envelope version `v` added. A consumer that
//! meets another version, or a body that does not decode, acknowledges and skips it (the
//! worker's HTTP resync covers whatever it carried).

use nebula_core::bus::{BusMessage, Topic};
use nebula_core::model::AppName;

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
    fn keys() {
        assert_eq!(routing_key(&name("a.b")), "app.a.b");
        assert_eq!(binding_key(&Topic::AllApps), "app.#");
        assert_eq!(binding_key(&Topic::App(name("x"))), "app.x");
    }
}
