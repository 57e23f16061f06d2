//! Nebula's core: everything that decides, nothing that touches the outside world.
//!
//! Start with [`model::App`] (the v2 app document), [`plan::plan_app`] (desired vs observed ->
//! actions) and the two services, [`manager::Manager`] and [`worker::Worker`], which are written
//! against the three seams [`store::Store`], [`bus::Bus`] and [`runtime::Runtime`].
//!
//! This crate does no I/O of its own: the Docker engine, the database and the broker live in
//! the backend crates. In-memory fakes of all three traits and the contract suites every backend
//! must pass live in [`testing`], behind the `testing` feature.

pub mod backoff;
pub mod bus;
pub mod cohort;
pub mod container;
pub mod cron_job;
pub mod cron_schedule;
pub mod device_group;
pub mod field;
pub mod healthcheck;
pub mod image;
pub mod manager;
pub mod model;
pub mod plan;
pub mod report;
pub mod rollout;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod users;
pub mod validate;
pub mod worker;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
