//! Updraft's resource types, their validation and the package detection rules.
//!
//! Pure: no network, clock or disk. Callers pass in what a rule needs (file contents
//! through [`package::PackageFiles`], the time as a number), so every rule is testable
//! in microseconds.

pub mod annotations;
pub mod auth;
pub mod build;
pub mod change;
pub mod domain;
pub mod error;
pub mod exclusive;
pub mod image_ref;
pub mod knative;
pub mod names;
pub mod package;
pub mod quantity;
pub mod resources;
pub mod revision_config;
pub mod runtime_kind;
pub mod secret;
pub mod template;
pub mod traffic;
pub mod yaml;

pub use error::{FieldError, Problems};
pub use resources::{
    DeploySpec, Namespace, NamespaceLimits, NamespaceQuota, Revision, RevisionConfig, RunningUse, Service,
    ServiceConfig, StagedRevision, Usage,
};
pub use runtime_kind::{Language, RuntimeKind};
pub use template::RevisionTemplate;
pub use traffic::TrafficTarget;

/// The namespace every server has and every command uses unless told otherwise.
pub const DEFAULT_NAMESPACE: &str = "default";
