//! What the three binaries share: configuration layering, logging, shutdown, and assembling
//! the services from their parts.

pub mod cli;
pub mod config;
pub mod reports;
pub mod run;
pub mod settings;

use std::process::ExitCode;

/// The shared end of every `main`: print the configuration's warnings, stop with status 2 on
/// bad configuration, else install logging, run `service` on a multi-threaded runtime and turn
/// its result into the exit status (1, with the cause on stderr and in the log, when it fails,
/// e.g. an address that cannot be listened on).
pub fn run_main<F>(binary: &str, layers: config::Layers, service: impl FnOnce() -> F) -> ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    for warning in layers.warnings() {
        eprintln!("{binary}: warning: {warning}");
    }
    if let Err(e) = layers.finish() {
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
            eprintln!("{binary}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
