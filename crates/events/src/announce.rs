//! Platform events (what Knative's ApiServerSource gives on Kubernetes): Updraft's own
//! happenings as CloudEvents, sent to a namespace's broker or a service when a
//! `platform` source of that namespace asks for them.

use serde::{Deserialize, Serialize};
use updraft_model::FieldError;

use crate::delivery::{DeliverySpec, Destination};

/// Every type a platform source can send, in the order a user meets them.
pub const PLATFORM_EVENT_TYPES: &[&str] = &[
    SERVICE_DEPLOYED,
    SERVICE_DELETED,
    REVISION_READY,
    REVISION_FAILED,
    SERVICE_SCALED,
    INSTANCE_CRASHED,
    COLD_START,
    QUOTA_EXCEEDED,
];
pub const SERVICE_DEPLOYED: &str = "dev.updraft.service.deployed.v1";
pub const SERVICE_DELETED: &str = "dev.updraft.service.deleted.v1";
pub const REVISION_READY: &str = "dev.updraft.revision.ready.v1";
pub const REVISION_FAILED: &str = "dev.updraft.revision.failed.v1";
pub const SERVICE_SCALED: &str = "dev.updraft.service.scaled.v1";
pub const INSTANCE_CRASHED: &str = "dev.updraft.instance.crashed.v1";
pub const COLD_START: &str = "dev.updraft.instance.coldstart.v1";
pub const QUOTA_EXCEEDED: &str = "dev.updraft.quota.exceeded.v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlatformSpec {
    /// The types to send (every one when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

impl PlatformSpec {
    pub fn validate(&self, at: impl Fn(&str) -> String) -> Result<(), FieldError> {
        for (i, ty) in self.types.iter().enumerate() {
            if !PLATFORM_EVENT_TYPES.contains(&ty.as_str()) {
                return Err(FieldError::new(
                    format!("{}[{i}]", at("types")),
                    format!(
                        "{ty:?} is not a platform event; one of {}",
                        PLATFORM_EVENT_TYPES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    pub fn wants(&self, ty: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_known_ones_and_none_means_all() {
        let mut spec = PlatformSpec {
            types: vec![],
            sink: Destination::broker("default"),
            delivery: None,
        };
        assert!(spec.wants(INSTANCE_CRASHED) && spec.wants(SERVICE_DEPLOYED));
        spec.types = vec![INSTANCE_CRASHED.into()];
        assert!(spec.wants(INSTANCE_CRASHED) && !spec.wants(SERVICE_DEPLOYED));
        assert!(spec.validate(|f| format!("spec.{f}")).is_ok());
        spec.types.push("dev.updraft.nope".into());
        let error = spec.validate(|f| format!("spec.{f}")).unwrap_err().to_string();
        assert!(
            error.starts_with("spec.types[1]: \"dev.updraft.nope\" is not a platform event"),
            "{error}"
        );
    }
}
