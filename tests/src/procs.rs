//! Starting the fleet binaries the way the end-to-end tests run them: an API manager on a free
//! port of 127.0.0.1 with basic auth, workers that sync from it, and the RabbitMQ check that
//! decides whether a test on the broker runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Api, Process, binary, free_port};

/// Whether RabbitMQ answers on 127.0.0.1:5672 (within a second).
#[must_use]
pub fn broker_answers() -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], 5672).into(), Duration::from_secs(1))
        .is_ok()
}

/// Whether RabbitMQ answers on 127.0.0.1:5672; prints `SKIPPED` otherwise (or fails, when
/// `NEBULA_REQUIRE_BROKER` is set).
///
/// # Panics
/// When the broker is required and missing.
#[must_use]
pub fn broker_ready(test: &str) -> bool {
    let up = broker_answers();
    if !up {
        assert!(
            std::env::var_os("NEBULA_REQUIRE_BROKER").is_none(),
            "{test}: NEBULA_REQUIRE_BROKER is set"
        );
        println!("SKIPPED {test}: no RabbitMQ on 127.0.0.1:5672; run .ci/rabbitmq.sh");
    }
    up
}

/// How to start a `nebula-api-manager` on the embedded store: basic auth with one user, on a
/// free port of 127.0.0.1, its store and log in a test's directory.
#[derive(Clone, Debug)]
pub struct ApiManager<'a> {
    user: &'a str,
    password: &'a str,
    env: Vec<(&'a str, &'a str)>,
    name: Option<&'a str>,
}

impl<'a> ApiManager<'a> {
    /// A manager whose one user is `user` with `password`.
    #[must_use]
    pub fn new(user: &'a str, password: &'a str) -> Self {
        Self {
            user,
            password,
            env: Vec::new(),
            name: None,
        }
    }

    /// Adds `key=value` to its environment (`RABBIT_HOST`, `RABBIT_URL`, ...).
    #[must_use]
    pub fn env(mut self, key: &'a str, value: &'a str) -> Self {
        self.env.push((key, value));
        self
    }

    /// Adds every pair of `env` to its environment.
    #[must_use]
    pub fn envs(mut self, env: &[(&'a str, &'a str)]) -> Self {
        self.env.extend_from_slice(env);
        self
    }

    /// Keeps its store in `<name>-data` and its log in `<name>.log`, for several managers in
    /// one directory (`data` and `manager.log` otherwise).
    #[must_use]
    pub fn named(mut self, name: &'a str) -> Self {
        self.name = Some(name);
        self
    }

    /// Starts it under `dir` without waiting for it: the process, a client with its
    /// credentials, and its base URL (`http://127.0.0.1:<port>`).
    #[must_use]
    pub fn start(&self, dir: &Path) -> (Process, Api, String) {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let (data, log) = self.name.map_or_else(
            || (dir.join("data"), dir.join("manager.log")),
            |name| {
                (
                    dir.join(format!("{name}-data")),
                    dir.join(format!("{name}.log")),
                )
            },
        );
        let mut env = vec![
            ("BASIC_AUTH_USER", self.user),
            ("BASIC_AUTH_PASSWORD", self.password),
        ];
        env.extend_from_slice(&self.env);
        let process = Process::start(
            binary("nebula-api-manager"),
            &[
                "--bind",
                &bind,
                "--data-dir",
                data.to_str().expect("UTF-8 path"),
            ],
            &env,
            log,
        );
        (
            process,
            Api::new(port, self.user, self.password),
            format!("http://{bind}"),
        )
    }

    /// Starts it under `dir` and waits until its API answers (see [`Api::wait_ready`]).
    pub async fn ready(&self, dir: &Path) -> (Process, Api, String) {
        let started = self.start(dir);
        started.1.wait_ready().await;
        started
    }
}

/// How to start a `nebula-worker-manager` that syncs from a manager over HTTP with basic auth,
/// checking in and reconciling every second and giving containers 1 s to stop. Each setting
/// can be replaced, added or left out before [`Worker::start`].
#[derive(Clone, Debug)]
pub struct Worker<'a> {
    env: Vec<(&'a str, &'a str)>,
}

impl<'a> Worker<'a> {
    /// A worker of the manager at `uri`, as `user` with `password`.
    #[must_use]
    pub fn of(uri: &'a str, user: &'a str, password: &'a str) -> Self {
        Self {
            env: vec![
                ("NEBULA_MANAGER_URI", uri),
                ("NEBULA_MANAGER_AUTH_USER", user),
                ("NEBULA_MANAGER_AUTH_PASSWORD", password),
                ("NEBULA_MANAGER_CHECK_IN_TIME", "1"),
                ("NEBULA_RECONCILE_INTERVAL", "1"),
                ("NEBULA_STOP_GRACE", "1"),
            ],
        }
    }

    /// Sets `key` to `value`, in place of any value it had (`APP_NAME`, `DEVICE_GROUP`,
    /// `NEBULA_MANAGER_CHECK_IN_TIME`, `DOCKER_HOST`, ...).
    #[must_use]
    pub fn env(mut self, key: &'a str, value: &'a str) -> Self {
        match self.env.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.env.push((key, value)),
        }
        self
    }

    /// Sets every pair of `env`, as [`Worker::env`] does.
    #[must_use]
    pub fn envs(self, env: &[(&'a str, &'a str)]) -> Self {
        env.iter().fold(self, |w, (k, v)| w.env(k, v))
    }

    /// Leaves `key` unset, so that the worker's own default applies.
    #[must_use]
    pub fn without(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| *k != key);
        self
    }

    /// Starts it, its output going to `log`.
    #[must_use]
    pub fn start(&self, log: PathBuf) -> Process {
        Process::start(binary("nebula-worker-manager"), &[], &self.env, log)
    }
}
