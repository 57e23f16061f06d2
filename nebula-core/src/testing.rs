//! In-memory fakes of the three seams and the contract suites every backend must pass.
//!
//! The fakes have real behaviour (revisions and conflicts, delivery order, container state
//! transitions) and keep a typed call log; the same contract suite runs against each fake here
//! and against each real backend in its own crate.

pub mod contract;
mod fake_runtime;
mod memory_store;
mod switchable_bus;

pub use crate::bus::InProcessBus as InMemoryBus;
pub use fake_runtime::{Call, FakeRuntime, fake_image_id};
pub use memory_store::InMemoryStore;
pub use switchable_bus::SwitchableBus;
