//! `nebula-api-manager`: the REST API for fleets.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nebula_bin::config::{ApiConfig, Binary, Layers};

#[derive(Parser)]
#[command(
    name = "nebula-api-manager",
    version,
    about = "Nebula's REST API over the embedded store."
)]
struct Cli {
    /// Listen address [env: NEBULA_BIND] [default: 0.0.0.0:80].
    #[arg(long)]
    bind: Option<String>,
    /// Directory of the embedded store [env: NEBULA_DATA_DIR] [default: ./nebula-data].
    #[arg(long)]
    data_dir: Option<String>,
    /// Settings file, JSON or TOML, lower-case setting names [env: NEBULA_CONFIG] [default:
    /// /etc/nebula/config.json when it exists].
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut layers = Layers::for_server(
        [
            ("nebula_bind", "--bind", cli.bind),
            ("nebula_data_dir", "--data-dir", cli.data_dir),
        ],
        std::env::vars(),
        cli.config,
    );
    layers.check_file_keys(Binary::ApiManager);
    let api = ApiConfig::read(&mut layers, "0.0.0.0:80", false);
    let rabbit = nebula_bin::config::rabbit(&mut layers, false);
    let mongo = nebula_bin::config::mongo(&mut layers);
    nebula_bin::run_main("nebula-api-manager", layers, || {
        nebula_bin::run::api_manager(api, rabbit, mongo)
    })
}
