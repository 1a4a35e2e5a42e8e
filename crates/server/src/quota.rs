//! A namespace's quotas where a change is decided: one service more, a bigger
//! package. The quotas on what runs at once are checked where instances are
//! launched (`Instances::launch`), from the copy `LimitsFollower` keeps; the rate
//! quotas live where the traffic is (the gateway's limiters, the broker's ingress).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::http::StatusCode;
use updraft_model::image_ref::STORED_IMAGE_PREFIX;
use updraft_model::template::Source;
use updraft_model::NamespaceQuota;
use updraft_store::{Change, Kind, Resource, Snapshot, WatchFilter};

use crate::editions::Editions;
use crate::reconcile::Reconciler;
use crate::revision_build::RevisionBuilder;
use crate::ApiError;

/// Every namespace's quota, read where instances are launched, away from the store.
#[derive(Default)]
pub struct Quotas(RwLock<HashMap<String, NamespaceQuota>>);

impl Quotas {
    pub fn of(&self, namespace: &str) -> NamespaceQuota {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(namespace)
            .copied()
            .unwrap_or_default()
    }
}

/// Keeps what the namespaces' limits decide away from the store as the store has
/// them: the [`Quotas`] launches are admitted against, and the [`Editions`]' placement.
pub struct LimitsFollower {
    pub quotas: Arc<Quotas>,
    pub editions: Arc<Editions>,
}

#[async_trait::async_trait]
impl Reconciler for LimitsFollower {
    fn name(&self) -> &'static str {
        "namespace limits follower"
    }

    fn filter(&self) -> WatchFilter {
        WatchFilter::kind(Kind::Namespace)
    }

    async fn on_write(&mut self, changes: Vec<Change>, _now_us: i64) {
        for change in changes {
            let (name, limits) = match change {
                Change::Put(Resource::Namespace(namespace)) => (namespace.name, Some(namespace.limits)),
                Change::Delete {
                    kind: Kind::Namespace,
                    name,
                    ..
                } => (name, None),
                _ => continue,
            };
            let mut quotas = self.quotas.0.write().unwrap_or_else(|p| p.into_inner());
            match &limits {
                Some(limits) => quotas.insert(name.clone(), limits.quota),
                None => quotas.remove(&name),
            };
            drop(quotas);
            self.editions.set(&name, limits.and_then(|l| l.exclusive));
        }
    }

    async fn on_list(&mut self, snapshot: &Snapshot, _now_us: i64) {
        let namespaces = &snapshot.namespaces;
        *self.quotas.0.write().unwrap_or_else(|p| p.into_inner()) =
            namespaces.iter().map(|n| (n.name.clone(), n.limits.quota)).collect();
        self.editions.reset(
            namespaces
                .iter()
                .filter_map(|n| Some((n.name.clone(), n.limits.exclusive?)))
                .collect(),
        );
    }
}

/// The namespace's quota as the store has it now.
async fn quota_of(build: &RevisionBuilder, namespace: &str) -> Result<NamespaceQuota, ApiError> {
    Ok(build
        .store
        .namespace(namespace)
        .await?
        .map(|ns| ns.limits.quota)
        .unwrap_or_default())
}

fn refused(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

/// Refuses an image pulled from a registry for a deploy when it is larger than the
/// namespace's `quota.package_bytes` (its size is known only once pulled).
pub async fn admit_pulled_image(build: &RevisionBuilder, namespace: &str, bytes: u64) -> Result<(), ApiError> {
    quota_of(build, namespace)
        .await?
        .admit_package(namespace, bytes)
        .map_err(|reason| refused(reason.replacen("the package", "the image", 1)))
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
    let quota = quota_of(build, namespace).await?;
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
