//! Validation: every rule names its field and says what it wants.

use std::collections::BTreeSet;

use crate::model::{AppSpec, ContainersPer, StartingPort};

pub use crate::field::{
    FieldError, MAX_APP_NAME_LEN, MAX_CONTAINERS_PER_HOST, MAX_LIST_LEN, MAX_STRING_LEN, app_name,
    object_name,
};

/// Parses one `starting_ports` entry: an integer, or a one-key object `{"host": "container"}`
/// ([`StartingPort::from_json`]).
///
/// # Errors
/// The rule broken, as text.
pub fn starting_port(value: &serde_json::Value) -> Result<StartingPort, String> {
    StartingPort::from_json(value)
}

/// Checks the parts of a `docker_image` reference.
///
/// # Errors
/// A [`FieldError`] on `docker_image`.
pub fn docker_image(image: &str) -> Result<(), FieldError> {
    crate::image::ImageRef::parse(image)
        .map(|_| ())
        .map_err(|rule| FieldError::new("docker_image", rule))
}

/// Checks every field of a spec; `known_count` is the number of containers per host when it
/// does not depend on the host (`server`/`instance`), so the last host port can be checked.
///
/// # Errors
/// Every rule broken, each naming its field.
pub fn spec(spec: &AppSpec) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Err(e) = docker_image(&spec.docker_image) {
        errors.push(e);
    }
    ports(spec, &mut errors);
    containers_per(spec.containers_per, &mut errors);
    env_vars(spec, &mut errors);
    networks(&spec.networks, &mut errors);
    for (i, volume) in spec.volumes.iter().enumerate() {
        if let Err(rule) = self::volume(volume) {
            errors.push(FieldError::new(format!("volumes[{i}]"), rule));
        }
    }
    for (i, device) in spec.devices.iter().enumerate() {
        if let Err(rule) = self::device(device) {
            errors.push(FieldError::new(format!("devices[{i}]"), rule));
        }
    }
    for (field, len) in [
        ("volumes", spec.volumes.len()),
        ("devices", spec.devices.len()),
    ] {
        if len > MAX_LIST_LEN {
            errors.push(FieldError::new(
                field,
                format!("must have at most {MAX_LIST_LEN} entries"),
            ));
        }
    }
    if let Some(cpu) = spec.cpu_limit
        && (!cpu.is_finite() || cpu <= 0.0 || cpu > 1024.0)
    {
        errors.push(FieldError::new(
            "cpu_limit",
            "must be a number of CPUs above 0 and at most 1024",
        ));
    }
    if spec.memory_limit_mb == Some(0) {
        errors.push(FieldError::new("memory_limit_mb", "must be at least 1"));
    }
    for (field, args) in [
        ("run_command", &spec.run_command),
        ("entrypoint", &spec.entrypoint),
    ] {
        if let Some(args) = args
            && (args.len() > MAX_LIST_LEN
                || args
                    .iter()
                    .any(|a| a.len() > MAX_STRING_LEN || a.contains('\0')))
        {
            errors.push(FieldError::new(
                field,
                "must be a list of at most 256 strings without NUL",
            ));
        }
    }
    if spec.rollout.wave_size == 0 {
        errors.push(FieldError::new("rollout.wave_size", "must be at least 1"));
    }
    if spec.rollout.min_healthy_seconds > 3600 {
        errors.push(FieldError::new(
            "rollout.min_healthy_seconds",
            "must be at most 3600",
        ));
    }
    if let Some(healthcheck) = &spec.healthcheck {
        errors.extend(crate::healthcheck::validate(healthcheck));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn ports(spec: &AppSpec, errors: &mut Vec<FieldError>) {
    if spec.starting_ports.len() > MAX_LIST_LEN {
        errors.push(FieldError::new(
            "starting_ports",
            format!("must have at most {MAX_LIST_LEN} entries"),
        ));
        return;
    }
    let mut seen = BTreeSet::new();
    for port in &spec.starting_ports {
        if !seen.insert(port.container()) {
            errors.push(FieldError::new(
                "starting_ports",
                format!(
                    "container port {} appears twice; each entry needs its own container port",
                    port.container()
                ),
            ));
        }
    }
    let count = match spec.containers_per {
        ContainersPer::Server(n) | ContainersPer::Instance(n) => n,
        _ => 1,
    };
    for port in &spec.starting_ports {
        let last = u32::from(port.host()) + count - 1;
        if last > 65535 {
            errors.push(FieldError::new(
                "starting_ports",
                format!(
                    "host ports {}..{last} of {count} containers must stay within 1-65535",
                    port.host()
                ),
            ));
        }
    }
    let mut hosts: Vec<(u32, u32)> = spec
        .starting_ports
        .iter()
        .map(|p| (u32::from(p.host()), u32::from(p.host()) + count - 1))
        .collect();
    hosts.sort_unstable();
    for pair in hosts.windows(2) {
        if pair[1].0 <= pair[0].1 {
            errors.push(FieldError::new(
                "starting_ports",
                format!(
                    "host port ranges {}-{} and {}-{} overlap",
                    pair[0].0, pair[0].1, pair[1].0, pair[1].1
                ),
            ));
        }
    }
}

fn containers_per(rule: ContainersPer, errors: &mut Vec<FieldError>) {
    if let Err(e) = ContainersPer::from_key(rule.key(), rule.value()) {
        errors.push(FieldError::new(
            "containers_per",
            format!("{}: {e}", rule.key()),
        ));
    }
    if matches!(rule, ContainersPer::Cpu(v) if v > f64::from(MAX_CONTAINERS_PER_HOST)) {
        errors.push(FieldError::new(
            "containers_per",
            "cpu: must be at most 1024 per CPU",
        ));
    }
}

fn env_vars(spec: &AppSpec, errors: &mut Vec<FieldError>) {
    if spec.env_vars.len() > MAX_LIST_LEN {
        errors.push(FieldError::new(
            "env_vars",
            format!("must have at most {MAX_LIST_LEN} variables"),
        ));
    }
    for (key, value) in &spec.env_vars {
        let key_ok = !key.is_empty()
            && key.len() <= 256
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !key_ok {
            errors.push(FieldError::new(
                "env_vars",
                format!("key {key:?} must be 1 to 256 characters of A-Z a-z 0-9 _ . - not starting with a digit"),
            ));
        }
        if value.len() > MAX_STRING_LEN || value.contains('\0') {
            errors.push(FieldError::new(
                format!("env_vars.{key}"),
                "value must be at most 4096 bytes without NUL",
            ));
        }
    }
}

fn networks(networks: &[String], errors: &mut Vec<FieldError>) {
    if networks.is_empty() {
        errors.push(FieldError::new(
            "networks",
            "must name at least one network",
        ));
        return;
    }
    if networks.len() > 16 {
        errors.push(FieldError::new("networks", "must name at most 16 networks"));
    }
    for special in ["host", "none"] {
        if networks.iter().any(|n| n == special) && networks.len() > 1 {
            errors.push(FieldError::new(
                "networks",
                format!("\"{special}\" must be the only network"),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for name in networks {
        if object_name("networks", name).is_err() {
            errors.push(FieldError::new(
                "networks",
                format!("{name:?} is not a valid network name"),
            ));
        }
        if !seen.insert(name) {
            errors.push(FieldError::new(
                "networks",
                format!("{name:?} appears twice"),
            ));
        }
    }
}

fn path_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_STRING_LEN && !s.contains('\0')
}

/// `host:container[:mode]`, where host is an absolute path or a volume name, container an
/// absolute path and mode a comma list of ro, rw, z, Z, nocopy and propagation modes.
///
/// # Errors
/// The rule, as text.
pub fn volume(volume: &str) -> Result<(), String> {
    let rule = format!("{volume:?} must be host:container[:mode] with an absolute container path");
    let parts: Vec<&str> = volume.split(':').collect();
    let (host, container, mode) = match parts.as_slice() {
        [h, c] => (*h, *c, None),
        [h, c, m] => (*h, *c, Some(*m)),
        _ => return Err(rule),
    };
    let host_ok =
        path_like(host) && (host.starts_with('/') || object_name("volumes", host).is_ok());
    if !host_ok || !path_like(container) || !container.starts_with('/') {
        return Err(rule);
    }
    if let Some(mode) = mode {
        const MODES: [&str; 12] = [
            "ro",
            "rw",
            "z",
            "Z",
            "nocopy",
            "shared",
            "rshared",
            "slave",
            "rslave",
            "private",
            "rprivate",
            "delegated",
        ];
        if mode.split(',').any(|m| !MODES.contains(&m)) {
            return Err(format!(
                "{volume:?}: mode must be a comma list of {}",
                MODES.join(", ")
            ));
        }
    }
    Ok(())
}

/// `host[:container[:permissions]]` with absolute paths and permissions from `rwm`.
///
/// # Errors
/// The rule, as text.
pub fn device(device: &str) -> Result<(), String> {
    let rule = format!("{device:?} must be /host/path[:/container/path[:rwm]]");
    let parts: Vec<&str> = device.split(':').collect();
    let ok = match parts.as_slice() {
        [h] => h.starts_with('/') && path_like(h),
        [h, c] => h.starts_with('/') && path_like(h) && c.starts_with('/') && path_like(c),
        [h, c, p] => {
            h.starts_with('/')
                && path_like(h)
                && c.starts_with('/')
                && path_like(c)
                && !p.is_empty()
                && p.chars().all(|ch| matches!(ch, 'r' | 'w' | 'm'))
        }
        _ => false,
    };
    if ok { Ok(()) } else { Err(rule) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(spec_: &AppSpec) -> Vec<String> {
        spec(spec_)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn names() {
        assert!(app_name("site").is_ok());
        assert!(app_name("my_app.v2-1").is_ok());
        for bad in ["", "-x", "a b", "a/b", "ü", &"a".repeat(64)] {
            assert_eq!(app_name(bad).unwrap_err().field, "app_name", "{bad:?}");
        }
    }

    #[test]
    fn port_forms() {
        assert_eq!(starting_port(&json!(80)), Ok(StartingPort::Same(80)));
        assert_eq!(
            starting_port(&json!({"81": "80"})),
            Ok(StartingPort::Mapped {
                host: 81,
                container: 80
            })
        );
        assert_eq!(
            starting_port(&json!({"81": 80})),
            Ok(StartingPort::Mapped {
                host: 81,
                container: 80
            })
        );
        for bad in [
            json!(0),
            json!(65536),
            json!(-1),
            json!("80"),
            json!({"a": "80"}),
            json!({"1": "2", "3": "4"}),
            json!(1.5),
        ] {
            assert!(starting_port(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_spec_is_valid() {
        assert_eq!(spec(&AppSpec::with_image("nginx")), Ok(()));
    }

    #[test]
    fn each_rule_names_its_field() {
        let base = AppSpec::with_image("nginx");
        let mut s = base.clone();
        s.docker_image = "UPPER/Case".into();
        assert_eq!(fields(&s), ["docker_image"]);

        let mut s = base.clone();
        s.starting_ports = vec![
            StartingPort::Same(80),
            StartingPort::Mapped {
                host: 90,
                container: 80,
            },
        ];
        assert_eq!(fields(&s), ["starting_ports"]);

        let mut s = base.clone();
        s.starting_ports = vec![StartingPort::Same(65535)];
        s.containers_per = ContainersPer::Server(2);
        assert_eq!(fields(&s), ["starting_ports"]);

        let mut s = base.clone();
        s.starting_ports = vec![
            StartingPort::Same(80),
            StartingPort::Mapped {
                host: 81,
                container: 443,
            },
        ];
        s.containers_per = ContainersPer::Server(2);
        assert_eq!(fields(&s), ["starting_ports"]);

        let mut s = base.clone();
        s.containers_per = ContainersPer::Cpu(-1.0);
        assert_eq!(fields(&s), ["containers_per"]);

        let mut s = base.clone();
        s.env_vars.insert("A=B".into(), "x".into());
        assert_eq!(fields(&s), ["env_vars"]);

        let mut s = base.clone();
        s.networks = vec!["host".into(), "bridge".into()];
        assert_eq!(fields(&s), ["networks"]);

        let mut s = base.clone();
        s.networks = vec![];
        assert_eq!(fields(&s), ["networks"]);

        let mut s = base.clone();
        s.volumes = vec!["/a:relative".into()];
        assert_eq!(fields(&s), ["volumes[0]"]);

        let mut s = base.clone();
        s.devices = vec!["/dev/x:/dev/y:rwx".into()];
        assert_eq!(fields(&s), ["devices[0]"]);

        let mut s = base;
        s.rollout.wave_size = 0;
        assert_eq!(fields(&s), ["rollout.wave_size"]);
    }

    #[test]
    fn volumes_and_devices() {
        assert!(volume("/data:/data").is_ok());
        assert!(volume("named:/data:ro").is_ok());
        assert!(volume("/a:/b:ro,Z").is_ok());
        assert!(volume("/a:/b:xx").is_err());
        assert!(volume("/a").is_err());
        assert!(device("/dev/snd").is_ok());
        assert!(device("/dev/snd:/dev/snd:rw").is_ok());
        assert!(device("snd").is_err());
    }
}
