//! Lethe: a Kubernetes operator that enforces data-retention policies.
#![forbid(unsafe_code)]
// kube's repeated `printcolumn(type_ = ...)` attributes read as duplicates to clippy.
#![allow(clippy::duplicated_attributes)]

pub mod api;
pub mod dev;
pub mod digest;
pub mod emulator;
pub mod operator;
pub mod plan;
pub mod receipt;
pub mod report;
pub mod schema;
pub mod scrub;
pub mod validate;
