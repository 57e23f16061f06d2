//! Assembling and running the services.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nebula_core::bus::{Bus, InProcessBus};
use nebula_core::manager::Manager;
use nebula_core::worker::report::{BusReportSink, ReportSink};
use nebula_core::worker::{Worker, WorkerConfig};
use nebula_docker::{DockerConfig, DockerRuntime};
use nebula_http::auth::{AuthConfig, Authenticator};
use nebula_http::client::HttpSource;
use nebula_http::{ApiState, RouterOptions, router_with};
use nebula_redb::RedbStore;
use tokio::sync::watch;

use crate::config::ReportTransport;
use crate::config::{ApiConfig, EngineConfig, WorkerManagerConfig};

/// Installs the log subscriber on stdout: `RUST_LOG` (default `info`), JSON when
/// `NEBULA_LOG_FORMAT=json`, colours only when stdout is a terminal.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if std::env::var("NEBULA_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A channel that turns `true` on ctrl-c or SIGTERM.
#[must_use]
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// The local admin password of standalone mode when none is configured: generated once,
/// kept in `<data_dir>/admin-password` (mode 0600), never logged.
///
/// # Errors
/// When the file cannot be read or written.
pub fn standalone_password(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("admin-password");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let password: String = {
        use rand::Rng;
        const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
        let mut rng = rand::rng();
        (0..24)
            .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
            .collect()
    };
    std::fs::write(&path, format!("{password}\n"))
        .with_context(|| format!("write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(password)
}

/// This standalone instance's id, generated once and kept in `<data_dir>/instance-id`; its
/// containers carry it, so two instances sharing an engine never remove each other's.
///
/// # Errors
/// When the file cannot be read or written.
pub fn instance_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("instance-id");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_owned();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let id = format!("{:016x}", rand::random::<u64>());
    std::fs::write(&path, format!("{id}\n"))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(id)
}

/// The API's listener, bound before anything else starts, so that a taken or forbidden
/// address stops the binary at once with a message naming it and where it was set.
async fn listen(api: &ApiConfig) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(api.bind)
        .await
        .with_context(|| format!("cannot listen on {} ({})", api.bind, api.bind_source))
}

async fn serve(
    listener: tokio::net::TcpListener,
    api: &ApiConfig,
    auth: AuthConfig,
    manager: Manager,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    tracing::info!(
        bind = %listener.local_addr()?,
        auth = auth.enabled,
        cache_time_s = api.info_cache.ttl.as_secs(),
        cache_max_size = api.info_cache.max_size,
        "API listening"
    );
    let mut options = RouterOptions::default();
    options.info_cache = api.info_cache;
    options.authenticator = Arc::new(Authenticator::new(api.bcrypt_cost));
    options.reports = api.reports;
    tokio::spawn(crate::reports::sweep(
        manager.clone(),
        api.reports.ttl,
        stop.clone(),
    ));
    let app = router_with(
        ApiState {
            manager,
            auth: Arc::new(auth),
        },
        options,
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(wait(stop))
        .await
        .context("serve API")
}

async fn docker(engine: &EngineConfig) -> anyhow::Result<DockerRuntime> {
    let runtime = DockerRuntime::connect(&DockerConfig::with_host(engine.docker_host.clone()))
        .await
        .context("connect to the Docker engine")?;
    tracing::info!(engine = runtime.host_address(), api = %runtime.api_version(), "Docker engine connected");
    Ok(runtime)
}

fn open_store(api: &ApiConfig) -> anyhow::Result<RedbStore> {
    let store = RedbStore::open(&api.data_dir)
        .with_context(|| format!("open the store in {}", api.data_dir.display()))?;
    tracing::info!(path = %store.path().display(), "embedded store open");
    Ok(store)
}

/// `nebula standalone`: API, embedded store, in-process bus and worker in one process.
///
/// # Errors
/// Start-up failures (store, engine, bind).
pub async fn standalone(api: ApiConfig, engine: EngineConfig) -> anyhow::Result<()> {
    let listener = listen(&api).await?;
    let store = open_store(&api)?;
    let mut auth = api.auth.clone();
    if auth.enabled && auth.password.is_none() && auth.token.is_none() {
        auth.user = Some("admin".into());
        auth.password = Some(standalone_password(&api.data_dir)?);
        tracing::info!(
            user = "admin",
            password_file = %api.data_dir.join("admin-password").display(),
            "no credentials configured: generated the admin password"
        );
    }
    let runtime = docker(&engine).await?;
    let mut engine = engine;
    engine.worker.owner = Some(instance_id(&api.data_dir)?);
    let bus = InProcessBus::new();
    let bus_dyn: Arc<dyn Bus> = Arc::new(bus);
    let manager = Manager::new(Arc::new(store), Some(bus_dyn.clone()));
    let worker = Worker::new(
        Arc::new(runtime),
        Arc::new(manager.clone()),
        Some(bus_dyn),
        engine.worker,
    );
    let worker = crate::reports::attach(worker, Arc::new(manager.clone()), &engine.report);
    let stop = shutdown_signal();
    let worker_task = tokio::spawn(worker.run(wait(stop.clone())));
    let served = serve(listener, &api, auth, manager, stop).await;
    worker_task.await.context("worker task")?;
    served
}

/// `nebula-api-manager`: the API over the embedded store.
///
/// # Errors
/// Start-up failures (store, bind).
pub async fn api_manager(
    api: ApiConfig,
    rabbit: Option<nebula_rabbit::RabbitConfig>,
    mongo: Option<nebula_mongo::MongoConfig>,
) -> anyhow::Result<()> {
    let listener = listen(&api).await?;
    let store: Arc<dyn nebula_core::store::Store> = match mongo {
        Some(config) => {
            let store = nebula_mongo::MongoStore::connect(&config)
                .await
                .with_context(|| {
                    format!(
                        "connect to MongoDB at {}",
                        nebula_mongo::redact_url(&config.mongo_url)
                    )
                })?;
            tracing::info!(database = store.database_name(), "MongoDB store connected");
            Arc::new(store)
        }
        None => Arc::new(open_store(&api)?),
    };
    let rabbit = match rabbit {
        Some(config) => Some(rabbit_bus(config).await?),
        None => None,
    };
    let manager = Manager::new(store, rabbit.clone().map(|b| b as Arc<dyn Bus>));
    let stop = shutdown_signal();
    if rabbit.is_some() {
        // What the broker did not take (or what a manager killed before its publish left)
        // goes out as soon as the broker takes messages again.
        let (manager, stop) = (manager.clone(), stop.clone());
        tokio::spawn(async move { manager.republish(wait(stop)).await });
    }
    if let Some(rabbit) = rabbit {
        tracing::info!(queue = %rabbit.config().report_queue, "taking worker reports from RabbitMQ");
        let (manager, stop) = (manager.clone(), stop.clone());
        tokio::spawn(async move { manager.consume_reports(rabbit, wait(stop)).await });
    }
    serve(listener, &api, api.auth.clone(), manager, stop).await
}

/// A RabbitMQ bus; a broker that does not answer yet is logged, not fatal (workers poll, and
/// report over HTTP).
async fn rabbit_bus(
    config: nebula_rabbit::RabbitConfig,
) -> anyhow::Result<Arc<nebula_rabbit::RabbitBus>> {
    let bus = nebula_rabbit::RabbitBus::new(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    match bus.connect().await {
        Ok(()) => tracing::info!("RabbitMQ connected"),
        Err(e) => {
            tracing::warn!(error = %e, "RabbitMQ not answering yet; changes still reach workers at check-in")
        }
    }
    Ok(Arc::new(bus))
}

/// `nebula-worker-manager`: one host's worker, syncing from a manager over HTTP and following
/// the RabbitMQ bus when one is configured; it reports over `transport` (the bus falls back to
/// HTTP for any report the broker does not take).
///
/// # Errors
/// Start-up failures (engine).
pub async fn worker_manager(
    config: WorkerManagerConfig,
    rabbit: Option<nebula_rabbit::RabbitConfig>,
    transport: ReportTransport,
) -> anyhow::Result<()> {
    let runtime = docker(&config.engine).await?;
    let source = HttpSource::with_ca(
        &config.manager_uri,
        config.manager_auth.clone(),
        config.request_timeout,
        config.manager_ca.as_deref(),
    )?;
    match source.status().await {
        Ok(()) => tracing::info!(manager = %config.manager_uri, "manager answers"),
        Err(e) => {
            tracing::warn!(manager = %config.manager_uri, error = %e, "manager not answering yet; containers are kept and sync retries every check-in")
        }
    }
    let worker_config: WorkerConfig = config.engine.worker;
    tracing::info!(selection = ?worker_config.selection, check_in_s = worker_config.check_in.as_secs(), "worker starting");
    let http: Arc<dyn ReportSink> = Arc::new(source.clone());
    let rabbit = match rabbit {
        Some(config) => Some(rabbit_bus(config).await?),
        None => None,
    };
    let sink = match (&rabbit, transport) {
        (Some(bus), ReportTransport::Bus) => {
            tracing::info!(queue = %bus.config().report_queue, "reports over RabbitMQ, over HTTP when the broker does not take one");
            // Half the report timeout for the broker's confirm leaves the other half to HTTP.
            let bus_timeout = config.engine.report.timeout / 2;
            Arc::new(BusReportSink::new(bus.clone(), http, bus_timeout)) as Arc<dyn ReportSink>
        }
        _ => http,
    };
    let worker = Worker::new(
        Arc::new(runtime),
        Arc::new(source),
        rabbit.map(|b| b as Arc<dyn Bus>),
        worker_config,
    );
    let worker = crate::reports::attach(worker, sink, &config.engine.report);
    worker.run(wait(shutdown_signal())).await;
    // Give in-flight logs a moment to flush.
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
