//! The `healthcheck` field of apps and cron jobs: the container healthcheck, overriding the
//! image's HEALTHCHECK, or turning it off.
//!
//! Shapes (the stored document always holds the first form of each):
//! - `{"disable": true}`, alone: no healthcheck, even if the image declares one.
//! - `{"test": ..., "interval": ..., "timeout": ..., "retries": ..., "start_period": ...}`, at
//!   least one of them: `test` is `["CMD", "exe", "arg", ...]`, `["CMD-SHELL", "command"]` or a
//!   plain string (meaning `CMD-SHELL`); durations are whole seconds, as a number (`30`) or a
//!   Docker-style string (`"30s"`, `"1m30s"`, `"1h"`). A part left out keeps the image's
//!   value, or Docker's default (interval 30 s, timeout 30 s, start period 0, retries 3).
//!
//! [`parse`] reads the JSON (shapes and types), [`validate`] checks the bounds; both name the
//! field as `healthcheck.<part>`.

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::field::{FieldError, MAX_LIST_LEN, MAX_STRING_LEN};

/// The field's name in app and cron job documents.
pub const FIELD: &str = "healthcheck";
/// Longest interval, timeout and start period, in seconds (one day).
pub const MAX_SECONDS: u32 = 86_400;
/// Most retries.
pub const MAX_RETRIES: u32 = 100;

/// What the container's healthcheck runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthTest {
    /// `["CMD", exe, args...]`: run directly.
    Cmd(Vec<String>),
    /// `["CMD-SHELL", command]`: run with the container's `/bin/sh -c`.
    Shell(String),
}

impl HealthTest {
    /// The engine's form: `["CMD", ...]` or `["CMD-SHELL", command]`.
    #[must_use]
    pub fn to_args(&self) -> Vec<String> {
        match self {
            Self::Cmd(args) => std::iter::once("CMD".to_owned())
                .chain(args.iter().cloned())
                .collect(),
            Self::Shell(command) => vec!["CMD-SHELL".to_owned(), command.clone()],
        }
    }
}

/// A healthcheck that replaces the image's: each part given replaces the image's part.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// The probe (absent: the image's).
    pub test: Option<HealthTest>,
    /// Seconds between probes.
    pub interval_secs: Option<u32>,
    /// Seconds a probe may run before it counts as failed.
    pub timeout_secs: Option<u32>,
    /// Consecutive failures that make the container unhealthy.
    pub retries: Option<u32>,
    /// Seconds after start during which failures do not count.
    pub start_period_secs: Option<u32>,
}

/// The `healthcheck` field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Healthcheck {
    /// `{"disable": true}`: no healthcheck, whatever the image declares.
    Disable,
    /// Parts that replace the image's.
    Check(Probe),
}

fn field(part: &str) -> String {
    format!("{FIELD}.{part}")
}

const SHAPE: &str = "must be {\"disable\": true}, or an object of test, interval, timeout, \
                     retries and start_period with at least one of them";
const TEST_RULE: &str = "must be [\"CMD\", \"executable\", \"arg\", ...], \
                         [\"CMD-SHELL\", \"command\"] or a command string (run by the shell)";
const SECONDS_RULE: &str =
    "must be whole seconds: a number such as 30, or a duration such as \"30s\", \"1m30s\", \"1h\"";

/// Reads a `healthcheck` value (not `null`: callers treat that as "no override").
///
/// # Errors
/// Every part of the wrong shape, each naming `healthcheck` or `healthcheck.<part>`.
pub fn parse(value: &Value) -> Result<Healthcheck, Vec<FieldError>> {
    let Value::Object(map) = value else {
        return Err(vec![FieldError::new(FIELD, SHAPE)]);
    };
    if let Some(disable) = map.get("disable") {
        if disable != &Value::Bool(true) {
            return Err(vec![FieldError::new(
                field("disable"),
                "must be true; leave it out to set a healthcheck",
            )]);
        }
        if map.len() > 1 {
            return Err(vec![FieldError::new(
                FIELD,
                "{\"disable\": true} must be alone: it cannot be combined with test, interval, \
                 timeout, retries or start_period",
            )]);
        }
        return Ok(Healthcheck::Disable);
    }
    let mut errors: Vec<FieldError> = map
        .keys()
        .filter(|k| {
            !["test", "interval", "timeout", "retries", "start_period"].contains(&k.as_str())
        })
        .map(|k| {
            FieldError::new(
                field(k),
                "is not a healthcheck field; the fields are test, interval, timeout, retries, \
                 start_period (or disable, alone)",
            )
        })
        .collect();
    if map.is_empty() {
        errors.push(FieldError::new(FIELD, SHAPE));
    }
    let mut check = Probe::default();
    let mut read = |part: &str, parse: fn(&Value) -> Result<u32, String>| {
        map.get(part).and_then(|v| match parse(v) {
            Ok(n) => Some(n),
            Err(rule) => {
                errors.push(FieldError::new(field(part), rule));
                None
            }
        })
    };
    check.interval_secs = read("interval", seconds);
    check.timeout_secs = read("timeout", seconds);
    check.start_period_secs = read("start_period", seconds);
    check.retries = read("retries", |v| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| "must be a whole number".to_owned())
    });
    if let Some(test) = map.get("test") {
        match self::test(test) {
            Ok(t) => check.test = Some(t),
            Err(rule) => errors.push(FieldError::new(field("test"), rule)),
        }
    }
    if errors.is_empty() {
        Ok(Healthcheck::Check(check))
    } else {
        Err(errors)
    }
}

fn test(value: &Value) -> Result<HealthTest, String> {
    match value {
        Value::String(command) => Ok(HealthTest::Shell(command.clone())),
        Value::Array(items) => {
            let items: Vec<&str> = items
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or(TEST_RULE)?;
            match items.split_first() {
                Some((&"CMD", args)) => Ok(HealthTest::Cmd(
                    args.iter().map(|a| (*a).to_owned()).collect(),
                )),
                Some((&"CMD-SHELL", [command])) => Ok(HealthTest::Shell((*command).to_owned())),
                Some((&"NONE", _)) => Err("[\"NONE\"] is written {\"disable\": true}".to_owned()),
                _ => Err(TEST_RULE.to_owned()),
            }
        }
        _ => Err(TEST_RULE.to_owned()),
    }
}

/// Whole seconds: a number, or a string of `<n>h`, `<n>m`, `<n>s` parts (`"1m30s"`).
fn seconds(value: &Value) -> Result<u32, String> {
    let total = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => duration(s),
        _ => None,
    };
    total
        .and_then(|t| u32::try_from(t).ok())
        .ok_or_else(|| SECONDS_RULE.to_owned())
}

fn duration(text: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = rest[digits..].chars().next()?;
        let scale = match unit {
            'h' => 3600,
            'm' if !rest[digits..].starts_with("ms") => 60,
            's' => 1,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(scale)?)?;
        rest = &rest[digits + 1..];
    }
    Some(total)
}

/// Checks the bounds of a healthcheck: at least one part, interval and timeout 1 s to 1 day,
/// start period 0 to 1 day, retries 1 to 100, a test with a non-empty command of at most 256
/// strings of at most 4096 bytes, without NUL.
#[must_use]
pub fn validate(healthcheck: &Healthcheck) -> Vec<FieldError> {
    let Healthcheck::Check(check) = healthcheck else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    if *check == Probe::default() {
        // Written as `{}`, which no body may send and no stored document may hold.
        errors.push(FieldError::new(FIELD, SHAPE));
    }
    for (part, value, min) in [
        ("interval", check.interval_secs, 1),
        ("timeout", check.timeout_secs, 1),
        ("start_period", check.start_period_secs, 0),
    ] {
        if let Some(v) = value
            && !(min..=MAX_SECONDS).contains(&v)
        {
            errors.push(FieldError::new(
                field(part),
                format!("must be from {min} to {MAX_SECONDS} seconds"),
            ));
        }
    }
    if let Some(r) = check.retries
        && !(1..=MAX_RETRIES).contains(&r)
    {
        errors.push(FieldError::new(
            field("retries"),
            format!("must be from 1 to {MAX_RETRIES}"),
        ));
    }
    if let Some(test) = &check.test {
        let (args, empty) = match test {
            HealthTest::Cmd(args) => (args.as_slice(), args.first().is_none_or(String::is_empty)),
            HealthTest::Shell(command) => {
                (std::slice::from_ref(command), command.trim().is_empty())
            }
        };
        if empty {
            errors.push(FieldError::new(field("test"), "must name a command to run"));
        } else if args.len() > MAX_LIST_LEN
            || args
                .iter()
                .any(|a| a.len() > MAX_STRING_LEN || a.contains('\0'))
        {
            errors.push(FieldError::new(
                field("test"),
                format!(
                    "must be at most {MAX_LIST_LEN} strings of at most {MAX_STRING_LEN} bytes \
                     without NUL"
                ),
            ));
        }
    }
    errors
}

impl Serialize for Healthcheck {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match self {
            Self::Disable => map.serialize_entry("disable", &true)?,
            Self::Check(c) => {
                if let Some(test) = &c.test {
                    map.serialize_entry("test", &test.to_args())?;
                }
                for (key, value) in [
                    ("interval", c.interval_secs),
                    ("timeout", c.timeout_secs),
                    ("retries", c.retries),
                    ("start_period", c.start_period_secs),
                ] {
                    if let Some(v) = value {
                        map.serialize_entry(key, &v)?;
                    }
                }
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Healthcheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        parse(&value).map_err(|errors| {
            de::Error::custom(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: Value) -> Vec<String> {
        match parse(&value) {
            Ok(h) => validate(&h).into_iter().map(|e| e.field).collect(),
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn shapes_read_and_write_back_normalized() {
        let h = parse(
            &json!({"test": "wget -q -O- http://127.0.0.1/", "interval": "1m30s",
            "timeout": 5, "retries": 2, "start_period": "10s"}),
        )
        .unwrap();
        assert_eq!(
            h,
            Healthcheck::Check(Probe {
                test: Some(HealthTest::Shell("wget -q -O- http://127.0.0.1/".into())),
                interval_secs: Some(90),
                timeout_secs: Some(5),
                retries: Some(2),
                start_period_secs: Some(10),
            })
        );
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(
            json,
            json!({"test": ["CMD-SHELL", "wget -q -O- http://127.0.0.1/"], "interval": 90,
                "timeout": 5, "retries": 2, "start_period": 10})
        );
        assert_eq!(serde_json::from_value::<Healthcheck>(json).unwrap(), h);

        let cmd = parse(&json!({"test": ["CMD", "true", "x"]})).unwrap();
        assert_eq!(
            serde_json::to_value(&cmd).unwrap(),
            json!({"test": ["CMD", "true", "x"]})
        );
        let shell = parse(&json!({"test": ["CMD-SHELL", "exit 0"]})).unwrap();
        assert_eq!(
            serde_json::to_value(&shell).unwrap(),
            json!({"test": ["CMD-SHELL", "exit 0"]})
        );
        let disable = parse(&json!({"disable": true})).unwrap();
        assert_eq!(disable, Healthcheck::Disable);
        assert_eq!(
            serde_json::to_value(&disable).unwrap(),
            json!({"disable": true})
        );
        // Only the interval: the image's test, at another pace.
        assert!(parse(&json!({"interval": 2})).is_ok());
        assert_eq!(duration("1h2m3s"), Some(3723));
        assert_eq!(duration("0s"), Some(0));
    }

    #[test]
    fn each_shape_rule_names_its_part() {
        assert_eq!(fields(json!("CMD true")), ["healthcheck"]);
        assert_eq!(fields(json!({})), ["healthcheck"]);
        assert_eq!(fields(json!({"disable": false})), ["healthcheck.disable"]);
        assert_eq!(
            fields(json!({"disable": true, "interval": 5})),
            ["healthcheck"]
        );
        assert_eq!(
            fields(json!({"tests": ["CMD", "x"]})),
            ["healthcheck.tests"]
        );
        for bad in [
            json!(["true"]),
            json!(["CMD-SHELL", "a", "b"]),
            json!(["CMD-SHELL"]),
            json!([]),
            json!(["NONE"]),
            json!(5),
            json!(["CMD", 1]),
        ] {
            assert_eq!(
                fields(json!({ "test": bad })),
                ["healthcheck.test"],
                "{bad}"
            );
        }
        for bad in [
            json!(-1),
            json!(1.5),
            json!("500ms"),
            json!("10"),
            json!("s"),
            json!(""),
            json!("1d"),
            json!(true),
            json!(u64::MAX),
        ] {
            assert_eq!(
                fields(json!({ "interval": bad })),
                ["healthcheck.interval"],
                "{bad}"
            );
        }
        assert_eq!(fields(json!({"retries": "3"})), ["healthcheck.retries"]);
        assert_eq!(
            fields(json!({"timeout": "x", "start_period": [], "retries": -1})),
            [
                "healthcheck.timeout",
                "healthcheck.start_period",
                "healthcheck.retries"
            ]
        );
    }

    #[test]
    fn each_bound_names_its_part() {
        assert!(
            fields(
                json!({"test": ["CMD", "true"], "interval": 1, "timeout": 86400,
            "retries": 100, "start_period": 0})
            )
            .is_empty()
        );
        assert_eq!(fields(json!({"interval": 0})), ["healthcheck.interval"]);
        assert_eq!(fields(json!({"interval": "25h"})), ["healthcheck.interval"]);
        assert_eq!(fields(json!({"timeout": 0})), ["healthcheck.timeout"]);
        assert_eq!(
            fields(json!({"start_period": 86401})),
            ["healthcheck.start_period"]
        );
        assert_eq!(fields(json!({"retries": 0})), ["healthcheck.retries"]);
        assert_eq!(fields(json!({"retries": 101})), ["healthcheck.retries"]);
        assert_eq!(fields(json!({"test": ["CMD"]})), ["healthcheck.test"]);
        assert_eq!(fields(json!({"test": "  "})), ["healthcheck.test"]);
        assert_eq!(fields(json!({"test": "a\u{0}b"})), ["healthcheck.test"]);
        assert_eq!(
            fields(json!({"test": ["CMD", "x".repeat(MAX_STRING_LEN + 1)]})),
            ["healthcheck.test"]
        );
        assert!(validate(&Healthcheck::Disable).is_empty());
        let empty = validate(&Healthcheck::Check(Probe::default()));
        assert_eq!(
            empty.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["healthcheck"]
        );
    }
}
