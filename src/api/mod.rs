//! Lethe's API: the custom resource types of group `lethe.dev`, version
//! `v1alpha1`, and the shared types they are built from. Everything else in
//! the crate depends on this module; it depends on nothing else in the crate.

mod common;
mod dataset;
mod datastore;
mod duration;
mod hold;
mod identifier;
mod policy;
pub mod reference;
mod request;
mod run;

pub use common::*;
pub use dataset::*;
pub use datastore::*;
pub use duration::{DURATION_PATTERN, Duration, DurationError};
pub use hold::*;
pub use identifier::{IDENTIFIER_PATTERN, Identifier, IdentifierError, MAX_IDENTIFIER_LEN, validate_identifier};
pub use policy::*;
pub use request::*;
pub use run::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub const GROUP: &str = "lethe.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "lethe.dev/v1alpha1";

/// Every Lethe CRD with the file it is kept in under `crds/`, in file-name
/// order, so that `lethe crd` equals `cat crds/*.yaml`.
pub fn crds() -> Vec<(String, CustomResourceDefinition)> {
    let mut all = vec![
        DataStore::crd(),
        Dataset::crd(),
        RetentionPolicy::crd(),
        DeletionRequest::crd(),
        LegalHold::crd(),
        ScrubRun::crd(),
    ]
    .into_iter()
    .map(|crd| (format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default()), crd))
    .collect::<Vec<_>>();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// One CRD as the YAML document committed under `crds/`.
pub fn crd_document(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    Ok(format!("---\n{}", serde_yaml::to_string(crd)?))
}

/// All CRDs as one multi-document YAML stream (the output of `lethe crd`).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    crds().iter().map(|(_, crd)| crd_document(crd)).collect()
}

/// The names Lethe's kinds are known by, for manifest validation.
pub const KINDS: [&str; 6] = ["DataStore", "Dataset", "RetentionPolicy", "DeletionRequest", "LegalHold", "ScrubRun"];
