//! `nebula-worker-manager`: one per host; keeps the host's containers as its manager says.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nebula_bin::config::{Binary, Layers, WorkerManagerConfig};

#[derive(Parser)]
#[command(
    name = "nebula-worker-manager",
    version,
    about = "Nebula's per-host worker."
)]
struct Cli {
    /// The manager's base URL [env: NEBULA_MANAGER_URI].
    #[arg(long)]
    manager_uri: Option<String>,
    /// Comma-separated app names to run [env: APP_NAME].
    #[arg(long)]
    app_name: Option<String>,
    /// Settings file, JSON or TOML, lower-case setting names [env: NEBULA_CONFIG] [default:
    /// /etc/nebula/config.json when it exists].
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut layers = Layers::for_server(
        [
            ("nebula_manager_uri", "--manager-uri", cli.manager_uri),
            ("app_name", "--app-name", cli.app_name),
        ],
        std::env::vars(),
        cli.config,
    );
    layers.check_file_keys(Binary::WorkerManager);
    let config = WorkerManagerConfig::read(&mut layers);
    let rabbit = nebula_bin::config::rabbit(&mut layers, true);
    let transport = nebula_bin::config::report_transport(&mut layers, rabbit.is_some());
    nebula_bin::run_main("nebula-worker-manager", layers, || {
        nebula_bin::run::worker_manager(config, rabbit, transport)
    })
}
