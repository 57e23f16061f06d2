//! `nebula`: the single-process Nebula (`nebula standalone`), and the client CLI
//! (`nebula <noun> <verb>`, see `nebula_bin::cli`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nebula_bin::config::{ApiConfig, Binary, EngineConfig, Layers};
use nebula_core::worker::Selection;

#[derive(Parser)]
#[command(
    name = "nebula",
    version,
    about = "Push the same containers to every server of an app, and keep them there."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API, embedded store and worker in one process, driving the local Docker engine.
    Standalone {
        /// Listen address [env: NEBULA_BIND] [default: 127.0.0.1:8080].
        #[arg(long)]
        bind: Option<String>,
        /// Directory of the embedded store [env: NEBULA_DATA_DIR] [default: ./nebula-data].
        #[arg(long)]
        data_dir: Option<String>,
        /// Settings file, JSON or TOML, lower-case setting names [env: NEBULA_CONFIG]
        /// [default: /etc/nebula/config.json when it exists].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seconds between full resyncs [env: NEBULA_MANAGER_CHECK_IN_TIME] [default: 30].
        #[arg(long)]
        check_in_time: Option<String>,
        /// Seconds between drift and health checks [env: NEBULA_RECONCILE_INTERVAL] [default: 10].
        #[arg(long)]
        reconcile_interval: Option<String>,
    },
    #[command(flatten)]
    Client(nebula_bin::cli::Command),
}

fn main() -> ExitCode {
    let (bind, data_dir, config, check_in_time, reconcile_interval) = match Cli::parse().command {
        Command::Standalone {
            bind,
            data_dir,
            config,
            check_in_time,
            reconcile_interval,
        } => (bind, data_dir, config, check_in_time, reconcile_interval),
        Command::Client(command) => return nebula_bin::cli::run(&command),
    };
    let mut layers = Layers::for_server(
        [
            ("nebula_bind", "--bind", bind),
            ("nebula_data_dir", "--data-dir", data_dir),
            (
                "nebula_manager_check_in_time",
                "--check-in-time",
                check_in_time,
            ),
            (
                "nebula_reconcile_interval",
                "--reconcile-interval",
                reconcile_interval,
            ),
        ],
        std::env::vars(),
        config,
    );
    layers.check_file_keys(Binary::Standalone);
    let api = ApiConfig::read(&mut layers, "127.0.0.1:8080", true);
    let engine = EngineConfig::read(&mut layers, Selection::All);
    nebula_bin::run_main("nebula", layers, || {
        nebula_bin::run::standalone(api, engine)
    })
}
