//! What keeps concurrent writers of one service apart, and packages in use from being
//! discarded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type ServiceLock = Arc<tokio::sync::Mutex<()>>;

/// One lock per service, held by whatever writes it (deploys, traffic, deletes), so
/// revision numbers cannot race; and the packages deploys under way are using.
#[derive(Default)]
pub struct ServiceLocks {
    services: Mutex<HashMap<(String, String), ServiceLock>>,
    /// Package digests that deploys under way are using, with how many use each.
    packages_in_use: Mutex<HashMap<String, usize>>,
    /// Held for reading while a deploy marks a package in use, for writing while one
    /// is discarded, so a package cannot be taken up between the check and the delete.
    package_gate: tokio::sync::RwLock<()>,
}

/// Marks a package as used by a deploy until it drops.
pub struct PackageInUse {
    locks: Arc<ServiceLocks>,
    digest: String,
}

impl Drop for PackageInUse {
    fn drop(&mut self) {
        let mut in_use = self.locks.packages_in_use.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = in_use.get_mut(&self.digest) {
            *count -= 1;
            if *count == 0 {
                in_use.remove(&self.digest);
            }
        }
    }
}

impl ServiceLocks {
    pub fn service(&self, namespace: &str, service: &str) -> ServiceLock {
        self.services
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((namespace.to_string(), service.to_string()))
            .or_default()
            .clone()
    }

    pub async fn use_package(self: &Arc<Self>, digest: &str) -> PackageInUse {
        let _gate = self.package_gate.read().await;
        *self
            .packages_in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.to_string())
            .or_default() += 1;
        PackageInUse {
            locks: self.clone(),
            digest: digest.to_string(),
        }
    }

    /// Runs `discard` unless a deploy uses the package; no deploy can take it up
    /// meanwhile.
    pub async fn discard_unless_used<F: std::future::Future<Output = ()>>(&self, digest: &str, discard: F) {
        let _gate = self.package_gate.write().await;
        let used = self
            .packages_in_use
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(digest);
        if !used {
            discard.await;
        }
    }
}
