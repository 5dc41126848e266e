//! Lethe: a Kubernetes operator that enforces data-retention policies.
#![forbid(unsafe_code)]

pub mod api;
pub mod plan;
pub mod schema;
pub mod validate;
