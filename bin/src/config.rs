//! Configuration: command-line flag > environment (upper-case name) > config file (`--config`,
//! JSON or TOML, lower-case names) > default. Every bad value is collected, and the binary stops
//! at start listing them all.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nebula_core::device_group::DeviceGroupName;
use nebula_core::model::AppName;
use nebula_core::runtime::RegistryAuth;
use nebula_core::worker::{Selection, WorkerConfig};
use nebula_http::InfoCacheConfig;
use nebula_http::auth::AuthConfig;
use nebula_http::client::ClientAuth;

/// The layered sources of settings, and the problems found reading them.
#[derive(Debug, Default)]
pub struct Layers {
    flags: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    file: BTreeMap<String, String>,
    errors: Vec<String>,
}

fn scalar(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Layers {
    /// Layers from flags given (key -> value), an environment lookup, and an optional file.
    pub fn new(
        flags: impl IntoIterator<Item = (&'static str, Option<String>)>,
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<&Path>,
    ) -> Self {
        let mut layers = Self {
            flags: flags
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect(),
            env: env.into_iter().collect(),
            ..Self::default()
        };
        if let Some(path) = file {
            layers.read_file(path);
        }
        layers
    }

    fn read_file(&mut self, path: &Path) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.errors
                    .push(format!("config file {}: {e}", path.display()));
                return;
            }
        };
        let parsed: Result<serde_json::Value, String> =
            if path.extension().is_some_and(|e| e == "toml") {
                toml::from_str::<toml::Value>(&text)
                    .map_err(|e| e.to_string())
                    .and_then(|v| serde_json::to_value(v).map_err(|e| e.to_string()))
            } else {
                serde_json::from_str(&text).map_err(|e| e.to_string())
            };
        match parsed {
            Ok(serde_json::Value::Object(map)) => {
                for (k, v) in map {
                    match scalar(&v) {
                        Some(s) => {
                            self.file.insert(k.to_lowercase(), s);
                        }
                        None => self.errors.push(format!(
                            "config file {}: {k} must be a string, number or boolean",
                            path.display()
                        )),
                    }
                }
            }
            Ok(_) => self.errors.push(format!(
                "config file {}: must hold an object of settings",
                path.display()
            )),
            Err(e) => self
                .errors
                .push(format!("config file {}: {e}", path.display())),
        }
    }

    /// The raw value of a setting and where it came from.
    #[must_use]
    pub fn raw(&self, key: &str) -> Option<(String, String)> {
        let upper = key.to_uppercase();
        if let Some(v) = self.flags.get(key) {
            return Some((v.clone(), format!("--{}", key.replace('_', "-"))));
        }
        if let Some(v) = self.env.get(&upper) {
            return Some((v.clone(), upper));
        }
        self.file
            .get(key)
            .map(|v| (v.clone(), format!("config file key {key}")))
    }

    /// A string setting, empty counting as absent.
    pub fn string(&mut self, key: &str) -> Option<String> {
        self.raw(key).map(|(v, _)| v).filter(|v| !v.is_empty())
    }

    /// A typed setting with a default; a bad value is recorded and the default returned.
    pub fn parse<T: FromStr>(&mut self, key: &str, default: T) -> T
    where
        T::Err: Display,
    {
        match self.raw(key) {
            Some((v, source)) if !v.is_empty() => match v.trim().parse() {
                Ok(x) => x,
                Err(e) => {
                    self.errors.push(format!("{source}={v:?}: {e}"));
                    default
                }
            },
            _ => default,
        }
    }

    /// A boolean setting: true/false, yes/no, 1/0, on/off.
    pub fn bool(&mut self, key: &str, default: bool) -> bool {
        match self.raw(key) {
            Some((v, source)) => match v.trim().to_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => true,
                "false" | "no" | "0" | "off" => false,
                _ => {
                    self.errors
                        .push(format!("{source}={v:?}: must be true or false"));
                    default
                }
            },
            None => default,
        }
    }

    /// Seconds as a duration, bounded.
    pub fn seconds(&mut self, key: &str, default: u64, min: u64) -> Duration {
        let secs = self.parse(key, default);
        if secs < min {
            let source = self.raw(key).map_or_else(|| key.to_uppercase(), |(_, s)| s);
            self.errors
                .push(format!("{source}={secs}: must be at least {min}"));
        }
        Duration::from_secs(secs)
    }

    /// Records a problem found while combining settings.
    pub fn error(&mut self, problem: impl Into<String>) {
        self.errors.push(problem.into());
    }

    /// Ends reading: every problem at once, or nothing.
    ///
    /// # Errors
    /// The list of problems.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(self.errors))
        }
    }
}

/// Every problem found in the configuration.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "bad configuration:")?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The API manager's settings.
#[derive(Debug)]
pub struct ApiConfig {
    /// Where to listen.
    pub bind: SocketAddr,
    /// The embedded store's directory.
    pub data_dir: PathBuf,
    /// Who may call.
    pub auth: AuthConfig,
    /// The device group `/info` cache (`CACHE_TIME`, `CACHE_MAX_SIZE`).
    pub info_cache: InfoCacheConfig,
    /// The bcrypt cost of users' new password and token hashes (`NEBULA_BCRYPT_COST`).
    pub bcrypt_cost: u32,
    /// How long worker reports are kept (`NEBULA_REPORT_TTL`).
    pub reports: nebula_http::ReportsConfig,
}

fn auth(l: &mut Layers, allow_generated: bool) -> AuthConfig {
    let auth = AuthConfig {
        enabled: l.bool("auth_enabled", true),
        user: l.string("basic_auth_user"),
        password: l.string("basic_auth_password"),
        token: l.string("auth_token"),
    };
    if auth.user.is_some() != auth.password.is_some() {
        l.error("BASIC_AUTH_USER and BASIC_AUTH_PASSWORD must be set together");
    }
    if auth.enabled && auth.password.is_none() && auth.token.is_none() && !allow_generated {
        l.error(
            "AUTH_ENABLED is true but no BASIC_AUTH_USER/BASIC_AUTH_PASSWORD or AUTH_TOKEN is set: \
             set them, or set AUTH_ENABLED=false to run without authentication on purpose",
        );
    }
    auth
}

impl ApiConfig {
    /// Reads the API manager's settings (`default_bind` differs between the API manager and
    /// standalone).
    pub fn read(l: &mut Layers, default_bind: &str, allow_generated_password: bool) -> Self {
        let default: SocketAddr = default_bind
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080)));
        Self {
            bind: l.parse("nebula_bind", default),
            data_dir: PathBuf::from(
                l.string("nebula_data_dir")
                    .unwrap_or_else(|| "./nebula-data".into()),
            ),
            auth: auth(l, allow_generated_password),
            info_cache: InfoCacheConfig {
                ttl: l.seconds("cache_time", 10, 0),
                max_size: l.parse("cache_max_size", 1024usize),
            },
            bcrypt_cost: bcrypt_cost(l),
            reports: crate::reports::reports_config(l),
        }
    }
}

fn bcrypt_cost(l: &mut Layers) -> u32 {
    use nebula_http::auth::{DEFAULT_BCRYPT_COST, MAX_BCRYPT_COST, MIN_BCRYPT_COST};
    let cost = l.parse("nebula_bcrypt_cost", DEFAULT_BCRYPT_COST);
    if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        l.error(format!(
            "NEBULA_BCRYPT_COST={cost}: must be {MIN_BCRYPT_COST} to {MAX_BCRYPT_COST} (default {DEFAULT_BCRYPT_COST})"
        ));
    }
    cost
}

/// The worker's engine-side settings.
#[derive(Debug)]
pub struct EngineConfig {
    /// `DOCKER_HOST`, or the default socket.
    pub docker_host: Option<String>,
    /// The worker service's knobs.
    pub worker: WorkerConfig,
    /// How the worker reports (`NEBULA_REPORT_*`).
    pub report: crate::reports::ReportSettings,
}

impl EngineConfig {
    /// Reads the engine and worker knobs shared by standalone and the worker manager.
    pub fn read(l: &mut Layers, selection: Selection) -> Self {
        let registry_auth = match (
            l.string("registry_auth_user"),
            l.string("registry_auth_password"),
        ) {
            (Some(username), Some(password)) => Some(RegistryAuth {
                username,
                password,
                server: l
                    .string("registry_host")
                    .unwrap_or_else(|| "https://index.docker.io/v1/".into()),
            }),
            (None, None) => None,
            _ => {
                l.error("REGISTRY_AUTH_USER and REGISTRY_AUTH_PASSWORD must be set together");
                None
            }
        };
        let parallelism = l.parse("nebula_parallelism", 16usize);
        if parallelism == 0 {
            l.error("NEBULA_PARALLELISM must be at least 1");
        }
        Self {
            docker_host: l.string("docker_host"),
            worker: WorkerConfig {
                selection,
                check_in: l.seconds("nebula_manager_check_in_time", 30, 1),
                reconcile_every: l.seconds("nebula_reconcile_interval", 10, 1),
                max_restart_wait: l.seconds("max_restart_wait_in_seconds", 0, 0),
                stop_grace: l.seconds("nebula_stop_grace", 5, 0),
                parallelism: parallelism.max(1),
                registry_auth,
                owner: None,
                resync_spread: l.seconds("nebula_resync_spread", 10, 0),
            },
            report: crate::reports::ReportSettings::read(l),
        }
    }
}

/// The worker manager's settings.
#[derive(Debug)]
pub struct WorkerManagerConfig {
    /// The manager's base URL.
    pub manager_uri: String,
    /// How to authenticate to it.
    pub manager_auth: Option<ClientAuth>,
    /// PEM certificates trusted for https:// besides the public roots (a private CA).
    pub manager_ca: Option<Vec<u8>>,
    /// Timeout of one request to the manager.
    pub request_timeout: Duration,
    /// Engine and worker knobs.
    pub engine: EngineConfig,
}

impl WorkerManagerConfig {
    /// Reads the worker manager's settings.
    pub fn read(l: &mut Layers) -> Self {
        let apps: Vec<AppName> = match l.string("app_name") {
            Some(csv) => csv
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .filter_map(|s| match AppName::parse(s) {
                    Ok(n) => Some(n),
                    Err(e) => {
                        l.error(format!("APP_NAME {s:?}: {}", e.rule));
                        None
                    }
                })
                .collect(),
            None => Vec::new(),
        };
        let device_group = l.string("device_group").and_then(|name| {
            DeviceGroupName::parse(name.trim())
                .map_err(|e| l.error(format!("DEVICE_GROUP {name:?}: {}", e.rule)))
                .ok()
        });
        let selection = match (device_group, apps.is_empty()) {
            (Some(group), true) => Selection::DeviceGroup(group),
            (Some(_), false) => {
                l.error("set DEVICE_GROUP or APP_NAME, not both");
                Selection::Apps(apps)
            }
            (None, _) => {
                if apps.is_empty() && l.string("device_group").is_none() {
                    l.error(
                        "DEVICE_GROUP or APP_NAME is required: the device group this worker runs, \
                         or the comma-separated names of its apps",
                    );
                }
                Selection::Apps(apps)
            }
        };
        let manager_uri = match l.string("nebula_manager_uri") {
            Some(uri) => uri,
            None => {
                let protocol = l
                    .string("nebula_manager_protocol")
                    .unwrap_or_else(|| "http".into());
                let port = l.parse("nebula_manager_port", 80u16);
                match l.string("nebula_manager_host") {
                    Some(host) => format!("{protocol}://{host}:{port}"),
                    None => {
                        l.error("NEBULA_MANAGER_URI or NEBULA_MANAGER_HOST is required");
                        String::new()
                    }
                }
            }
        };
        if !manager_uri.is_empty()
            && !manager_uri.starts_with("http://")
            && !manager_uri.starts_with("https://")
        {
            l.error(format!(
                "manager address {manager_uri:?}: must start with http:// or https://"
            ));
        }
        let manager_ca = manager_ca(l, "NEBULA_MANAGER_CA_FILE");
        let manager_auth = manager_auth(
            l,
            "NEBULA_MANAGER_AUTH_USER and NEBULA_MANAGER_AUTH_PASSWORD must be set together",
        );
        Self {
            manager_uri,
            manager_auth,
            manager_ca,
            request_timeout: l.seconds("nebula_manager_request_timeout", 60, 1),
            engine: EngineConfig::read(l, selection),
        }
    }
}

/// The PEM CA bundle of `nebula_manager_ca_file`, trusted for https:// besides the public
/// roots; an unreadable file or one without a usable certificate is an error naming `setting`.
pub fn manager_ca(l: &mut Layers, setting: &str) -> Option<Vec<u8>> {
    let path = l.string("nebula_manager_ca_file")?;
    match std::fs::read(&path) {
        Ok(pem) => match nebula_http::client::tls_config(Some(&pem)) {
            Ok(_) => Some(pem),
            Err(e) => {
                l.error(format!("{setting} {path:?}: {e}"));
                None
            }
        },
        Err(e) => {
            l.error(format!("{setting} {path:?}: {e}"));
            None
        }
    }
}

/// The credentials for calling a manager: `nebula_manager_auth_token` (a bearer token, which
/// wins), or `nebula_manager_auth_user` with `nebula_manager_auth_password`, or none. One of
/// user and password without the other is the error `unpaired`.
pub fn manager_auth(l: &mut Layers, unpaired: &str) -> Option<ClientAuth> {
    match (
        l.string("nebula_manager_auth_user"),
        l.string("nebula_manager_auth_password"),
        l.string("nebula_manager_auth_token"),
    ) {
        (_, _, Some(token)) => Some(ClientAuth::Bearer(token)),
        (Some(user), Some(password), None) => Some(ClientAuth::Basic { user, password }),
        (None, None, None) => None,
        _ => {
            l.error(unpaired);
            None
        }
    }
}

/// The RabbitMQ bus, when `RABBIT_URL` or `RABBIT_HOST` is set (with `RABBIT_PORT`,
/// `RABBIT_USER`, `RABBIT_PASSWORD`, `RABBIT_VHOST`); `worker_id` names a worker's durable
/// queue (`NEBULA_WORKER_ID`, default the host name). Every problem is recorded in `l`.
pub fn rabbit(l: &mut Layers, worker: bool) -> Option<nebula_rabbit::RabbitConfig> {
    let mut config = match (l.string("rabbit_url"), l.string("rabbit_host")) {
        (Some(url), _) => match nebula_rabbit::RabbitConfig::from_url(&url) {
            Ok(c) => c,
            Err(e) => {
                for p in e.problems {
                    l.error(format!("RABBIT_URL: {p}"));
                }
                return None;
            }
        },
        (None, Some(host)) => {
            let mut c = nebula_rabbit::RabbitConfig {
                host,
                ..nebula_rabbit::RabbitConfig::default()
            };
            c.port = l.parse("rabbit_port", 5672u16);
            if let Some(user) = l.string("rabbit_user") {
                c.user = user;
            }
            if let Some(password) = l.string("rabbit_password") {
                c.password = password;
            }
            if let Some(vhost) = l.string("rabbit_vhost") {
                c.vhost = vhost;
            }
            c
        }
        (None, None) => return None,
    };
    config.queue_expiry = l.seconds(
        "nebula_rabbit_queue_expiry",
        config.queue_expiry.as_secs(),
        1,
    );
    config.frame_max = l.parse("nebula_rabbit_frame_max", config.frame_max);
    config.topology = l.parse("nebula_rabbit_topology", config.topology);
    if worker {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok();
        config.worker_id = l
            .string("nebula_worker_id")
            .or(host)
            .filter(|h| !h.is_empty());
    }
    for p in config.problems() {
        l.error(format!("RabbitMQ: {p}"));
    }
    Some(config)
}

/// The MongoDB store, when `MONGO_URL` is set (with `SCHEMA_NAME`, `MONGO_MAX_POOL_SIZE`,
/// `MONGO_REPORT_TTL`); otherwise the API manager uses the embedded store.
pub fn mongo(l: &mut Layers) -> Option<nebula_mongo::MongoConfig> {
    let url = l.string("mongo_url")?;
    let mut config = nebula_mongo::MongoConfig::new(&url);
    if let Some(schema) = l.string("schema_name") {
        config.schema_name = schema;
    }
    config.max_pool_size = l.parse("mongo_max_pool_size", config.max_pool_size);
    config.report_ttl = l.seconds("mongo_report_ttl", config.report_ttl.as_secs(), 1);
    if let Err(problems) = config.validate() {
        for p in problems {
            l.error(format!("MongoDB: {p}"));
        }
    }
    Some(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let dir = std::env::temp_dir().join(format!("nebula-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "nebula_bind = \"127.0.0.1:3\"\nnebula_data_dir = \"/from-file\"\nauth_enabled = false\n").unwrap();
        let mut l = Layers::new(
            [("nebula_bind", Some("127.0.0.1:1".to_owned()))],
            env(&[
                ("NEBULA_BIND", "127.0.0.1:2"),
                ("NEBULA_DATA_DIR", "/from-env"),
            ]),
            Some(&file),
        );
        let c = ApiConfig::read(&mut l, "0.0.0.0:80", false);
        assert_eq!(l.finish(), Ok(()));
        assert_eq!(c.bind.to_string(), "127.0.0.1:1");
        assert_eq!(c.data_dir, PathBuf::from("/from-env"));
        assert!(!c.auth.enabled, "from the file");
        let mut l = Layers::new([], env(&[]), None);
        let c = ApiConfig::read(&mut l, "0.0.0.0:80", true);
        assert_eq!(
            (c.bind.to_string(), c.auth.enabled),
            ("0.0.0.0:80".to_owned(), true)
        );
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let mut l = Layers::new(
            [],
            env(&[
                ("NEBULA_BIND", "nowhere"),
                ("AUTH_ENABLED", "maybe"),
                ("BASIC_AUTH_USER", "admin"),
                ("APP_NAME", "ok, bad name"),
                ("NEBULA_MANAGER_PORT", "99999"),
                ("NEBULA_MANAGER_HOST", "m"),
                ("NEBULA_MANAGER_CHECK_IN_TIME", "0"),
            ]),
            None,
        );
        ApiConfig::read(&mut l, "0.0.0.0:80", false);
        WorkerManagerConfig::read(&mut l);
        let ConfigError(errors) = l.finish().unwrap_err();
        let text = errors.join("\n");
        for needle in [
            "NEBULA_BIND",
            "AUTH_ENABLED",
            "BASIC_AUTH_PASSWORD",
            "APP_NAME \"bad name\"",
            "NEBULA_MANAGER_PORT",
            "NEBULA_MANAGER_CHECK_IN_TIME",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }

    #[test]
    fn worker_reads_manager_address_and_apps() {
        let mut l = Layers::new(
            [],
            env(&[
                ("APP_NAME", "site,lb"),
                ("NEBULA_MANAGER_URI", "http://127.0.0.1:8080/prefix"),
                ("NEBULA_MANAGER_AUTH_TOKEN", "t"),
                ("MAX_RESTART_WAIT_IN_SECONDS", "7"),
            ]),
            None,
        );
        let c = WorkerManagerConfig::read(&mut l);
        assert_eq!(l.finish(), Ok(()));
        assert_eq!(c.manager_uri, "http://127.0.0.1:8080/prefix");
        assert!(matches!(c.manager_auth, Some(ClientAuth::Bearer(_))));
        assert_eq!(c.engine.worker.max_restart_wait, Duration::from_secs(7));
        assert_eq!(
            c.engine.worker.selection,
            Selection::Apps(vec![
                AppName::parse("site").unwrap(),
                AppName::parse("lb").unwrap()
            ])
        );
        let mut l = Layers::new(
            [],
            env(&[
                ("APP_NAME", "a"),
                ("NEBULA_MANAGER_HOST", "m"),
                ("NEBULA_MANAGER_PORT", "81"),
            ]),
            None,
        );
        assert_eq!(WorkerManagerConfig::read(&mut l).manager_uri, "http://m:81");
    }

    #[test]
    fn worker_accepts_https_and_refuses_a_bad_ca_file() {
        let mut l = Layers::new(
            [],
            env(&[("APP_NAME", "a"), ("NEBULA_MANAGER_URI", "https://m:8443")]),
            None,
        );
        let c = WorkerManagerConfig::read(&mut l);
        assert_eq!(l.finish(), Ok(()));
        assert_eq!(c.manager_uri, "https://m:8443");
        assert_eq!(c.manager_ca, None);
        let mut l = Layers::new(
            [],
            env(&[
                ("APP_NAME", "a"),
                ("NEBULA_MANAGER_PROTOCOL", "https"),
                ("NEBULA_MANAGER_HOST", "m"),
                ("NEBULA_MANAGER_PORT", "443"),
            ]),
            None,
        );
        let c = WorkerManagerConfig::read(&mut l);
        assert_eq!(l.finish(), Ok(()));
        assert_eq!(c.manager_uri, "https://m:443");

        let mut l = Layers::new(
            [],
            env(&[("APP_NAME", "a"), ("NEBULA_MANAGER_URI", "ftp://m")]),
            None,
        );
        WorkerManagerConfig::read(&mut l);
        assert!(l.finish().unwrap_err().to_string().contains("https://"));

        let garbage = std::env::temp_dir().join(format!("nebula-ca-{}.pem", std::process::id()));
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        for path in [garbage.to_str().unwrap(), "/nonexistent/nebula-ca.pem"] {
            let mut l = Layers::new(
                [],
                env(&[
                    ("APP_NAME", "a"),
                    ("NEBULA_MANAGER_URI", "https://m"),
                    ("NEBULA_MANAGER_CA_FILE", path),
                ]),
                None,
            );
            WorkerManagerConfig::read(&mut l);
            let text = l.finish().unwrap_err().to_string();
            assert!(text.contains("NEBULA_MANAGER_CA_FILE"), "{text}");
            assert!(text.contains(path), "{text}");
        }
        std::fs::remove_file(&garbage).unwrap();
    }

    #[test]
    fn worker_selects_a_device_group_or_apps_but_not_both() {
        let read = |pairs: &[(&str, &str)]| {
            let mut all = vec![("NEBULA_MANAGER_HOST", "m")];
            all.extend_from_slice(pairs);
            let mut l = Layers::new([], env(&all), None);
            let c = WorkerManagerConfig::read(&mut l);
            (c.engine.worker.selection, l.finish())
        };
        let (selection, ok) = read(&[("DEVICE_GROUP", "edge")]);
        assert_eq!(ok, Ok(()));
        assert_eq!(
            selection,
            Selection::DeviceGroup(DeviceGroupName::parse("edge").unwrap())
        );
        for (pairs, needle) in [
            (
                &[("DEVICE_GROUP", "edge"), ("APP_NAME", "a")][..],
                "not both",
            ),
            (&[][..], "DEVICE_GROUP or APP_NAME is required"),
            (
                &[("DEVICE_GROUP", "bad name")][..],
                "DEVICE_GROUP \"bad name\"",
            ),
        ] {
            let (_, result) = read(pairs);
            let ConfigError(errors) = result.unwrap_err();
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].contains(needle),
                "{needle} missing from {errors:?}"
            );
        }
    }

    #[test]
    fn the_rabbit_topology_is_queues_unless_streams_are_asked_for() {
        let read = |pairs: &[(&str, &str)]| {
            let mut all = vec![("RABBIT_HOST", "rabbit")];
            all.extend_from_slice(pairs);
            let mut l = Layers::new([], env(&all), None);
            let config = rabbit(&mut l, true).unwrap();
            (config.topology, l.finish())
        };
        let (topology, ok) = read(&[]);
        assert_eq!(topology, nebula_rabbit::Topology::Queues);
        assert!(ok.is_ok());
        for value in ["streams", "Streams", " streams "] {
            let (topology, ok) = read(&[("NEBULA_RABBIT_TOPOLOGY", value)]);
            assert_eq!(topology, nebula_rabbit::Topology::Streams, "{value:?}");
            assert!(ok.is_ok());
        }
        let (topology, ok) = read(&[("NEBULA_RABBIT_TOPOLOGY", "queues")]);
        assert_eq!(topology, nebula_rabbit::Topology::Queues);
        assert!(ok.is_ok());
        let (_, err) = read(&[("NEBULA_RABBIT_TOPOLOGY", "stream")]);
        let ConfigError(errors) = err.unwrap_err();
        let text = errors.join("\n");
        assert!(
            text.contains("NEBULA_RABBIT_TOPOLOGY") && text.contains("queues or streams"),
            "{text}"
        );
    }

    #[test]
    fn api_reads_the_bcrypt_cost() {
        let read = |pairs: &[(&str, &str)]| {
            let mut all = vec![("AUTH_ENABLED", "false")];
            all.extend_from_slice(pairs);
            let mut l = Layers::new([], env(&all), None);
            let c = ApiConfig::read(&mut l, "0.0.0.0:80", false);
            (c.bcrypt_cost, l.finish())
        };
        assert_eq!(read(&[]), (12, Ok(())));
        assert_eq!(read(&[("NEBULA_BCRYPT_COST", "4")]), (4, Ok(())));
        for bad in ["3", "32"] {
            let (_, result) = read(&[("NEBULA_BCRYPT_COST", bad)]);
            assert!(
                result.is_err_and(|e| e.0[0].contains("NEBULA_BCRYPT_COST")),
                "{bad}"
            );
        }
    }

    #[test]
    fn api_reads_the_info_cache_settings() {
        let mut l = Layers::new([], env(&[("AUTH_ENABLED", "false")]), None);
        let c = ApiConfig::read(&mut l, "0.0.0.0:80", false);
        assert_eq!(c.info_cache, InfoCacheConfig::default());
        assert_eq!(
            (c.info_cache.ttl, c.info_cache.max_size),
            (Duration::from_secs(10), 1024)
        );
        let mut l = Layers::new(
            [],
            env(&[
                ("AUTH_ENABLED", "false"),
                ("CACHE_TIME", "0"),
                ("CACHE_MAX_SIZE", "5"),
            ]),
            None,
        );
        let c = ApiConfig::read(&mut l, "0.0.0.0:80", false);
        assert_eq!(l.finish(), Ok(()));
        assert_eq!(
            (c.info_cache.ttl, c.info_cache.max_size),
            (Duration::ZERO, 5)
        );
        let mut l = Layers::new(
            [],
            env(&[("AUTH_ENABLED", "false"), ("CACHE_MAX_SIZE", "-1")]),
            None,
        );
        ApiConfig::read(&mut l, "0.0.0.0:80", false);
        assert!(l.finish().is_err());
    }
}
