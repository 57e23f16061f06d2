//! What the three binaries share: configuration layering, logging, shutdown, and assembling
//! the services from their parts.

pub mod cli;
pub mod config;
pub mod reports;
pub mod run;

use std::process::ExitCode;

/// The shared end of every `main`: stop with status 2 on bad configuration, else install
/// logging, run `service` on a multi-threaded runtime and turn its result into the exit status.
pub fn run_main<F>(
    binary: &str,
    config: Result<(), config::ConfigError>,
    service: impl FnOnce() -> F,
) -> ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    if let Err(e) = config {
        eprintln!("{binary}: {e}");
        return ExitCode::from(2);
    }
    run::init_tracing();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{binary}: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(service()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
