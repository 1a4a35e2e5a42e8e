//! This node's side of the revision reconciler: the unpacked trees and registered
//! states of the revisions it can run, the first instance of a staged revision, and
//! what a retired revision leaves behind.

use std::fs;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use updraft_model::traffic::resolve;
use updraft_model::{Revision, StagedRevision};
use updraft_runtime::clock::now_us;
use updraft_runtime::package::UnpackLimits;
use updraft_scaling::ScalingSpec;
use updraft_telemetry::logs::service_log_dir;

use crate::instances::Instances;
use crate::revision_state::{FirstStart, Registry, RevisionState};
use crate::revisions::{Because, RevisionHost};
use crate::Paths;

pub struct NodeRevisions {
    pub registry: Arc<Registry>,
    pub instances: Arc<Instances>,
    pub paths: Paths,
    pub scaling: ScalingSpec,
    pub unpack_limits: UnpackLimits,
}

impl NodeRevisions {
    /// Registers the revision, `routed` or not, unless it is known; its package is
    /// unpacked first if its tree is missing. The state, if it is new.
    fn register(&self, revision: Revision, routed: bool) -> Result<Option<Arc<RevisionState>>, String> {
        if self.registry.get(&revision.namespace, &revision.name).is_some() {
            return Ok(None);
        }
        let dir = self.paths.revision_dir(&revision.namespace, &revision.name);
        // Components and images run from their own stores; only packages are unpacked.
        if !dir.exists() && revision.config.runtime.runs_from_package() {
            // Unpacked trees are derived state; rebuild one that went missing.
            let blob = self.paths.blob(&revision.config.package_digest);
            updraft_runtime::package::unpack(&blob, &dir, self.unpack_limits)
                .map_err(|e| format!("unpacking revision {}: {e}", revision.name))?;
        }
        let state = RevisionState::new(revision, &self.scaling);
        state.routable.store(routed, Ordering::Relaxed);
        self.registry.register(state.clone());
        Ok(Some(state))
    }
}

impl RevisionHost for NodeRevisions {
    fn ensure(&self, revision: Revision) -> Result<(), String> {
        self.register(revision, false).map(drop)
    }

    fn stage(&self, staged: StagedRevision) -> Result<(), String> {
        let StagedRevision {
            revision,
            service_config,
        } = staged;
        // Routed as its promotion will route it: the scaler must not stop the first
        // instance of a revision it takes for unrouted.
        let routed = resolve(
            &service_config.traffic,
            &revision.name,
            service_config.rollout.as_ref(),
            now_us(),
        )
        .routes_to(&revision.name);
        let Some(state) = self.register(revision, routed)? else {
            return Ok(());
        };
        let instances = self.instances.clone();
        tokio::runtime::Handle::current().spawn(async move {
            // A revision retired meanwhile has its outcome already.
            state.settle_first_start(match instances.start_first(&state).await {
                Ok(()) => FirstStart::Ready,
                Err(reason) => FirstStart::Failed(reason),
            });
        });
        Ok(())
    }

    fn retire<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        because: Because,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let service = self.registry.get(namespace, name).map(|s| s.revision.service.clone());
            let reason = match (&because, &service) {
                (Because::ServiceDeleted(service), _) => {
                    format!("service {service} in namespace {namespace} was deleted")
                }
                (Because::RevisionDeleted, Some(service)) => {
                    format!("revision {name} of service {service} was deleted")
                }
                (Because::Withdrawn, _) => format!("revision {name} failed to start"),
                _ => format!("revision {name} no longer exists"),
            };
            if let Some(state) = self.registry.unregister(namespace, name, &reason) {
                self.instances.stop_revisions(vec![state]).await;
            }
            let _ = fs::remove_dir_all(self.paths.revision_dir(namespace, name));
            if let (Because::Withdrawn, Some(service)) = (because, service) {
                // A revision that never served leaves no logs in its service's.
                discard_revision_logs(&self.paths, namespace, &service, name);
            }
        })
    }

    fn registered(&self) -> Vec<(String, String)> {
        self.registry
            .all()
            .iter()
            .map(|s| (s.revision.namespace.clone(), s.revision.name.clone()))
            .collect()
    }
}

/// Removes the instance logs of one revision from its service's log folder.
pub fn discard_revision_logs(paths: &Paths, namespace: &str, service: &str, revision: &str) {
    let prefix = format!("{revision}-");
    for entry in fs::read_dir(service_log_dir(&paths.logs, namespace, service))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
