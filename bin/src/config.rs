//! Configuration: command-line flag > environment (upper-case name) > config file (`--config`,
//! else `NEBULA_CONFIG`, else `/etc/nebula/config.json` when it exists; JSON or TOML, lower-case
//! names) > default. Every bad value is collected, and the binary stops at start listing them
//! all, each naming the flag, variable or file key it came from. A file key no Nebula binary
//! knows is an error suggesting the closest known one; a key of another Nebula binary (one file
//! shared by the API manager and a worker on one host) or one of the original Nebula's that this
//! version has no use for is a warning.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
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

pub use crate::settings::Binary;
use crate::settings::{self, KeyKind};

/// The config file read when neither `--config` nor `NEBULA_CONFIG` names one, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/nebula/config.json";

/// A command-line flag as the layers see it: the setting it sets, the flag as the user types
/// it (`--bind`), and its value when given.
pub type Flag = (&'static str, &'static str, Option<String>);

/// The layered sources of settings, and the problems found reading them.
#[derive(Debug, Default)]
pub struct Layers {
    /// setting -> (flag as typed, value)
    flags: BTreeMap<String, (&'static str, String)>,
    env: BTreeMap<String, String>,
    file: BTreeMap<String, String>,
    file_path: Option<PathBuf>,
    errors: Vec<String>,
    warnings: Vec<String>,
    read: RefCell<BTreeSet<String>>,
}

fn scalar(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The config file to read: `--config`, else `NEBULA_CONFIG`, else [`DEFAULT_CONFIG_FILE`]
/// when it exists, else none.
#[must_use]
pub fn config_file(flag: Option<PathBuf>, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    flag.or_else(|| {
        env.get("NEBULA_CONFIG")
            .filter(|p| !p.trim().is_empty())
            .map(PathBuf::from)
    })
    .or_else(|| {
        let default = Path::new(DEFAULT_CONFIG_FILE);
        default.exists().then(|| default.to_path_buf())
    })
}

impl Layers {
    /// Layers from flags given, an environment lookup, and an optional file.
    pub fn new(
        flags: impl IntoIterator<Item = Flag>,
        env: impl IntoIterator<Item = (String, String)>,
        file: Option<&Path>,
    ) -> Self {
        let mut layers = Self {
            flags: flags
                .into_iter()
                .filter_map(|(k, flag, v)| v.map(|v| (k.to_owned(), (flag, v))))
                .collect(),
            env: env.into_iter().collect(),
            ..Self::default()
        };
        if let Some(path) = file {
            layers.read_file(path);
        }
        layers
    }

    /// Layers for a server binary: its flags, the environment, and the file named by
    /// `config_flag`, `NEBULA_CONFIG` or the default path (see [`config_file`]).
    pub fn for_server(
        flags: impl IntoIterator<Item = Flag>,
        env: impl IntoIterator<Item = (String, String)>,
        config_flag: Option<PathBuf>,
    ) -> Self {
        let env: BTreeMap<String, String> = env.into_iter().collect();
        let file = config_file(config_flag, &env);
        Self::new(flags, env, file.as_deref())
    }

    fn read_file(&mut self, path: &Path) {
        self.file_path = Some(path.to_path_buf());
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

    /// The raw value of a setting and where it came from, as the user wrote it: the flag
    /// (`--bind`), the variable (`NEBULA_BIND`) or the file key (`config file x.json: nebula_bind`).
    #[must_use]
    pub fn raw(&self, key: &str) -> Option<(String, String)> {
        self.read.borrow_mut().insert(key.to_owned());
        let upper = key.to_uppercase();
        if let Some((flag, v)) = self.flags.get(key) {
            return Some((v.clone(), (*flag).to_owned()));
        }
        if let Some(v) = self.env.get(&upper) {
            return Some((v.clone(), upper));
        }
        self.file
            .get(key)
            .map(|v| (v.clone(), self.file_source(key)))
    }

    fn file_source(&self, key: &str) -> String {
        match &self.file_path {
            Some(path) => format!("config file {}: {key}", path.display()),
            None => format!("config file key {key}"),
        }
    }

    /// Where `key` would come from, for a message about a setting that is absent or derived.
    #[must_use]
    pub fn source(&self, key: &str) -> String {
        self.raw(key)
            .map_or_else(|| key.to_uppercase(), |(_, source)| source)
    }

    /// The settings read so far (every key asked for, set or not).
    #[must_use]
    pub fn keys_read(&self) -> BTreeSet<String> {
        self.read.borrow().clone()
    }

    /// A string setting, empty counting as absent.
    pub fn string(&mut self, key: &str) -> Option<String> {
        self.raw(key).map(|(v, _)| v).filter(|v| !v.is_empty())
    }

    /// The first of `keys` that is set (a Nebula name before the original's alias), else the
    /// first key.
    #[must_use]
    pub fn either(&self, keys: &[&'static str]) -> &'static str {
        keys.iter()
            .copied()
            .find(|k| self.raw(k).is_some())
            .unwrap_or(keys[0])
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
            let source = self.source(key);
            self.errors
                .push(format!("{source}={secs}: must be at least {min}"));
        }
        Duration::from_secs(secs)
    }

    /// Records a problem found while combining settings.
    pub fn error(&mut self, problem: impl Into<String>) {
        self.errors.push(problem.into());
    }

    /// Checks the config file's keys against what `binary` reads: a key no Nebula binary
    /// knows is an error naming it (with the closest known key of `binary`); a key of another
    /// binary, or one of the original Nebula's that this version does not use, is a warning.
    pub fn check_file_keys(&mut self, binary: Binary) {
        let source = match &self.file_path {
            Some(path) => format!("config file {}", path.display()),
            None => return,
        };
        let keys: Vec<String> = self.file.keys().cloned().collect();
        for key in keys {
            match settings::classify(&key, binary) {
                KeyKind::Own => {}
                KeyKind::OtherBinary(others) => self.warnings.push(format!(
                    "{source}: {key} is a setting of {others}, not of {}; ignored here",
                    binary.name()
                )),
                KeyKind::OriginalOnly => self.warnings.push(format!(
                    "{source}: {key} is a setting of the original Nebula that this version does not use; ignored"
                )),
                KeyKind::Unknown(suggestion) => self.errors.push(match suggestion {
                    Some(s) => format!(
                        "{source}: unknown setting {key:?} (did you mean {s:?}?)"
                    ),
                    None => format!(
                        "{source}: unknown setting {key:?} (see docs/configuration.md for the settings of {})",
                        binary.name()
                    ),
                }),
            }
        }
    }

    /// The warnings found so far (settings ignored on purpose).
    #[must_use]
    pub fn warnings(&self) -> &[String] {
        &self.warnings
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
    /// Where `bind` came from (`--bind`, `NEBULA_BIND`, a file key, or the default), for the
    /// message when the address cannot be listened on.
    pub bind_source: String,
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
    let enabled = l.either(&["auth_enabled", "basic_auth_enabled"]);
    let auth = AuthConfig {
        enabled: l.bool(enabled, true),
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
        let bind_source = l
            .raw("nebula_bind")
            .map_or_else(|| "the default".to_owned(), |(_, source)| source);
        Self {
            bind: l.parse("nebula_bind", default),
            bind_source,
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
            reports: reports_config(l),
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
    pub report: ReportSettings,
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
        let mut settings = Self {
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
                hostname: String::new(),
            },
            report: ReportSettings::read(l),
        };
        settings.worker.hostname = settings.report.hostname.clone();
        settings
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
        let manager_uri = manager_uri(l);
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

/// The manager's base URL: `NEBULA_MANAGER_URI`, else built from `NEBULA_MANAGER_PROTOCOL`,
/// `NEBULA_MANAGER_HOST` and `NEBULA_MANAGER_PORT`; a bad one is an error naming the setting
/// it came from (credentials in it are not repeated).
pub fn manager_uri(l: &mut Layers) -> String {
    if let Some((uri, source)) = l.raw("nebula_manager_uri").filter(|(v, _)| !v.is_empty()) {
        if !uri.starts_with("http://") && !uri.starts_with("https://") {
            l.error(format!(
                "{source}={:?}: must start with http:// or https://",
                redact_uri(&uri)
            ));
        }
        return uri;
    }
    let protocol = match l.raw("nebula_manager_protocol") {
        Some((p, source)) => {
            let p = p.trim().to_lowercase();
            if p != "http" && p != "https" {
                l.error(format!("{source}={p:?}: must be http or https"));
            }
            p
        }
        None => "http".to_owned(),
    };
    let port = l.parse("nebula_manager_port", 80u16);
    match l.string("nebula_manager_host") {
        Some(host) => format!("{protocol}://{host}:{port}"),
        None => {
            l.error("NEBULA_MANAGER_URI or NEBULA_MANAGER_HOST is required");
            String::new()
        }
    }
}

/// `uri` with the password of any `user:password@` part replaced by `***`.
#[must_use]
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => uri.to_owned(),
    }
}

/// How a worker reports (`NEBULA_REPORT_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportSettings {
    /// Whether the worker reports at all (`NEBULA_REPORT_ENABLED`, true).
    pub enabled: bool,
    /// Send only reports that changed (`NEBULA_REPORT_ON_UPDATE_ONLY`, or the original's
    /// `REPORT_ON_UPDATE_ONLY`; false).
    pub on_update_only: bool,
    /// The hostname reports carry (`NEBULA_REPORT_HOSTNAME`, default the system's).
    pub hostname: String,
    /// Longest wait for one report to be accepted (`NEBULA_REPORT_TIMEOUT`, 10 s).
    pub timeout: Duration,
}

impl ReportSettings {
    /// Reads the worker's report settings.
    pub fn read(l: &mut Layers) -> Self {
        let on_update_only = l.either(&["nebula_report_on_update_only", "report_on_update_only"]);
        Self {
            enabled: l.bool("nebula_report_enabled", true),
            on_update_only: l.bool(on_update_only, false),
            hostname: l
                .string("nebula_report_hostname")
                .unwrap_or_else(system_hostname),
            timeout: l.seconds("nebula_report_timeout", 10, 1),
        }
    }
}

/// The system's hostname (`uname`'s node name, the container id inside a container, as the
/// original's reports had it).
#[must_use]
pub fn system_hostname() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "unknown".to_owned()
    } else {
        name
    }
}

/// How a worker manager sends its reports (`NEBULA_REPORT_TRANSPORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportTransport {
    /// Published on RabbitMQ for the API managers to take, over HTTP whenever the broker does
    /// not take one (`bus`, the default with RabbitMQ configured).
    Bus,
    /// `POST /api/v2/reports` to the manager (`http`, the default without RabbitMQ).
    Http,
}

/// Reads `NEBULA_REPORT_TRANSPORT` (`bus` or `http`); `rabbit` tells whether RabbitMQ is
/// configured, which `bus` needs and which makes it the default.
pub fn report_transport(l: &mut Layers, rabbit: bool) -> ReportTransport {
    let default = if rabbit {
        ReportTransport::Bus
    } else {
        ReportTransport::Http
    };
    let Some((value, source)) = l.raw("nebula_report_transport") else {
        return default;
    };
    match value.trim().to_lowercase().as_str() {
        "" => default,
        "http" => ReportTransport::Http,
        "bus" if rabbit => ReportTransport::Bus,
        "bus" => {
            l.error(format!(
                "{source}=bus needs RabbitMQ: set RABBIT_URL or RABBIT_HOST, or report over http"
            ));
            default
        }
        _ => {
            l.error(format!("{source}={value:?}: must be bus or http"));
            default
        }
    }
}

/// How long the API keeps reports (`NEBULA_REPORT_TTL`, or the original's `MONGO_REPORT_TTL`;
/// 3600 s, at least 1).
pub fn reports_config(l: &mut Layers) -> nebula_http::ReportsConfig {
    let key = l.either(&["nebula_report_ttl", "mongo_report_ttl"]);
    nebula_http::ReportsConfig {
        ttl: l.seconds(key, 3600, 1),
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
        let problem = name_rabbit_problem(l, &p);
        l.error(problem);
    }
    Some(config)
}

/// A problem of the RabbitMQ settings, naming the flag, variable or file key it came from and
/// the value given.
fn name_rabbit_problem(l: &Layers, problem: &str) -> String {
    const SUBJECTS: [(&str, &str); 7] = [
        ("frame_max", "nebula_rabbit_frame_max"),
        ("the queue expiry", "nebula_rabbit_queue_expiry"),
        ("the worker id", "nebula_worker_id"),
        ("RABBIT_HOST", "rabbit_host"),
        ("RABBIT_PORT", "rabbit_port"),
        ("RABBIT_USER", "rabbit_user"),
        ("RABBIT_VHOST", "rabbit_vhost"),
    ];
    let setting = SUBJECTS
        .iter()
        .find(|(subject, _)| problem.starts_with(subject))
        .and_then(|(_, key)| l.raw(key));
    match setting {
        Some((_, source)) if source.to_lowercase().contains("password") => {
            format!("{source}: {problem}")
        }
        Some((value, source)) => format!("{source}={value:?}: {problem}"),
        None => format!("RabbitMQ: {problem}"),
    }
}

/// A problem of the MongoDB settings (each starts with its setting's name), naming where the
/// setting came from instead.
fn name_mongo_problem(l: &Layers, problem: &str) -> String {
    for key in [
        "mongo_url",
        "schema_name",
        "mongo_max_pool_size",
        "mongo_report_ttl",
    ] {
        if let Some(rest) = problem.strip_prefix(key) {
            return format!("{}{rest}", l.source(key));
        }
    }
    format!("MongoDB: {problem}")
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
            let problem = name_mongo_problem(l, &p);
            l.error(problem);
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
            [("nebula_bind", "--bind", Some("127.0.0.1:1".to_owned()))],
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

    #[test]
    fn the_transport_is_the_bus_with_rabbitmq_unless_told_otherwise() {
        let read = |value: Option<&str>, rabbit: bool| {
            let env: Vec<(String, String)> = value
                .map(|v| ("NEBULA_REPORT_TRANSPORT".to_owned(), v.to_owned()))
                .into_iter()
                .collect();
            let mut l = Layers::new([], env, None);
            let transport = report_transport(&mut l, rabbit);
            (transport, l.finish().map_err(|e| e.0.join("\n")))
        };
        assert_eq!(read(None, true), (ReportTransport::Bus, Ok(())));
        assert_eq!(read(None, false), (ReportTransport::Http, Ok(())));
        assert_eq!(read(Some("http"), true), (ReportTransport::Http, Ok(())));
        assert_eq!(read(Some(" BUS "), true), (ReportTransport::Bus, Ok(())));
        assert_eq!(read(Some(""), true), (ReportTransport::Bus, Ok(())));
        let (_, err) = read(Some("bus"), false);
        let err = err.unwrap_err();
        assert!(
            err.contains("NEBULA_REPORT_TRANSPORT=bus") && err.contains("RABBIT_HOST"),
            "{err}"
        );
        let (_, err) = read(Some("amqp"), true);
        let err = err.unwrap_err();
        assert!(
            err.contains("NEBULA_REPORT_TRANSPORT=\"amqp\"") && err.contains("bus or http"),
            "{err}"
        );
    }

    #[test]
    fn settings_take_our_name_then_the_original() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Vec<_>>()
        };
        let mut l = Layers::new([], env(&[]), None);
        let s = ReportSettings::read(&mut l);
        assert!(s.enabled && !s.on_update_only);
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert_eq!(reports_config(&mut l).ttl, Duration::from_secs(3600));
        assert_eq!(l.finish(), Ok(()));

        let mut l = Layers::new(
            [],
            env(&[
                ("REPORT_ON_UPDATE_ONLY", "true"),
                ("MONGO_REPORT_TTL", "60"),
                ("NEBULA_REPORT_HOSTNAME", "edge-7"),
                ("NEBULA_REPORT_ENABLED", "false"),
            ]),
            None,
        );
        let s = ReportSettings::read(&mut l);
        assert!(!s.enabled && s.on_update_only);
        assert_eq!(s.hostname, "edge-7");
        assert_eq!(reports_config(&mut l).ttl, Duration::from_secs(60));
        assert_eq!(l.finish(), Ok(()));

        let mut l = Layers::new(
            [],
            env(&[
                ("REPORT_ON_UPDATE_ONLY", "true"),
                ("NEBULA_REPORT_ON_UPDATE_ONLY", "false"),
                ("NEBULA_REPORT_TTL", "0"),
            ]),
            None,
        );
        assert!(!ReportSettings::read(&mut l).on_update_only);
        reports_config(&mut l);
        let errors = l.finish().unwrap_err().0;
        assert!(errors[0].contains("NEBULA_REPORT_TTL"), "{errors:?}");
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("nebula-cfg-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        file
    }

    #[test]
    fn a_bad_flag_is_named_as_typed() {
        let mut l = Layers::new(
            [
                ("nebula_bind", "--bind", Some("127.0.0.1:abc".to_owned())),
                (
                    "nebula_manager_check_in_time",
                    "--check-in-time",
                    Some("0".to_owned()),
                ),
                (
                    "nebula_reconcile_interval",
                    "--reconcile-interval",
                    Some("soon".to_owned()),
                ),
            ],
            env(&[]),
            None,
        );
        ApiConfig::read(&mut l, "127.0.0.1:8080", true);
        EngineConfig::read(&mut l, Selection::All);
        let text = l.finish().unwrap_err().to_string();
        for needle in [
            "--bind=\"127.0.0.1:abc\"",
            "--check-in-time=0: must be at least 1",
            "--reconcile-interval=\"soon\"",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
        assert!(!text.contains("--nebula-"), "{text}");
    }

    #[test]
    fn an_unknown_file_key_is_an_error_with_a_suggestion() {
        let file = temp_file(
            "c.json",
            r#"{"bind": "127.0.0.1:9", "auth_enabled": false}"#,
        );
        let mut l = Layers::new([], env(&[]), Some(&file));
        l.check_file_keys(Binary::ApiManager);
        ApiConfig::read(&mut l, "0.0.0.0:80", false);
        let text = l.finish().unwrap_err().to_string();
        assert!(
            text.contains("unknown setting \"bind\" (did you mean \"nebula_bind\"?)")
                && text.contains(&file.display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn a_key_of_another_binary_or_of_the_original_only_warns() {
        let file = temp_file(
            "shared.json",
            r#"{"nebula_bind": "127.0.0.1:9", "auth_enabled": false, "device_group": "edge",
                "kafka_bootstrap_servers": "k:9092", "rabbit_heartbeat": 0}"#,
        );
        let mut l = Layers::new([], env(&[]), Some(&file));
        l.check_file_keys(Binary::ApiManager);
        let c = ApiConfig::read(&mut l, "0.0.0.0:80", false);
        let warnings = l.warnings().join("\n");
        assert!(
            warnings.contains("device_group is a setting of nebula-worker-manager"),
            "{warnings}"
        );
        assert!(warnings.contains("kafka_bootstrap_servers is a setting of the original"));
        assert!(warnings.contains("rabbit_heartbeat"));
        assert_eq!(l.finish(), Ok(()));
        assert_eq!(c.bind.to_string(), "127.0.0.1:9");
        assert_eq!(
            c.bind_source,
            format!("config file {}: nebula_bind", file.display())
        );
    }

    #[test]
    fn the_file_is_the_flag_else_nebula_config_else_the_default_path() {
        let env_with = |path: &str| -> BTreeMap<String, String> {
            [("NEBULA_CONFIG".to_owned(), path.to_owned())].into()
        };
        assert_eq!(
            config_file(Some("/a.json".into()), &env_with("/b.json")),
            Some(PathBuf::from("/a.json"))
        );
        assert_eq!(
            config_file(None, &env_with("/b.json")),
            Some(PathBuf::from("/b.json"))
        );
        let default = Path::new(DEFAULT_CONFIG_FILE);
        assert_eq!(
            config_file(None, &BTreeMap::new()),
            default.exists().then(|| default.to_path_buf())
        );
        let file = temp_file(
            "n.toml",
            "nebula_bind = \"127.0.0.1:7\"\nauth_enabled = false\n",
        );
        let mut l = Layers::for_server([], env(&[("NEBULA_CONFIG", file.to_str().unwrap())]), None);
        let c = ApiConfig::read(&mut l, "0.0.0.0:80", false);
        assert_eq!(l.finish(), Ok(()));
        assert_eq!(c.bind.to_string(), "127.0.0.1:7");
    }

    #[test]
    fn rabbit_and_manager_address_problems_name_their_setting() {
        let mut l = Layers::new(
            [],
            env(&[
                ("RABBIT_HOST", "rabbit"),
                ("NEBULA_RABBIT_FRAME_MAX", "100"),
                ("NEBULA_RABBIT_QUEUE_EXPIRY", "99999999"),
            ]),
            None,
        );
        rabbit(&mut l, false);
        let text = l.finish().unwrap_err().to_string();
        assert!(
            text.contains("NEBULA_RABBIT_FRAME_MAX=\"100\": frame_max must be 4096 to 1048576"),
            "{text}"
        );
        assert!(
            text.contains("NEBULA_RABBIT_QUEUE_EXPIRY=\"99999999\""),
            "{text}"
        );

        let mut l = Layers::new(
            [],
            env(&[
                ("APP_NAME", "a"),
                ("NEBULA_MANAGER_URI", "ftp://admin:s3cret@m/x"),
            ]),
            None,
        );
        WorkerManagerConfig::read(&mut l);
        let text = l.finish().unwrap_err().to_string();
        assert!(
            text.contains(
                "NEBULA_MANAGER_URI=\"ftp://admin:***@m/x\": must start with http:// or https://"
            ),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");

        let mut l = Layers::new(
            [],
            env(&[
                ("APP_NAME", "a"),
                ("NEBULA_MANAGER_HOST", "m"),
                ("NEBULA_MANAGER_PROTOCOL", "ftp"),
            ]),
            None,
        );
        WorkerManagerConfig::read(&mut l);
        let text = l.finish().unwrap_err().to_string();
        assert!(
            text.contains("NEBULA_MANAGER_PROTOCOL=\"ftp\": must be http or https"),
            "{text}"
        );

        let mut l = Layers::new(
            [],
            env(&[("MONGO_URL", "nope://x"), ("SCHEMA_NAME", "a b")]),
            None,
        );
        mongo(&mut l);
        let text = l.finish().unwrap_err().to_string();
        assert!(
            text.contains("MONGO_URL nope://x") || text.contains("MONGO_URL"),
            "{text}"
        );
        assert!(text.contains("SCHEMA_NAME \"a b\""), "{text}");
    }

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(redact_uri("https://u:p@h:1/x@y"), "https://u:***@h:1/x@y");
        assert_eq!(redact_uri("http://h/x"), "http://h/x");
        assert_eq!(redact_uri("not a uri"), "not a uri");
    }

    #[test]
    fn every_setting_a_binary_reads_is_listed_for_it() {
        // Every branch of the readers: RabbitMQ by host, MongoDB, registry auth, a device
        // group worker built from host and port, the original's names.
        let all = env(&[
            ("RABBIT_HOST", "r"),
            ("MONGO_URL", "mongodb://m"),
            ("REGISTRY_AUTH_USER", "u"),
            ("REGISTRY_AUTH_PASSWORD", "p"),
            ("NEBULA_MANAGER_HOST", "m"),
            ("DEVICE_GROUP", "edge"),
        ]);
        let check = |binary: Binary, read: &dyn Fn(&mut Layers)| {
            let mut l = Layers::new([], all.clone(), None);
            read(&mut l);
            let listed = binary.keys();
            for key in l.keys_read() {
                assert!(
                    listed.contains(&key.as_str()),
                    "{binary:?} reads {key} unlisted"
                );
            }
        };
        check(Binary::Standalone, &|l| {
            ApiConfig::read(l, "127.0.0.1:8080", true);
            EngineConfig::read(l, Selection::All);
        });
        check(Binary::ApiManager, &|l| {
            ApiConfig::read(l, "0.0.0.0:80", false);
            rabbit(l, false);
            mongo(l);
        });
        check(Binary::WorkerManager, &|l| {
            WorkerManagerConfig::read(l);
            let r = rabbit(l, true);
            report_transport(l, r.is_some());
        });
        check(Binary::Client, &|l| {
            crate::cli::Settings::read(l);
        });
    }

    #[test]
    fn the_original_basic_auth_enabled_turns_auth_off_too() {
        let mut l = Layers::new([], env(&[("BASIC_AUTH_ENABLED", "false")]), None);
        let c = ApiConfig::read(&mut l, "0.0.0.0:80", false);
        assert_eq!(l.finish(), Ok(()));
        assert!(!c.auth.enabled);
    }
}
