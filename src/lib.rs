//! Handoff: build and execute DAGs of functions with resource-aware scheduling.
pub use handoff_core::*;
