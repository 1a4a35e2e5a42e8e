//! Changing a service: a deploy, a settings update or an applied manifest.
//!
//! A change that alters the revision template makes a new revision: unpack the stored
//! package, find its command, start a first instance, and only once it is ready write
//! the revision and the service's new settings in one transaction and route to it. Any
//! failure on the way removes what it made and leaves traffic as it was. A change of
//! the service's own settings alone (traffic, annotations) makes no revision.

use std::sync::Arc;

use axum::http::StatusCode;
use updraft_model::annotations::{FUNCTION_HANDLER, FUNCTION_RUNTIME};
use updraft_model::change::{next_config, Current, SettingsChange, TrafficChange};
use updraft_model::knative::DesiredService;
use updraft_model::names::{validate_namespace_name, validate_service_name};
use updraft_model::package::detect;
use updraft_model::revision_config::{self, ImageProcess};
use updraft_model::template::{RevisionTemplate, Source, PACKAGE_IMAGE_PREFIX, WASM_IMAGE_PREFIX};
use updraft_model::traffic::{default_traffic, resolve};
use updraft_model::{DeploySpec, Revision, Service, ServiceConfig};
use updraft_runtime::clock::now_us;
use updraft_runtime::image::stored_digest;
use updraft_runtime::package::{unpack, DirFiles};
use updraft_store::NewRevision;
use updraft_telemetry::logs::service_log_dir;

use updraft_runtime::image::ImageStore;
use updraft_runtime::package::UnpackLimits;
use updraft_runtime::wasm::WasmRuntime;
use updraft_scaling::ScalingSpec;
use updraft_store::Store;

use crate::error::image_error;
use crate::error::package_error;
use crate::instances::Instances;
use crate::locks::ServiceLocks;
use crate::reconcile::Applied;
use crate::revision_state::{Registry, RevisionState};
use crate::{ApiError, Paths};

/// A change to one service, validated.
pub struct ServiceChange {
    pub template: RevisionTemplate,
    /// Make a revision even when the template is unchanged (an explicit deploy).
    pub force_revision: bool,
    pub settings: SettingsChange,
}

/// What a change came to: `created`, `configured` or `unchanged`, the revision it
/// made, and the service as stored.
pub struct Changed {
    pub result: &'static str,
    pub revision: Option<String>,
    pub service: Service,
}

/// The deploy path, in one direction: a change is validated, its revision made (the
/// package unpacked, a first instance ready), and the result written to the store;
/// the answer waits until the route reconciler has applied it.
pub struct Deployer {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) instances: Arc<Instances>,
    pub(crate) images: Arc<ImageStore>,
    pub(crate) wasm: Arc<WasmRuntime>,
    pub(crate) paths: Paths,
    pub(crate) scaling: ScalingSpec,
    pub(crate) unpack_limits: UnpackLimits,
    pub(crate) locks: Arc<ServiceLocks>,
    pub(crate) applied: Applied,
}

/// Refuses a namespace that does not exist, naming it.
pub async fn require_namespace(store: &dyn Store, namespace: &str) -> Result<(), ApiError> {
    validate_namespace_name("namespace", namespace)?;
    match store.namespace(namespace).await? {
        Some(_) => Ok(()),
        None => Err(updraft_store::StoreError::NoSuchNamespace(namespace.to_string()).into()),
    }
}

impl Deployer {
    /// `updraft deploy` and `updraft update`: a [`DeploySpec`] on top of the latest revision.
    pub async fn deploy(self: &Arc<Self>, namespace: &str, name: &str, spec: DeploySpec) -> Result<Service, ApiError> {
        let deployer = self.clone();
        let (namespace, name) = (namespace.to_string(), name.to_string());
        detached(async move {
            let package = spec.package.clone().or_else(|| spec.wasm.clone());
            let result = deployer.deploy_spec(&namespace, &name, spec).await;
            if let (Err(_), Some(digest)) = (&result, package) {
                // A refused deploy leaves nothing behind, its upload included.
                deployer.discard_package_if_unused(&digest).await;
            }
            result
        })
        .await
    }

    /// Drops a package that no revision and no deploy under way uses: a failed deploy
    /// leaves nothing behind.
    pub async fn discard_package_if_unused(&self, digest: &str) {
        self.locks
            .discard_unless_used(digest, async {
                if let Ok(unused) = self.store.unreferenced_blobs(i64::MAX).await {
                    if unused.iter().any(|d| d == digest) {
                        let _ = std::fs::remove_file(self.paths.blob(digest));
                        let _ = self.store.delete_blob(digest).await;
                    }
                }
            })
            .await
    }

    async fn deploy_spec(self: &Arc<Self>, namespace: &str, name: &str, spec: DeploySpec) -> Result<Service, ApiError> {
        validate_namespace_name("namespace", namespace)?;
        validate_service_name("name", name)?;
        require_namespace(&*self.store, namespace).await?;
        let existing = self.store.service(namespace, name).await?;
        let latest = match &existing {
            Some(svc) => self.store.revision(namespace, &svc.latest_revision).await?,
            None => None,
        };
        let template = spec.template(latest.as_ref().map(|r| &r.template))?;
        let annotations = spec.service_annotations(
            &existing
                .as_ref()
                .map(|s| s.config.annotations.clone())
                .unwrap_or_default(),
        )?;
        let change = ServiceChange {
            template,
            force_revision: spec.is_fresh(),
            settings: SettingsChange {
                labels: None,
                annotations,
                traffic: if spec.no_traffic {
                    TrafficChange::NoTrafficForNew
                } else {
                    TrafficChange::Keep
                },
            },
        };
        Ok(self.change_service(namespace, name, change).await?.service)
    }

    /// `updraft apply`: a Knative Service as desired state.
    pub async fn apply(self: &Arc<Self>, desired: DesiredService) -> Result<Changed, ApiError> {
        let deployer = self.clone();
        detached(async move { deployer.apply_desired(desired).await }).await
    }

    async fn apply_desired(self: &Arc<Self>, desired: DesiredService) -> Result<Changed, ApiError> {
        if let Err(e) = require_namespace(&*self.store, &desired.namespace).await {
            let image = &desired.template.image;
            if let Some(digest) = image
                .strip_prefix(PACKAGE_IMAGE_PREFIX)
                .or_else(|| image.strip_prefix(WASM_IMAGE_PREFIX))
            {
                self.discard_package_if_unused(digest).await;
            }
            return Err(e);
        }
        let change = ServiceChange {
            template: desired.template,
            force_revision: false,
            settings: SettingsChange {
                labels: Some(desired.labels),
                annotations: desired.annotations,
                traffic: TrafficChange::Set(desired.traffic.unwrap_or_else(default_traffic)),
            },
        };
        self.change_service(&desired.namespace, &desired.name, change).await
    }

    async fn change_service(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        change: ServiceChange,
    ) -> Result<Changed, ApiError> {
        let source = change.template.validate("template")?;
        let Some(digest) = source.uploaded_blob().map(str::to_string) else {
            return self.change_service_locked(namespace, name, change).await;
        };
        // Marked in use before the check, so it cannot be discarded after it.
        let package = self.locks.use_package(&digest).await;
        if !self.store.blob_exists(&digest).await? {
            let field = if matches!(source, Source::Wasm { .. }) {
                "wasm"
            } else {
                "package"
            };
            return Err(ApiError::bad_request(
                field,
                format!("no {field} {digest} is stored; upload it first (POST /v1/packages)"),
            ));
        }
        let result = self.change_service_locked(namespace, name, change).await;
        if result.is_err() {
            drop(package);
            self.discard_package_if_unused(&digest).await;
        }
        result
    }

    async fn change_service_locked(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        change: ServiceChange,
    ) -> Result<Changed, ApiError> {
        let lock = self.locks.service(namespace, name);
        let _held = lock.lock().await;
        let existing = self.store.service(namespace, name).await?;
        let revisions = self.store.revisions(namespace, name).await?;
        let latest = existing
            .as_ref()
            .and_then(|s| revisions.iter().find(|r| r.name == s.latest_revision));
        let unchanged = latest.is_some_and(|l| l.template.same_revision(&change.template));
        let new_name = if unchanged && !change.force_revision {
            None
        } else {
            Some(
                self.new_revision_name(namespace, name, &change.template, latest)
                    .await?,
            )
        };

        let names: Vec<&str> = revisions.iter().map(|r| r.name.as_str()).collect();
        let current = Current {
            service: name,
            config: existing.as_ref().map(|s| &s.config),
            latest: latest.map(|l| l.name.as_str()),
            revisions: &names,
        };
        let now = now_us();
        let config = next_config(current, change.settings, new_name.as_deref(), now)?;

        let Some(rev_name) = new_name else {
            let service = match existing {
                Some(svc) if svc.config == config => {
                    return Ok(Changed {
                        result: "unchanged",
                        revision: None,
                        service: svc,
                    })
                }
                Some(svc) => {
                    self.store
                        .update_service_config(namespace, name, &config, svc.resource_version, now)
                        .await?
                }
                None => {
                    return Err(ApiError::not_found(format!(
                        "service {name:?} does not exist in namespace {namespace:?}"
                    )))
                }
            };
            self.applied.routes(&*self.store).await;
            return Ok(Changed {
                result: "configured",
                revision: None,
                service,
            });
        };
        let created = existing.is_none();
        let service = self
            .create_revision(namespace, name, &rev_name, existing.as_ref(), change.template, &config)
            .await?;
        Ok(Changed {
            result: if created { "created" } else { "configured" },
            revision: Some(rev_name),
            service,
        })
    }

    /// The new revision's name: the template's own, or the next generated one.
    async fn new_revision_name(
        &self,
        namespace: &str,
        service: &str,
        template: &RevisionTemplate,
        latest: Option<&Revision>,
    ) -> Result<String, ApiError> {
        match &template.name {
            Some(requested) => {
                if latest.is_some_and(|l| &l.name == requested) {
                    return Err(ApiError::bad_request(
                        "spec.template.metadata.name",
                        format!("{requested:?} is the name of the latest revision, but the template changed; give the new revision a new name or leave the name out"),
                    ));
                }
                if let Some(taken) = self.store.revision(namespace, requested).await? {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        format!(
                            "spec.template.metadata.name: revision {requested:?} already exists (service {}); revisions never change, so give the new one a new name",
                            taken.service
                        ),
                    ));
                }
                Ok(requested.clone())
            }
            None => Ok(self.store.next_revision_name(namespace, service).await?),
        }
    }

    async fn create_revision(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        rev_name: &str,
        previous: Option<&Service>,
        template: RevisionTemplate,
        service_config: &ServiceConfig,
    ) -> Result<Service, ApiError> {
        // The deploy lock keeps the store's next generation the one counted here; the
        // store refuses the write if another writer changed the service meanwhile.
        let generation = previous.map_or(1, |s| s.generation + 1);
        let workdir = self.paths.revision_dir(namespace, rev_name);
        let _ = std::fs::remove_dir_all(&workdir);
        std::fs::create_dir_all(workdir.parent().expect("revision dirs have a parent")).map_err(ApiError::internal)?;
        let config = match template.validate("template")? {
            Source::Package { digest } => {
                let blob = self.paths.blob(&digest);
                let limits = self.unpack_limits;
                let dir = workdir.clone();
                let unpacked = tokio::task::spawn_blocking(move || {
                    unpack(&blob, &dir, limits)?;
                    Ok::<_, updraft_runtime::package::PackageError>(detect(&DirFiles(&dir)))
                })
                .await
                .map_err(ApiError::internal)?
                .map_err(package_error)?;
                let function = template
                    .annotations
                    .get(FUNCTION_RUNTIME)
                    .zip(template.annotations.get(FUNCTION_HANDLER));
                let resolved = match function {
                    Some((runtime, handler)) => revision_config::for_function(
                        &template,
                        &digest,
                        runtime,
                        handler,
                        workdir.join(handler).exists(),
                    ),
                    None => revision_config::for_package(&template, &digest, unpacked),
                };
                match resolved {
                    Ok(config) => config,
                    Err(e) => {
                        let _ = std::fs::remove_dir_all(&workdir);
                        return Err(e.into());
                    }
                }
            }
            Source::Wasm { digest } => {
                // Compiled (and cached) now: a file that is not a wasi:http component
                // is refused before anything is stored.
                let wasm = self.wasm.clone();
                let blob = self.paths.blob(&digest);
                let checked = digest.clone();
                tokio::task::spawn_blocking(move || wasm.check(&checked, &blob))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(|e| ApiError::bad_request("wasm", format!("is not a usable wasi:http component: {e}")))?;
                revision_config::for_component(&template, &digest)
            }
            Source::Image { reference } => {
                let image = match stored_digest(&reference) {
                    Some(digest) => self.images.get(digest).ok_or_else(|| {
                        ApiError::bad_request(
                            "image",
                            format!("no image {digest} is stored; import it first (POST /v1/images)"),
                        )
                    })?,
                    None => self.images.pull(&reference, &|_| {}).await.map_err(image_error)?,
                };
                // Recorded like an upload, so revisions reference it and an unused
                // image is collected like an unused package.
                self.store
                    .put_blob(&image.info.digest, image.info.size, now_us())
                    .await?;
                revision_config::for_image(
                    &template,
                    ImageProcess {
                        digest: &image.info.digest,
                        entrypoint: &image.info.entrypoint,
                        cmd: &image.info.cmd,
                    },
                )?
            }
        };
        let now = now_us();
        let revision = Revision {
            namespace: namespace.to_string(),
            service: name.to_string(),
            name: rev_name.to_string(),
            generation,
            created_at_us: now,
            template,
            config,
            resource_version: 0,
        };
        let state = RevisionState::new(revision.clone(), &self.scaling);
        let first = match self.instances.start_for_deploy(&state).await {
            Ok(first) => first,
            Err(reason) => {
                self.discard_revision_files(namespace, name, rev_name);
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("revision {rev_name} failed to start: {reason}"),
                ));
            }
        };
        let new = NewRevision {
            namespace,
            service: name,
            name: rev_name,
            template: &revision.template,
            config: &revision.config,
            service_config,
            expected_service_version: previous.map(|s| s.resource_version),
        };
        // Registered before the write, as routed if it will be: the route reconciler
        // may see the write first, and the scaler must not stop the first instance of
        // a revision it takes for unrouted.
        let routed =
            resolve(&service_config.traffic, rev_name, service_config.rollout.as_ref(), now).routes_to(rev_name);
        state.routable.store(routed, std::sync::atomic::Ordering::Relaxed);
        self.registry.register(state.clone());
        match self.store.create_revision(new, now).await {
            Ok((service, stored)) => {
                debug_assert_eq!(stored.generation, generation);
                self.applied.routes(&*self.store).await;
                Ok(service)
            }
            Err(e) => {
                self.registry.unregister(namespace, rev_name, "its deploy failed");
                self.instances.stop_instance(&state, &first).await;
                self.discard_revision_files(namespace, name, rev_name);
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

/// Runs a change to the end in a task of its own. A client that hangs up, or a Ctrl-C
/// of `updraft deploy`, drops the request's future; the change must then still finish,
/// or undo what it started, rather than stop halfway with an instance running.
async fn detached<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(change).await.map_err(ApiError::internal)?
}

#[cfg(test)]
mod tests {
    use updraft_gateway::RouteTable;
    use updraft_runtime::clock::now_us;

    use super::*;
    use crate::instances::RoutedRevisions;
    use crate::reconcile::follow;
    use crate::routes::RouteReconciler;
    use crate::testkit::{get, kit, Kit, COMPONENT};

    struct Running {
        kit: Kit,
        deployer: Arc<Deployer>,
        table: Arc<RouteTable>,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    /// A deployer over the test kit, with the real route reconciler following the store.
    async fn running() -> Running {
        let kit = kit().await;
        let store: Arc<dyn Store> = kit.store.clone();
        let table = Arc::new(RouteTable::default());
        let targets = Arc::new(RoutedRevisions {
            registry: kit.registry.clone(),
            instances: kit.instances.clone(),
        });
        let listed = store.snapshot().await.unwrap();
        let mut routes = RouteReconciler::new("localhost", table.clone(), targets);
        routes.reset(&listed, now_us());
        let (routes_tx, routes_rx) = tokio::sync::watch::channel(0);
        let (_, revisions_rx) = tokio::sync::watch::channel(0);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(follow(
            routes,
            store.clone(),
            listed.revision,
            now_us,
            routes_tx,
            async {
                let _ = stop_rx.await;
            },
        ));
        let deployer = Arc::new(Deployer {
            store,
            registry: kit.registry.clone(),
            instances: kit.instances.clone(),
            images: kit.images.clone(),
            wasm: kit.wasm.clone(),
            paths: kit.paths.clone(),
            scaling: ScalingSpec::default(),
            unpack_limits: UnpackLimits::default(),
            locks: Arc::default(),
            applied: Applied {
                routes: routes_rx,
                revisions: revisions_rx,
            },
        });
        Running {
            kit,
            deployer,
            table,
            _stop: stop,
        }
    }

    fn component() -> DeploySpec {
        DeploySpec {
            wasm: Some(COMPONENT.into()),
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deploy_is_stored_running_and_routed_when_it_answers() {
        let Running {
            kit,
            deployer,
            table,
            _stop,
        } = running().await;
        let service = deployer.deploy("default", "hello", component()).await.unwrap();
        assert_eq!(service.latest_revision, "hello-00001");
        let stored = kit.store.revision("default", "hello-00001").await.unwrap().unwrap();
        assert_eq!(stored.config.runtime, updraft_model::RuntimeKind::Wasm);
        let state = kit.registry.get("default", "hello-00001").expect("registered");
        assert_eq!(state.endpoints.ready_count(), 1, "its first instance is ready");
        assert!(
            table.lookup("hello.default.localhost").is_some(),
            "routed before the answer"
        );
        let address = state.instances()[0].endpoint.address;
        let answer = tokio::task::spawn_blocking(move || get(address, "hello", "/"))
            .await
            .unwrap();
        assert!(answer.contains("hello from wasm\n"), "{answer}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_deploy_changes_nothing_and_leaves_nothing() {
        let Running {
            kit, deployer, _stop, ..
        } = running().await;
        deployer.deploy("default", "hello", component()).await.unwrap();
        let bogus = "sha256:0000000000000000000000000000000000000000000000000000000000000002";
        std::fs::write(kit.paths.blob(bogus), b"not a component").unwrap();
        kit.store.put_blob(bogus, 15, 1).await.unwrap();
        let spec = DeploySpec {
            wasm: Some(bogus.into()),
            ..Default::default()
        };
        let err = deployer.deploy("default", "hello", spec).await.unwrap_err();
        assert_eq!(err.field.as_deref(), Some("wasm"), "{}", err.message);
        let service = kit.store.service("default", "hello").await.unwrap().unwrap();
        assert_eq!(service.latest_revision, "hello-00001", "the serving revision stays");
        assert!(kit.registry.get("default", "hello-00002").is_none());
        assert!(
            !kit.store.blob_exists(bogus).await.unwrap(),
            "the refused upload is gone"
        );
        assert!(!kit.paths.blob(bogus).exists());

        let missing = deployer.deploy("nowhere", "hello", component()).await.unwrap_err();
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.message);
    }
}
