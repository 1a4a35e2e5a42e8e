//! A namespace's quotas where a change is decided: one service more, a bigger
//! package. The rate quotas live where the traffic is (the gateway's limiters, the
//! broker's ingress).

use axum::http::StatusCode;
use updraft_model::image_ref::STORED_IMAGE_PREFIX;
use updraft_model::template::Source;
use updraft_model::NamespaceQuota;

use crate::revision_build::RevisionBuilder;
use crate::ApiError;

fn refused(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

/// Refuses a change the namespace's quota does not allow: a new service past
/// `quota.services`, or a package, component or imported image past
/// `quota.package_bytes`.
pub async fn admit(
    build: &RevisionBuilder,
    namespace: &str,
    new_service: bool,
    source: &Source,
) -> Result<(), ApiError> {
    let quota: NamespaceQuota = build
        .store
        .namespace(namespace)
        .await?
        .map(|ns| ns.limits.quota)
        .unwrap_or_default();
    if quota.is_empty() {
        return Ok(());
    }
    if new_service {
        let services = build.store.services(Some(namespace)).await?.len();
        quota.admit_service(namespace, services).map_err(refused)?;
    }
    let bytes = match source {
        Source::Package { digest } | Source::Wasm { digest } => {
            std::fs::metadata(build.paths.blob(digest)).map(|m| m.len()).ok()
        }
        Source::Image { reference } => reference
            .strip_prefix(STORED_IMAGE_PREFIX)
            .and_then(|digest| build.images.get(digest))
            .map(|image| image.info.size),
    };
    if let Some(bytes) = bytes {
        quota.admit_package(namespace, bytes).map_err(refused)?;
    }
    Ok(())
}
