//! What the three binaries share: configuration layering, logging, shutdown, and assembling
//! the services from their parts.

pub mod config;
pub mod run;
