//! Changing a service: a deploy, a settings update or an applied manifest.
//!
//! A change that alters the revision template makes a new revision: unpack the stored
//! package, find its command, and stage the revision in the store. The revision
//! reconciler sees it and starts its first instance; once that is ready the revision
//! is promoted (it and the service's new settings in one write) and the route
//! reconciler routes to it. A failure on the way withdraws what was staged and leaves
//! traffic as it was. A change of the service's own settings alone (traffic,
//! annotations) makes no revision.

use std::sync::Arc;
use updraft_events::announce::{REVISION_FAILED, REVISION_READY, SERVICE_DEPLOYED};

use axum::http::StatusCode;
use updraft_model::annotations::{CLUSTER_LOCAL, VISIBILITY};
use updraft_model::change::{next_config, Current, SettingsChange, TrafficChange};
use updraft_model::knative::DesiredService;
use updraft_model::names::{validate_namespace_name, validate_service_name};
use updraft_model::template::{RevisionTemplate, Source, PACKAGE_IMAGE_PREFIX, WASM_IMAGE_PREFIX};
use updraft_model::traffic::default_traffic;
use updraft_model::{DeploySpec, Namespace, Revision, Service, ServiceConfig, StagedRevision};
use updraft_runtime::clock::now_us;
use updraft_store::{NewRevision, Store};

use crate::locks::ServiceLocks;
use crate::reconcile::Applied;
use crate::revision_build::RevisionBuilder;
use crate::revision_state::Registry;
use crate::ApiError;

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

/// The deploy path, in one direction: a change is validated and written to the store
/// (staged, then promoted once its first instance is ready); the reconcilers do the
/// rest, and the answer waits until the route reconciler has applied it.
pub struct Deployer {
    pub(crate) store: Arc<dyn Store>,
    /// Where a staged revision's first start is told.
    pub(crate) registry: Arc<Registry>,
    pub(crate) build: RevisionBuilder,
    pub(crate) locks: Arc<ServiceLocks>,
    pub(crate) announcer: Arc<crate::announce::Announcer>,
    pub(crate) applied: Applied,
}

/// The namespace, or a refusal naming the one that does not exist.
pub async fn require_namespace(store: &dyn Store, namespace: &str) -> Result<Namespace, ApiError> {
    validate_namespace_name("namespace", namespace)?;
    store
        .namespace(namespace)
        .await?
        .ok_or_else(|| updraft_store::StoreError::NoSuchNamespace(namespace.to_string()).into())
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
                        let _ = std::fs::remove_file(self.build.paths.blob(digest));
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
        crate::progress::report("accepted", format!("{namespace}/{name}: the settings hold"));
        let labels = spec.private.map(|private| {
            let mut labels = existing.as_ref().map(|s| s.config.labels.clone()).unwrap_or_default();
            if private {
                labels.insert(VISIBILITY.to_string(), CLUSTER_LOCAL.to_string());
            } else {
                labels.remove(VISIBILITY);
            }
            labels
        });
        let change = ServiceChange {
            template,
            force_revision: spec.is_fresh(),
            settings: SettingsChange {
                labels,
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
        // What the namespace already runs stays: only a new service or source is weighed.
        let new_source = latest.is_none_or(|l| l.template.image != change.template.image);
        if new_source {
            let source = change.template.validate("template")?;
            crate::quota::admit(&self.build, namespace, existing.is_none(), &source).await?;
        }
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
        let config = self.build.config(namespace, name, rev_name, &template).await?;
        let now = now_us();
        let staged = StagedRevision {
            revision: Revision {
                namespace: namespace.to_string(),
                service: name.to_string(),
                name: rev_name.to_string(),
                generation,
                created_at_us: now,
                template,
                config,
                resource_version: 0,
            },
            service_config: service_config.clone(),
        };
        if let Err(e) = self.store.stage_revision(&staged).await {
            let _ = std::fs::remove_dir_all(self.build.paths.revision_dir(namespace, rev_name));
            return Err(e.into());
        }
        // The revision reconciler registers it and starts its first instance.
        crate::progress::report("start", format!("starting the first instance of {rev_name}"));
        self.applied.revisions(&*self.store).await;
        let state = self.registry.get(namespace, rev_name);
        let started = match &state {
            Some(state) => state.first_started().await,
            None => Err("it could not be prepared on this node; the server log says why".into()),
        };
        if let Err(reason) = started {
            self.announcer.announce(
                namespace,
                REVISION_FAILED,
                name,
                serde_json::json!({"service": name, "revision": rev_name, "reason": reason}),
            );
            self.withdraw(namespace, rev_name).await;
            return Err(match state.is_some_and(|s| s.endpoints.over_quota()) {
                true => ApiError::new(StatusCode::FORBIDDEN, reason),
                false => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("revision {rev_name} failed to start: {reason}"),
                ),
            });
        }
        crate::progress::report("ready", format!("{rev_name} is ready"));
        let revision = &staged.revision;
        let promote = NewRevision {
            namespace,
            service: name,
            name: rev_name,
            template: &revision.template,
            config: &revision.config,
            service_config,
            expected_service_version: previous.map(|s| s.resource_version),
        };
        match self.store.create_revision(promote, revision.created_at_us).await {
            Ok((service, stored)) => {
                debug_assert_eq!(stored.generation, generation);
                self.applied.routes(&*self.store).await;
                let about = serde_json::json!({"service": name, "revision": rev_name});
                self.announcer.announce(namespace, REVISION_READY, name, about.clone());
                self.announcer.announce(namespace, SERVICE_DEPLOYED, name, about);
                Ok(service)
            }
            Err(e) => {
                self.withdraw(namespace, rev_name).await;
                Err(e.into())
            }
        }
    }

    /// Withdraws a staged revision whose deploy failed; the revision reconciler stops
    /// its instance and removes its files and logs before the answer.
    async fn withdraw(&self, namespace: &str, revision: &str) {
        match self.store.withdraw_staged(namespace, revision).await {
            Ok(()) => self.applied.revisions(&*self.store).await,
            Err(e) => tracing::error!(revision, "cannot withdraw the failed revision: {e}"),
        }
    }
}

/// Runs a change to the end in a task of its own. A client that hangs up, or a Ctrl-C
/// of `updraft deploy`, drops the request's future; the change must then still finish,
/// or undo what it started, rather than stop halfway with an instance running.
async fn detached<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(crate::progress::watched(crate::progress::current(), change))
        .await
        .map_err(ApiError::internal)?
}

#[cfg(test)]
mod tests {
    use updraft_gateway::RouteTable;
    use updraft_runtime::clock::now_us;

    use updraft_runtime::package::UnpackLimits;
    use updraft_scaling::ScalingSpec;

    use super::*;
    use crate::instances::RoutedRevisions;
    use crate::node_revisions::NodeRevisions;
    use crate::reconcile::follow;
    use crate::revisions::RevisionReconciler;
    use crate::routes::RouteReconciler;
    use crate::testkit::{get, kit, Kit, COMPONENT};

    struct Running {
        kit: Kit,
        deployer: Arc<Deployer>,
        table: Arc<RouteTable>,
        _stop: tokio::sync::watch::Sender<bool>,
    }

    /// A deployer over the test kit, with the real route and revision reconcilers
    /// following the store.
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
        let (revisions_tx, revisions_rx) = tokio::sync::watch::channel(0);
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        tokio::spawn(follow(
            routes,
            store.clone(),
            listed.revision,
            now_us,
            routes_tx,
            stopped(stop_rx.clone()),
        ));
        let node = NodeRevisions {
            registry: kit.registry.clone(),
            instances: kit.instances.clone(),
            paths: kit.paths.clone(),
            scaling: ScalingSpec::default(),
            unpack_limits: UnpackLimits::default(),
        };
        tokio::spawn(follow(
            RevisionReconciler::new(Arc::new(node)),
            store.clone(),
            listed.revision,
            now_us,
            revisions_tx,
            stopped(stop_rx),
        ));
        let deployer = Arc::new(Deployer {
            store,
            registry: kit.registry.clone(),
            build: RevisionBuilder {
                store: kit.store.clone(),
                images: kit.images.clone(),
                wasm: kit.wasm.clone(),
                paths: kit.paths.clone(),
                unpack_limits: UnpackLimits::default(),
                secrets: Arc::new(
                    crate::secrets::Secrets::load(
                        Arc::new(crate::secrets::SecretKey::load(&kit.paths.root.join("secret.key"), true).unwrap()),
                        &*kit.store,
                    )
                    .await
                    .unwrap(),
                ),
                builds: Arc::new(crate::builds::Builds::new(
                    kit.paths.clone(),
                    None,
                    None,
                    crate::builds::BuildLimits::default(),
                    tokio::sync::broadcast::channel(1).0,
                )),
            },
            locks: Arc::default(),
            applied: Applied {
                routes: routes_rx,
                revisions: revisions_rx,
            },
            announcer: Arc::new(crate::announce::Announcer {
                routing: Arc::new(updraft_events::routing::RoutingCache::new(
                    kit.store.clone(),
                    kit.store.clone(),
                )),
                queue: Arc::new(updraft_events::queue::GroupCommit::start(kit.store.clone(), now_us).unwrap()),
                signals: Arc::default(),
            }),
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
            kit, deployer, table, ..
        } = &running().await;
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
        let Running { kit, deployer, .. } = &running().await;
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

    /// A package whose start the test kit refuses (it runs components only), stored.
    async fn package(kit: &Kit) -> String {
        let mut archive = tar::Builder::new(Vec::new());
        let main = b"print('hello')\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(main.len() as u64);
        header.set_mode(0o644);
        archive.append_data(&mut header, "main.py", &main[..]).unwrap();
        let bytes = archive.into_inner().unwrap();
        let digest = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
        std::fs::write(kit.paths.blob(&digest), &bytes).unwrap();
        kit.store.put_blob(&digest, bytes.len() as u64, 1).await.unwrap();
        digest
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revision_that_cannot_start_is_withdrawn_and_traffic_stays() {
        let Running {
            kit, deployer, table, ..
        } = &running().await;
        deployer.deploy("default", "hello", component()).await.unwrap();
        let digest = package(kit).await;
        let spec = DeploySpec {
            package: Some(digest.clone()),
            ..Default::default()
        };
        let err = deployer.deploy("default", "hello", spec).await.unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            err.message.starts_with("revision hello-00002 failed to start:"),
            "{}",
            err.message
        );
        let service = kit.store.service("default", "hello").await.unwrap().unwrap();
        assert_eq!(service.latest_revision, "hello-00001", "the serving revision stays");
        assert!(kit.store.revision("default", "hello-00002").await.unwrap().is_none());
        assert!(kit.store.staged_revisions().await.unwrap().is_empty(), "withdrawn");
        assert!(kit.registry.get("default", "hello-00002").is_none());
        assert!(!kit.paths.revision_dir("default", "hello-00002").exists());
        assert!(!kit.store.blob_exists(&digest).await.unwrap(), "its upload is gone");
        assert!(table.lookup("hello.default.localhost").is_some());
        assert_eq!(
            kit.store.next_revision_name("default", "hello").await.unwrap(),
            "hello-00002",
            "the name is free for the next deploy"
        );
    }
}
