//! Updraft's resource types, their validation and the package detection rules.
//!
//! Pure: no network, clock or disk. Callers pass in what a rule needs (file contents
//! through [`package::PackageFiles`], the time as a number), so every rule is testable
//! in microseconds.

pub mod error;
pub mod names;
pub mod package;
pub mod quantity;
pub mod resources;

pub use error::FieldError;
pub use resources::{DeploySpec, Namespace, Revision, RevisionConfig, Service};

/// The namespace every server has and every command uses unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "default";
