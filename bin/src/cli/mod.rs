//! The client CLI: `nebula <noun> <verb>` calls a manager's v2 API over HTTP.
//!
//! Settings: flag > environment > `--config` file > default, as for the servers
//! (`NEBULA_MANAGER_URI`, `NEBULA_MANAGER_AUTH_USER`/`_PASSWORD` or `NEBULA_MANAGER_AUTH_TOKEN`,
//! `NEBULA_MANAGER_REQUEST_TIMEOUT`, `NEBULA_OUTPUT`). Exit status: 0 when the manager accepts,
//! 1 when it refuses (its status and JSON error on stderr), 2 on a usage or configuration
//! error, 3 when it cannot be reached. Credentials are never printed.

pub mod apps;
pub mod collection;
pub mod cron_jobs;
pub mod device_groups;
pub mod http;
pub mod output;
pub mod reports;
pub mod users;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use nebula_http::client::ClientAuth;
use reqwest::{Method, Url};
use serde_json::Value;

use crate::config::{self, Layers};
use http::{Outcome, Request, Shape};
use output::Format;

/// The standalone default: where `nebula standalone` listens.
pub const DEFAULT_MANAGER_URI: &str = "http://127.0.0.1:8080";

/// Where the manager is and how to call it; accepted after any noun or verb.
#[derive(Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOpts {
    /// The manager's address [env: NEBULA_MANAGER_URI] [default: http://127.0.0.1:8080].
    #[arg(long, global = true, value_name = "URI")]
    pub manager_uri: Option<String>,
    /// User for basic authentication [env: NEBULA_MANAGER_AUTH_USER].
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// Password for basic authentication (prefer the environment: command lines are visible
    /// to other users of the host) [env: NEBULA_MANAGER_AUTH_PASSWORD].
    #[arg(long, global = true)]
    pub password: Option<String>,
    /// Bearer token, instead of user and password [env: NEBULA_MANAGER_AUTH_TOKEN].
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// PEM CA bundle trusted for an https:// manager besides the public roots (a private CA)
    /// [env: NEBULA_MANAGER_CA_FILE].
    #[arg(long, global = true, value_name = "PATH")]
    pub ca_file: Option<String>,
    /// json: the manager's reply, pretty-printed; table: aligned columns, objects as KEY VALUE
    /// rows [env: NEBULA_OUTPUT] [default: tables for lists, JSON for objects].
    #[arg(long, global = true, value_parser = ["json", "table", "auto"])]
    pub output: Option<String>,
    /// Seconds to wait for the manager [env: NEBULA_MANAGER_REQUEST_TIMEOUT] [default: 60].
    #[arg(long, global = true, value_name = "SECONDS")]
    pub timeout: Option<String>,
    /// Settings file, JSON or TOML, lower-case setting names (e.g. nebula_manager_uri).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// A JSON document, required.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The JSON document: a file, or - for standard input.
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: PathBuf,
}

/// A JSON document, optional (`{}` when absent).
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct OptionalDocument {
    /// The JSON document: a file, or - for standard input [default: {}].
    #[arg(long, short = 'f', value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// An update: the document, and whether it replaces or patches.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct UpdateArgs {
    /// The document.
    #[command(flatten)]
    pub doc: Document,
    /// Change only the fields given (PATCH); without it the document replaces the whole
    /// object and missing fields take their defaults (POST).
    #[arg(long)]
    pub patch: bool,
}

/// Reads a JSON object from `path` (`-`: standard input).
///
/// # Errors
/// When it cannot be read or is not a JSON object.
pub fn read_document(path: &Path) -> Result<Value, String> {
    let (text, shown) = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("standard input: {e}"))?;
        (s, "standard input".to_owned())
    } else {
        let s = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        (s, path.display().to_string())
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(format!("{shown}: must hold a JSON object")),
        Err(e) => Err(format!("{shown}: not JSON: {e}")),
    }
}

impl Document {
    /// The document.
    ///
    /// # Errors
    /// When it cannot be read or is not a JSON object.
    pub fn read(&self) -> Result<Value, String> {
        read_document(&self.file)
    }
}

impl OptionalDocument {
    /// The document, `{}` when none is given.
    ///
    /// # Errors
    /// When it cannot be read or is not a JSON object.
    pub fn read(&self) -> Result<Value, String> {
        self.file
            .as_deref()
            .map_or_else(|| Ok(Value::Object(serde_json::Map::new())), read_document)
    }
}

impl UpdateArgs {
    /// `POST <path>` with the whole document, or `PATCH <path>` with --patch.
    ///
    /// # Errors
    /// When the document cannot be read.
    pub fn request(&self, path: &[&str]) -> Result<Request, String> {
        let method = if self.patch {
            Method::PATCH
        } else {
            Method::POST
        };
        Ok(Request::new(method, path, Shape::Object).with_body(self.doc.read()?))
    }
}

/// The client's commands.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Apps: list, get, create, update, delete, stop, start, restart, status.
    Apps {
        /// What to do.
        #[command(subcommand)]
        verb: apps::Apps,
        /// Where the manager is and how to call it.
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Device groups: list, get, info, create, update, delete, prune.
    DeviceGroups {
        /// What to do.
        #[command(subcommand)]
        verb: device_groups::DeviceGroups,
        /// Where the manager is and how to call it.
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Cron jobs: list, get, create, update, delete.
    CronJobs {
        /// What to do.
        #[command(subcommand)]
        verb: cron_jobs::CronJobs,
        /// Where the manager is and how to call it.
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Users (admin): list, get, create, update, delete, refresh.
    Users {
        /// What to do.
        #[command(subcommand)]
        verb: users::Users,
        /// Where the manager is and how to call it.
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// User groups (admin): list, get, create, update, delete.
    UserGroups {
        /// What to do.
        #[command(subcommand)]
        verb: users::UserGroups,
        /// Where the manager is and how to call it.
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// The workers' reports.
    Reports {
        /// What to do.
        #[command(subcommand)]
        verb: reports::Reports,
        /// Where the manager is and how to call it.
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Removes unused images on every host of every device group.
    Prune {
        /// Where the manager is and how to call it.
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Checks that the manager answers, with these credentials.
    Ping {
        /// Where the manager is and how to call it.
        #[command(flatten)]
        opts: ClientOpts,
    },
}

impl Command {
    /// The request and the options.
    ///
    /// # Errors
    /// When a document cannot be read.
    pub fn request(&self) -> Result<(Request, &ClientOpts), String> {
        Ok(match self {
            Self::Apps { verb, opts } => (verb.request()?, opts),
            Self::DeviceGroups { verb, opts } => (verb.request()?, opts),
            Self::CronJobs { verb, opts } => (verb.request()?, opts),
            Self::Users { verb, opts } => (verb.request()?, opts),
            Self::UserGroups { verb, opts } => (verb.request()?, opts),
            Self::Reports { verb, opts } => (verb.request(), opts),
            Self::Prune { opts } => (Request::new(Method::POST, &["prune"], Shape::Object), opts),
            Self::Ping { opts } => (Request::new(Method::GET, &["status"], Shape::Ping), opts),
        })
    }
}

/// The client's settings, read from the layers.
#[derive(Debug)]
pub struct Settings {
    /// The manager's base URL.
    pub manager: Url,
    /// Credentials, if any.
    pub auth: Option<ClientAuth>,
    /// PEM certificates trusted for https:// besides the public roots.
    pub ca: Option<Vec<u8>>,
    /// Timeout of the request.
    pub timeout: Duration,
    /// Output format.
    pub format: Format,
}

impl Settings {
    /// Reads the settings; every problem is recorded in `l`.
    pub fn read(l: &mut Layers) -> Self {
        let raw = l
            .string("nebula_manager_uri")
            .unwrap_or_else(|| DEFAULT_MANAGER_URI.to_owned());
        let manager = match Url::parse(&raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => u,
            Ok(u) => {
                l.error(format!(
                    "manager address {}: must be http://host[:port] or https://host[:port]",
                    http::shown(&u)
                ));
                Url::parse(DEFAULT_MANAGER_URI).expect("the default address parses")
            }
            Err(e) => {
                // The raw text may hold credentials: name the problem only.
                l.error(format!("manager address: not a URL ({e})"));
                Url::parse(DEFAULT_MANAGER_URI).expect("the default address parses")
            }
        };
        let auth = config::manager_auth(
            l,
            "--user and --password (NEBULA_MANAGER_AUTH_USER and \
             NEBULA_MANAGER_AUTH_PASSWORD) must be given together",
        );
        let ca = config::manager_ca(l, "--ca-file (NEBULA_MANAGER_CA_FILE)");
        Self {
            manager,
            auth,
            ca,
            timeout: l.seconds("nebula_manager_request_timeout", 60, 1),
            format: l.parse("nebula_output", Format::Auto),
        }
    }
}

/// The layers of a client command: its flags, the environment and its config file.
#[must_use]
pub fn layers(opts: &ClientOpts, env: impl IntoIterator<Item = (String, String)>) -> Layers {
    Layers::new(
        [
            (
                "nebula_manager_uri",
                "--manager-uri",
                opts.manager_uri.clone(),
            ),
            ("nebula_manager_auth_user", "--user", opts.user.clone()),
            (
                "nebula_manager_auth_password",
                "--password",
                opts.password.clone(),
            ),
            ("nebula_manager_auth_token", "--token", opts.token.clone()),
            ("nebula_manager_ca_file", "--ca-file", opts.ca_file.clone()),
            (
                "nebula_manager_request_timeout",
                "--timeout",
                opts.timeout.clone(),
            ),
            ("nebula_output", "--output", opts.output.clone()),
        ],
        env,
        opts.config.as_deref(),
    )
}

/// Runs a client command; the exit status as documented at the top of this module.
#[must_use]
pub fn run(command: &Command) -> ExitCode {
    let (request, opts) = match command.request() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nebula: {e}");
            return ExitCode::from(2);
        }
    };
    let mut layers = layers(opts, std::env::vars());
    layers.check_file_keys(config::Binary::Client);
    let settings = Settings::read(&mut layers);
    for warning in layers.warnings() {
        eprintln!("nebula: warning: {warning}");
    }
    if let Err(e) = layers.finish() {
        eprint!("nebula: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nebula: tokio runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let outcome = runtime.block_on(http::send(
        &settings.manager,
        settings.auth.as_ref(),
        settings.ca.as_deref(),
        settings.timeout,
        &request,
    ));
    let manager = http::shown(&settings.manager);
    match outcome {
        Outcome::Ok(body) => {
            let (out, note) = output::render(&request.shape, settings.format, &body, &manager);
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error of the command.
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
            if let Some(note) = note {
                eprintln!("{note}");
            }
            ExitCode::SUCCESS
        }
        Outcome::Refused { status, body } => {
            eprintln!("nebula: {status}: {body}");
            ExitCode::from(1)
        }
        Outcome::Unreachable(reason) => {
            eprintln!("nebula: cannot reach the manager at {manager}: {reason}");
            ExitCode::from(3)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> Command {
        let mut all = vec!["nebula"];
        all.extend(args);
        Cli::try_parse_from(all).expect("parses").command
    }

    fn req(args: &[&str]) -> Request {
        parse(args).request().expect("request").0
    }

    fn temp_file(text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("nebula-cli-{:08x}.json", rand::random::<u32>()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn verbs_build_v2_requests() {
        let base = Url::parse(DEFAULT_MANAGER_URI).unwrap();
        let cases: &[(&[&str], Method, &str)] = &[
            (&["apps", "list"], Method::GET, "/api/v2/apps"),
            (&["apps", "get", "web"], Method::GET, "/api/v2/apps/web"),
            (
                &["apps", "delete", "web"],
                Method::DELETE,
                "/api/v2/apps/web",
            ),
            (
                &["apps", "stop", "web"],
                Method::POST,
                "/api/v2/apps/web/stop",
            ),
            (
                &["apps", "start", "web"],
                Method::POST,
                "/api/v2/apps/web/start",
            ),
            (
                &["apps", "restart", "web"],
                Method::POST,
                "/api/v2/apps/web/restart",
            ),
            (
                &["apps", "status", "web"],
                Method::GET,
                "/api/v2/apps/web/status",
            ),
            (
                &["device-groups", "list"],
                Method::GET,
                "/api/v2/device_groups",
            ),
            (
                &["device-groups", "info", "g"],
                Method::GET,
                "/api/v2/device_groups/g/info",
            ),
            (
                &["device-groups", "prune", "g"],
                Method::POST,
                "/api/v2/device_groups/g/prune",
            ),
            (
                &["device-groups", "delete", "g"],
                Method::DELETE,
                "/api/v2/device_groups/g",
            ),
            (
                &["cron-jobs", "get", "c"],
                Method::GET,
                "/api/v2/cron_jobs/c",
            ),
            (
                &["users", "refresh", "u"],
                Method::POST,
                "/api/v2/users/u/refresh",
            ),
            (&["user-groups", "list"], Method::GET, "/api/v2/user_groups"),
            (&["reports", "list"], Method::GET, "/api/v2/reports"),
            (&["prune"], Method::POST, "/api/v2/prune"),
            (&["ping"], Method::GET, "/api/v2/status"),
        ];
        for (args, method, path) in cases {
            let r = req(args);
            assert_eq!(&r.method, method, "{args:?}");
            assert_eq!(r.url(&base).unwrap().path(), *path, "{args:?}");
            assert!(r.body.is_none(), "{args:?}");
        }
    }

    #[test]
    fn documents_and_updates() {
        let file = temp_file(r#"{"docker_image": "nginx", "running": true}"#);
        let f = file.to_str().unwrap();
        let r = req(&["apps", "create", "web", "--file", f]);
        assert_eq!(
            (r.method.clone(), r.path.join("/")),
            (Method::POST, "apps/web".into())
        );
        assert_eq!(
            r.body,
            Some(json!({"docker_image": "nginx", "running": true}))
        );
        let full = req(&["apps", "update", "web", "-f", f]);
        assert_eq!(
            (full.method, full.path.join("/")),
            (Method::POST, "apps/web/update".into())
        );
        let patch = req(&["apps", "update", "web", "-f", f, "--patch"]);
        assert_eq!(patch.method, Method::PATCH);
        let dg = req(&["device-groups", "create", "g"]);
        assert_eq!(dg.body, Some(json!({})));
        let user = req(&["users", "update", "u", "-f", f]);
        assert_eq!(user.method, Method::PATCH);

        let list = temp_file("[1, 2]");
        let err = parse(&["apps", "create", "web", "-f", list.to_str().unwrap()])
            .request()
            .unwrap_err();
        assert!(err.contains("must hold a JSON object"), "{err}");
        let err = parse(&["apps", "create", "web", "-f", "/nonexistent/app.json"])
            .request()
            .unwrap_err();
        assert!(err.contains("/nonexistent/app.json"), "{err}");
        assert!(
            Cli::try_parse_from(["nebula", "apps", "create", "web"]).is_err(),
            "a create needs its document"
        );
        let _ = std::fs::remove_file(file);
        let _ = std::fs::remove_file(list);
    }

    #[test]
    fn report_filters_become_the_query() {
        let r = req(&[
            "reports",
            "list",
            "--hostname",
            "h1",
            "--device-group",
            "edge",
            "--page-size",
            "5",
            "--last-id",
            "0123456789abcdef01234567",
            "--updated",
            "false",
            "--creation-time",
            "100",
            "--creation-time-filter",
            "gte",
        ]);
        assert_eq!(
            r.query,
            vec![
                ("hostname", "h1".to_owned()),
                ("device_group", "edge".to_owned()),
                ("page_size", "5".to_owned()),
                ("last_id", "0123456789abcdef01234567".to_owned()),
                ("updated", "False".to_owned()),
                ("report_creation_time", "100".to_owned()),
                ("report_creation_time_filter", "gte".to_owned()),
            ]
        );
        assert!(
            Cli::try_parse_from(["nebula", "reports", "list", "--creation-time-filter", "gt"])
                .is_err(),
            "a filter needs its time"
        );
    }

    fn settings(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, Vec<String>> {
        let command = parse(args);
        let (_, opts) = command.request().unwrap();
        let mut l = layers(
            opts,
            env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let s = Settings::read(&mut l);
        l.finish().map(|()| s).map_err(|e| e.0)
    }

    #[test]
    fn options_anywhere_flags_over_environment() {
        let s = settings(&["ping"], &[]).unwrap();
        assert_eq!(s.manager.as_str(), "http://127.0.0.1:8080/");
        assert!(s.auth.is_none());
        assert_eq!(s.timeout, Duration::from_secs(60));
        assert_eq!(s.format, Format::Auto);

        let env = [
            ("NEBULA_MANAGER_URI", "http://env:1"),
            ("NEBULA_MANAGER_AUTH_USER", "env-user"),
            ("NEBULA_MANAGER_AUTH_PASSWORD", "env-pw"),
            ("NEBULA_OUTPUT", "json"),
        ];
        let s = settings(&["apps", "list"], &env).unwrap();
        assert_eq!(s.manager.as_str(), "http://env:1/");
        assert!(matches!(&s.auth, Some(ClientAuth::Basic { user, .. }) if user == "env-user"));
        assert_eq!(s.format, Format::Json);

        let s = settings(
            &[
                "apps",
                "--manager-uri",
                "http://flag:2",
                "list",
                "--token",
                "t",
                "--output",
                "table",
                "--timeout",
                "5",
            ],
            &env,
        )
        .unwrap();
        assert_eq!(s.manager.as_str(), "http://flag:2/");
        assert!(
            matches!(s.auth, Some(ClientAuth::Bearer(_))),
            "a token wins"
        );
        assert_eq!(s.format, Format::Table);
        assert_eq!(s.timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_settings_are_listed_without_secrets() {
        let errors = settings(
            &[
                "ping",
                "--manager-uri",
                "ftp://u:hunter2@h",
                "--user",
                "u",
                "--timeout",
                "0",
            ],
            &[],
        )
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().all(|e| !e.contains("hunter2")), "{errors:?}");
        let errors = settings(&["ping", "--manager-uri", "ftp://h"], &[]).unwrap_err();
        assert!(errors[0].contains("https://"), "{errors:?}");
    }

    #[test]
    fn https_is_accepted_and_a_bad_ca_file_is_refused() {
        let s = settings(&["ping", "--manager-uri", "https://h:8443"], &[]).unwrap();
        assert_eq!(s.manager.as_str(), "https://h:8443/");
        assert_eq!(s.ca, None);
        let garbage = temp_file("not a certificate\n");
        let errors = settings(
            &["ping", "--ca-file", garbage.to_str().unwrap()],
            &[("NEBULA_MANAGER_URI", "https://h")],
        )
        .unwrap_err();
        assert!(
            errors[0].contains("--ca-file (NEBULA_MANAGER_CA_FILE)"),
            "{errors:?}"
        );
        let errors = settings(
            &["ping"],
            &[("NEBULA_MANAGER_CA_FILE", "/nonexistent/ca.pem")],
        )
        .unwrap_err();
        assert!(errors[0].contains("NEBULA_MANAGER_CA_FILE"), "{errors:?}");
        assert!(errors[0].contains("/nonexistent/ca.pem"), "{errors:?}");
    }
}
