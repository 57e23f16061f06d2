//! Request bodies -> core types, field by field, so every error names its field.

use std::collections::BTreeMap;

use nebula_core::healthcheck::Healthcheck;
use nebula_core::manager::AppPatch;
use nebula_core::model::{AppSpec, ContainersPer, PullPolicy, RolloutPolicy, StartingPort};
use nebula_core::validate::{self, FieldError};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The fields v1 requires on create and full update: those of the original's first release
/// (0.7), whose documentation's examples carry only these. The fields later 1.x releases added
/// (`volumes`, `devices`, `privileged`) take their defaults when absent.
pub(crate) const V1_REQUIRED: [&str; 6] = [
    "starting_ports",
    "containers_per",
    "env_vars",
    "docker_image",
    "running",
    "networks",
];

/// Every field a client may set.
const SETTABLE: [&str; 18] = [
    "docker_image",
    "starting_ports",
    "containers_per",
    "env_vars",
    "running",
    "networks",
    "network_mode",
    "volumes",
    "devices",
    "privileged",
    "rolling_restart",
    "memory_limit_mb",
    "cpu_limit",
    "run_command",
    "entrypoint",
    "rollout",
    "healthcheck",
    "pull_policy",
];

/// Fields of the stored document a client may echo back but not set; ignored.
const READ_ONLY: [&str; 8] = [
    "app_name",
    "app_id",
    "incarnation",
    "restart_generation",
    "restart_mode",
    "prune_generation",
    "_id",
    "command",
];

/// How a body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// v1 create or full update: the six fields of the original's first release required.
    V1Full,
    /// v2 create or full update: `docker_image` required, the rest defaulted.
    V2Full,
}

pub(crate) fn object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(FieldError::new("body", "must be a JSON object").into()),
    }
}

fn check_keys(body: &Map<String, Value>) -> Result<(), ApiError> {
    let unknown: Vec<FieldError> = body
        .keys()
        .filter(|k| !SETTABLE.contains(&k.as_str()) && !READ_ONLY.contains(&k.as_str()))
        .map(|k| {
            FieldError::new(
                k.clone(),
                format!(
                    "is not an app field; settable fields are {}",
                    SETTABLE.join(", ")
                ),
            )
        })
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(unknown))
    }
}

/// Reads a full spec (create, POST update).
pub(crate) fn spec(body: &Map<String, Value>, mode: Mode) -> Result<AppSpec, ApiError> {
    check_keys(body)?;
    let missing: Vec<String> = match mode {
        Mode::V1Full => V1_REQUIRED
            .iter()
            .filter(|f| {
                !body.contains_key(**f) && (**f != "networks" || !body.contains_key("network_mode"))
            })
            .map(|f| (*f).to_owned())
            .collect(),
        Mode::V2Full => {
            if body.get("docker_image").is_none_or(Value::is_null) {
                vec!["docker_image".to_owned()]
            } else {
                Vec::new()
            }
        }
    };
    if !missing.is_empty() {
        return Err(ApiError::Missing(missing));
    }
    let patch = patch(body)?;
    let mut spec = AppSpec::with_image("");
    patch.apply(&mut spec);
    Ok(spec)
}

/// Reads a partial update (PUT/PATCH `/update`): only the fields given.
pub(crate) fn patch(body: &Map<String, Value>) -> Result<AppPatch, ApiError> {
    check_keys(body)?;
    let mut errors = Vec::new();
    let mut p = AppPatch::default();
    macro_rules! field {
        ($name:literal, $parse:expr) => {
            if let Some(v) = body.get($name) {
                match $parse(v) {
                    Ok(x) => Some(x),
                    Err(rule) => {
                        errors.push(FieldError::new($name, rule));
                        None
                    }
                }
            } else {
                None
            }
        };
    }
    p.docker_image = field!("docker_image", string);
    p.starting_ports = field!("starting_ports", starting_ports);
    p.containers_per = field!("containers_per", containers_per);
    p.env_vars = field!("env_vars", env_vars);
    p.running = field!("running", boolean);
    p.networks = field!("networks", strings);
    if let Some(mode) = field!("network_mode", string) {
        if p.networks.is_some() {
            errors.push(FieldError::new(
                "network_mode",
                "give either networks or network_mode, not both",
            ));
        }
        p.networks = Some(vec![mode]);
    }
    p.volumes = field!("volumes", strings);
    p.devices = field!("devices", strings);
    p.privileged = field!("privileged", boolean);
    p.rolling_restart = field!("rolling_restart", boolean);
    p.memory_limit_mb = field!("memory_limit_mb", |v: &Value| nullable(v, |v| {
        v.as_u64()
            .filter(|n| *n >= 1)
            .ok_or_else(|| "must be a whole number of MB, at least 1".to_owned())
    }));
    p.cpu_limit = field!("cpu_limit", |v: &Value| nullable(v, |v| {
        v.as_f64()
            .ok_or_else(|| "must be a number of CPUs".to_owned())
    }));
    p.run_command = field!("run_command", |v: &Value| nullable(v, strings));
    p.entrypoint = field!("entrypoint", |v: &Value| nullable(v, strings));
    p.rollout = field!("rollout", |v: &Value| {
        serde_json::from_value::<RolloutPolicy>(v.clone())
            .map_err(|e| format!("must be {{\"wave_size\": n, \"min_healthy_seconds\": s}}: {e}"))
    });
    p.healthcheck = healthcheck(body, &mut errors);
    p.pull_policy = field!("pull_policy", |v: &Value| {
        v.as_str()
            .and_then(PullPolicy::from_name)
            .ok_or_else(|| format!("must be one of {}", PullPolicy::NAMES.join(", ")))
    });
    if errors.is_empty() {
        Ok(p)
    } else {
        Err(ApiError::Invalid(errors))
    }
}

/// The `healthcheck` field, if given: `null` removes the override (the image's HEALTHCHECK
/// again); its errors name the part, such as `healthcheck.interval`.
pub(crate) fn healthcheck(
    body: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) -> Option<Option<Healthcheck>> {
    match body.get(nebula_core::healthcheck::FIELD)? {
        Value::Null => Some(None),
        v => match nebula_core::healthcheck::parse(v) {
            Ok(h) => Some(Some(h)),
            Err(e) => {
                errors.extend(e);
                None
            }
        },
    }
}

pub(crate) fn nullable<T>(
    v: &Value,
    parse: impl Fn(&Value) -> Result<T, String>,
) -> Result<Option<T>, String> {
    if v.is_null() {
        Ok(None)
    } else {
        parse(v).map(Some)
    }
}

pub(crate) fn string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if s.len() <= validate::MAX_STRING_LEN => Ok(s.clone()),
        Value::String(_) => Err(format!(
            "must be at most {} bytes",
            validate::MAX_STRING_LEN
        )),
        _ => Err("must be a string".into()),
    }
}

pub(crate) fn boolean(v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| "must be true or false".into())
}

pub(crate) fn strings(v: &Value) -> Result<Vec<String>, String> {
    let items = v.as_array().ok_or("must be a list of strings")?;
    if items.len() > validate::MAX_LIST_LEN {
        return Err(format!(
            "must have at most {} entries",
            validate::MAX_LIST_LEN
        ));
    }
    items
        .iter()
        .map(|i| string(i).map_err(|_| "must be a list of strings".to_owned()))
        .collect()
}

fn starting_ports(v: &Value) -> Result<Vec<StartingPort>, String> {
    let items = v
        .as_array()
        .ok_or("must be a list of port numbers or {\"host\": \"container\"} objects")?;
    if items.len() > validate::MAX_LIST_LEN {
        return Err(format!(
            "must have at most {} entries",
            validate::MAX_LIST_LEN
        ));
    }
    items.iter().map(validate::starting_port).collect()
}

fn containers_per(v: &Value) -> Result<ContainersPer, String> {
    const RULE: &str = "must be an object with exactly one of cpu, server, instance, memory, mem";
    let map = v.as_object().ok_or(RULE)?;
    if map.len() != 1 {
        return Err(RULE.into());
    }
    let (key, value) = map.iter().next().ok_or(RULE)?;
    let n = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("{key}: must be a number"))?;
    ContainersPer::from_key(key, n).map_err(|rule| format!("{key}: {rule}"))
}

pub(crate) fn env_vars(v: &Value) -> Result<BTreeMap<String, String>, String> {
    const RULE: &str = "must be an object of names to string, number or boolean values";
    match v {
        // The original's POST /update defaulted env_vars to [].
        Value::Array(a) if a.is_empty() => Ok(BTreeMap::new()),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let value = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => return Err(format!("{k}: {RULE}")),
                };
                Ok((k.clone(), value))
            })
            .collect(),
        _ => Err(RULE.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        object(v).unwrap()
    }

    #[test]
    fn v2_create_defaults_everything_but_the_image() {
        let s = spec(&map(json!({"docker_image": "nginx"})), Mode::V2Full).unwrap();
        assert_eq!(s, AppSpec::with_image("nginx"));
        assert!(
            matches!(spec(&map(json!({})), Mode::V2Full), Err(ApiError::Missing(f)) if f == ["docker_image"])
        );
    }

    #[test]
    fn v1_create_needs_the_first_six_and_takes_network_mode() {
        let Err(ApiError::Missing(f)) = spec(&map(json!({"docker_image": "nginx"})), Mode::V1Full)
        else {
            panic!()
        };
        assert_eq!(
            f,
            [
                "starting_ports",
                "containers_per",
                "env_vars",
                "running",
                "networks"
            ]
        );
        let body = json!({"starting_ports": [80], "containers_per": {"server": 2}, "env_vars": {"A": 1},
            "docker_image": "nginx", "running": true, "network_mode": "host", "volumes": [], "devices": [],
            "privileged": false});
        let s = spec(&map(body), Mode::V1Full).unwrap();
        assert_eq!(s.networks, ["host"]);
        assert_eq!(s.env_vars["A"], "1");
        assert_eq!(s.containers_per, ContainersPer::Server(2));
    }

    #[test]
    fn v1_create_defaults_the_fields_later_releases_added() {
        // The original documentation's site body, byte for byte.
        let body: Value = serde_json::from_str(
            r#"{"starting_ports": [{"81": "80"}], "containers_per": {"cpu": 3}, "env_vars": {"test": "test123"}, "docker_image": "site-image", "running": true, "network_mode": "bridge"}"#,
        )
        .unwrap();
        let s = spec(&map(body), Mode::V1Full).unwrap();
        assert!(s.volumes.is_empty() && s.devices.is_empty() && !s.privileged);
        assert_eq!(s.networks, ["bridge"]);
        assert_eq!(s.containers_per, ContainersPer::Cpu(3.0));
    }

    #[test]
    fn pull_policy_is_named_and_checked() {
        let p = patch(&map(json!({"pull_policy": "if_missing"}))).unwrap();
        assert_eq!(p.pull_policy, Some(PullPolicy::IfMissing));
        let Err(ApiError::Invalid(e)) = patch(&map(json!({"pull_policy": "sometimes"}))) else {
            panic!()
        };
        assert_eq!(e[0].field, "pull_policy");
        assert_eq!(e[0].rule, "must be one of always, if_missing, never");
    }

    #[test]
    fn type_errors_name_their_fields() {
        let body = json!({"docker_image": 5, "running": "yes", "containers_per": {"cpu": 1, "server": 1},
            "starting_ports": "80", "env_vars": {"A": [1]}, "bogus": 1});
        let Err(ApiError::Invalid(e)) = patch(&map(body)) else {
            panic!()
        };
        assert_eq!(
            e.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["bogus"]
        );
        let body = json!({"docker_image": 5, "running": "yes", "containers_per": {"cpu": 1, "server": 1},
            "starting_ports": "80", "env_vars": {"A": [1]}});
        let Err(ApiError::Invalid(e)) = patch(&map(body)) else {
            panic!()
        };
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "docker_image",
                "starting_ports",
                "containers_per",
                "env_vars",
                "running"
            ]
        );
    }

    #[test]
    fn healthcheck_is_read_with_its_parts_named_and_null_removes_it() {
        let p = patch(&map(
            json!({"healthcheck": {"test": "true", "interval": "5s"}}),
        ))
        .unwrap();
        let Some(Some(Healthcheck::Check(probe))) = p.healthcheck else {
            panic!("{:?}", p.healthcheck)
        };
        assert_eq!(probe.interval_secs, Some(5));
        let p = patch(&map(json!({"healthcheck": null}))).unwrap();
        assert_eq!(p.healthcheck, Some(None));
        assert!(!p.is_empty());
        let Err(ApiError::Invalid(e)) = patch(&map(
            json!({"healthcheck": {"interval": "soon"}, "running": 1}),
        )) else {
            panic!()
        };
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["running", "healthcheck.interval"]);
        let s = spec(&map(json!({"docker_image": "nginx"})), Mode::V2Full).unwrap();
        assert_eq!(s.healthcheck, None);
    }

    #[test]
    fn read_only_fields_are_ignored() {
        let p = patch(&map(
            json!({"app_id": 99, "app_name": "x", "running": false}),
        ))
        .unwrap();
        assert_eq!(
            p,
            AppPatch {
                running: Some(false),
                ..AppPatch::default()
            }
        );
    }
}
