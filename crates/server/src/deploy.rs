//! A deploy: unpack the stored package for the new revision, find its command, start
//! a first instance, and only once it is ready write the revision in one transaction
//! and route to it. Any failure on the way removes what it made.

use std::sync::Arc;

use axum::http::StatusCode;
use updraft_model::names::{revision_name, validate_namespace_name, validate_service_name};
use updraft_model::package::detect;
use updraft_model::resources::DEFAULT_SCALE_TO_ZERO_AFTER;
use updraft_model::{DeploySpec, Revision, RevisionConfig};
use updraft_runtime::logs::{now_us, service_log_dir};
use updraft_runtime::package::{unpack, DirFiles};

use crate::packages::package_error;
use crate::platform::{Platform, RevisionState};
use crate::views::ServiceView;
use crate::ApiError;

impl Platform {
    pub async fn deploy(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        spec: DeploySpec,
    ) -> Result<ServiceView, ApiError> {
        let digest = spec.package.clone();
        let result = self.deploy_revision(namespace, name, spec).await;
        if result.is_err() {
            self.discard_package_if_unused(&digest);
        }
        result
    }

    async fn deploy_revision(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        spec: DeploySpec,
    ) -> Result<ServiceView, ApiError> {
        validate_namespace_name("namespace", namespace)?;
        validate_service_name("name", name)?;
        let overrides = spec.validate()?;
        if self.store.namespace(namespace)?.is_none() {
            return Err(updraft_store::StoreError::NoSuchNamespace(namespace.to_string()).into());
        }
        if !self.store.blob_exists(&overrides.package_digest)? {
            return Err(ApiError::bad_request(
                "package",
                format!(
                    "no package {} is stored; upload it first (POST /v1/packages)",
                    overrides.package_digest
                ),
            ));
        }
        let _package = self.use_package(&overrides.package_digest);
        let lock = self.deploy_lock(namespace, name);
        let _held = lock.lock().await;
        let generation = self.store.next_revision_generation(namespace, name)?;
        let rev_name = revision_name(name, generation);
        let workdir = self.paths.revision_dir(namespace, &rev_name);
        let _ = std::fs::remove_dir_all(&workdir);
        std::fs::create_dir_all(workdir.parent().expect("revision dirs have a parent")).map_err(ApiError::internal)?;

        let blob = self.paths.blob(&overrides.package_digest);
        let limits = self.unpack_limits();
        let dir = workdir.clone();
        let unpacked = tokio::task::spawn_blocking(move || {
            unpack(&blob, &dir, limits)?;
            Ok::<_, updraft_runtime::package::PackageError>(detect(&DirFiles(&dir)))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(package_error)?;
        let launch = match unpacked {
            Ok(launch) => launch,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&workdir);
                return Err(e.into());
            }
        };

        let mut env = launch.env;
        env.extend(overrides.env);
        let now = now_us();
        let revision = Revision {
            namespace: namespace.to_string(),
            service: name.to_string(),
            name: rev_name.clone(),
            generation,
            created_at_us: now,
            config: RevisionConfig {
                package_digest: overrides.package_digest,
                command: launch.command,
                command_source: launch.source,
                env,
                memory_bytes: overrides.memory_bytes.or(launch.memory_bytes),
                cpu_millis: overrides.cpu_millis.or(launch.cpu_millis),
                scale_to_zero_after_ms: overrides
                    .scale_to_zero_after
                    .unwrap_or(DEFAULT_SCALE_TO_ZERO_AFTER)
                    .as_millis() as u64,
            },
        };
        let state = RevisionState::new(revision.clone());
        let first = match self.start_for_deploy(&state).await {
            Ok(first) => first,
            Err(reason) => {
                self.discard_revision_files(namespace, name, &rev_name);
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("revision {rev_name} failed to start: {reason}"),
                ));
            }
        };
        // The deploy lock makes the store's next number the one we unpacked for.
        match self.store.create_revision(namespace, name, &revision.config, now) {
            Ok((service, _)) => {
                // It is the latest now: the scaler must not see it unrouted before the
                // route table catches up.
                state.routable.store(true, std::sync::atomic::Ordering::Relaxed);
                self.register(state);
                self.rebuild_routes();
                self.service_view(&service, true).map_err(ApiError::internal)
            }
            Err(e) => {
                self.stop_instance(&state, &first).await;
                self.discard_revision_files(namespace, name, &rev_name);
                Err(e.into())
            }
        }
    }

    /// Removes the unpacked tree and instance logs of a revision that was never stored.
    fn discard_revision_files(&self, namespace: &str, service: &str, revision: &str) {
        let _ = std::fs::remove_dir_all(self.paths.revision_dir(namespace, revision));
        let prefix = format!("{revision}-");
        for entry in std::fs::read_dir(service_log_dir(&self.paths.logs, namespace, service))
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
