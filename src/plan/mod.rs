//! Pure decisions, with no I/O and no Kubernetes client: which rules apply
//! to a dataset and what window results, which labels a selector matches.
//! The controllers, `lethe validate` and the tests all call these.

pub mod erasure;
pub mod retention;
pub mod schedule;
pub mod selector;
