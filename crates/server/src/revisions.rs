//! The revision reconciler: follows revisions, staged revisions and services in the
//! store and keeps the registry of revisions this node can run. A revision that
//! appears is made ready to run (its package unpacked, its state registered); a staged
//! one also gets its first instance started, which its deploy waits on. One that is
//! deleted, alone or with its service, or withdrawn, leaves the registry: requests
//! held for it are answered 404 with the reason, and its instances and unpacked files
//! go. Write sites only write; this reconciler does the rest, after a crash by the
//! same path (list, then watch).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use updraft_model::{Revision, StagedRevision};
use updraft_store::{Change, Kind, Resource, Snapshot, WatchFilter};

use crate::reconcile::Reconciler;

/// Why a revision left the registry: what requests held for it are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Because {
    /// Its service was deleted, with it.
    ServiceDeleted(String),
    /// It was deleted by itself.
    RevisionDeleted,
    /// Its deploy failed: its first instance did not become ready.
    Withdrawn,
    /// A fresh list no longer has it.
    Gone,
}

/// What one write (or a fresh list) asks of the registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The revision exists: this node must be able to run it.
    Ensure(Box<Revision>),
    /// A deploy staged the revision: this node starts its first instance.
    Stage(Box<StagedRevision>),
    Retire {
        namespace: String,
        name: String,
        because: Because,
    },
}

/// The registry the reconciler keeps, as the platform provides it.
pub trait RevisionHost: Send + Sync + 'static {
    /// Registers a revision unless it is known (it was staged, or listed at start),
    /// unpacking its package if the tree is missing. Blocking file I/O.
    fn ensure(&self, revision: Revision) -> Result<(), String>;
    /// Registers a staged revision as [`RevisionHost::ensure`] does, routed as its
    /// promotion would route it, and starts its first instance, whose outcome the
    /// state tells its deploy. Blocking file I/O; the start runs on.
    fn stage(&self, staged: StagedRevision) -> Result<(), String>;
    /// Takes a revision out of the registry, answers its held requests with the
    /// reason, stops its instances and removes its unpacked tree.
    fn retire<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        because: Because,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
    /// (namespace, revision) of every registered revision.
    fn registered(&self) -> Vec<(String, String)>;
}

/// The actions the changes of one write ask for. A write that deletes a service
/// deletes its revisions in the same write: those are retired because of it. A write
/// that removes a staged revision and puts the revision promoted it: nothing retires.
pub fn plan(changes: &[Change]) -> Vec<Action> {
    let put: HashSet<(&str, &str)> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Put(Resource::Revision(r)) => Some((r.namespace.as_str(), r.name.as_str())),
            _ => None,
        })
        .collect();
    let deleted_services: HashMap<&str, &str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Delete {
                kind: Kind::Service,
                namespace,
                name,
            } => Some((namespace.as_str(), name.as_str())),
            _ => None,
        })
        .collect();
    changes
        .iter()
        .filter_map(|change| match change {
            Change::Put(Resource::Revision(revision)) => Some(Action::Ensure(revision.clone())),
            Change::Put(Resource::Staged(staged)) => Some(Action::Stage(staged.clone())),
            Change::Delete {
                kind: Kind::Staged,
                namespace,
                name,
            } if !put.contains(&(namespace.as_str(), name.as_str())) => Some(Action::Retire {
                namespace: namespace.clone(),
                name: name.clone(),
                because: Because::Withdrawn,
            }),
            Change::Delete {
                kind: Kind::Revision,
                namespace,
                name,
            } => Some(Action::Retire {
                namespace: namespace.clone(),
                name: name.clone(),
                because: match deleted_services.get(namespace.as_str()) {
                    Some(service) => Because::ServiceDeleted(service.to_string()),
                    None => Because::RevisionDeleted,
                },
            }),
            _ => None,
        })
        .collect()
}

/// The actions a fresh list asks for: every listed revision ensured, every staged one
/// staged, every registered one the list lacks retired.
pub fn plan_reset(listed: &[Revision], staged: &[StagedRevision], registered: &[(String, String)]) -> Vec<Action> {
    let known: HashSet<(&str, &str)> = listed
        .iter()
        .chain(staged.iter().map(|s| &s.revision))
        .map(|r| (r.namespace.as_str(), r.name.as_str()))
        .collect();
    let mut actions: Vec<Action> = listed.iter().map(|r| Action::Ensure(Box::new(r.clone()))).collect();
    actions.extend(staged.iter().map(|s| Action::Stage(Box::new(s.clone()))));
    for (namespace, name) in registered {
        if !known.contains(&(namespace.as_str(), name.as_str())) {
            actions.push(Action::Retire {
                namespace: namespace.clone(),
                name: name.clone(),
                because: Because::Gone,
            });
        }
    }
    actions
}

pub struct RevisionReconciler {
    host: Arc<dyn RevisionHost>,
}

impl RevisionReconciler {
    /// A reconciler over a registry that already reflects the list it starts from
    /// (the platform loads it at start, before anything is served).
    pub fn new(host: Arc<dyn RevisionHost>) -> Self {
        RevisionReconciler { host }
    }

    async fn act(&self, actions: Vec<Action>) {
        let mut retiring = Vec::new();
        for action in actions {
            let host = self.host.clone();
            let (name, prepared) = match action {
                Action::Ensure(revision) => (
                    revision.name.clone(),
                    tokio::task::spawn_blocking(move || host.ensure(*revision)),
                ),
                Action::Stage(staged) => (
                    staged.revision.name.clone(),
                    tokio::task::spawn_blocking(move || host.stage(*staged)),
                ),
                Action::Retire {
                    namespace,
                    name,
                    because,
                } => {
                    retiring.push((namespace, name, because));
                    continue;
                }
            };
            match prepared.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(revision = %name, "cannot prepare the revision: {e}"),
                Err(e) => tracing::error!(revision = %name, "cannot prepare the revision: {e}"),
            }
        }
        // A write's revisions drain together, not one after another.
        let retires = retiring
            .iter()
            .map(|(namespace, name, because)| self.host.retire(namespace, name, because.clone()));
        futures_util::future::join_all(retires).await;
    }
}

#[async_trait::async_trait]
impl Reconciler for RevisionReconciler {
    fn name(&self) -> &'static str {
        "revision registry"
    }

    fn filter(&self) -> WatchFilter {
        followed()
    }

    async fn on_write(&mut self, changes: Vec<Change>, _now_us: i64) {
        self.act(plan(&changes)).await;
    }

    async fn on_list(&mut self, snapshot: &Snapshot, _now_us: i64) {
        let actions = plan_reset(&snapshot.revisions, &snapshot.staged, &self.host.registered());
        self.act(actions).await;
    }
}

/// A service delete carries its revisions' deletes; services are followed to name it.
fn followed() -> WatchFilter {
    WatchFilter::kinds(&[Kind::Service, Kind::Revision, Kind::Staged])
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use std::time::Duration;

    use tokio::sync::watch;
    use updraft_store::{SqliteStore, Store};

    use super::*;
    use crate::reconcile::follow;
    use crate::testkit::component_revision;

    fn now() -> i64 {
        1
    }

    fn delete(kind: Kind, name: &str) -> Change {
        Change::Delete {
            kind,
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn retire(name: &str, because: Because) -> Action {
        Action::Retire {
            namespace: "default".into(),
            name: name.into(),
            because,
        }
    }

    #[test]
    fn a_write_is_planned_by_what_it_changed() {
        let rev = component_revision("web", "web-00002");
        let cases: Vec<(&str, Vec<Change>, Vec<Action>)> = vec![
            (
                "a new revision is ensured",
                vec![Change::Put(Resource::Revision(Box::new(rev.clone())))],
                vec![Action::Ensure(Box::new(rev.clone()))],
            ),
            (
                "a revision deleted alone",
                vec![delete(Kind::Revision, "web-00001")],
                vec![retire("web-00001", Because::RevisionDeleted)],
            ),
            (
                "a service deleted with its revisions",
                vec![
                    delete(Kind::Service, "web"),
                    delete(Kind::Revision, "web-00001"),
                    delete(Kind::Revision, "web-00002"),
                ],
                vec![
                    retire("web-00001", Because::ServiceDeleted("web".into())),
                    retire("web-00002", Because::ServiceDeleted("web".into())),
                ],
            ),
            (
                "a staged revision gets its first instance",
                vec![Change::Put(Resource::Staged(Box::new(staged("web-00002"))))],
                vec![Action::Stage(Box::new(staged("web-00002")))],
            ),
            (
                "a staged revision promoted is only ensured",
                vec![
                    delete(Kind::Staged, "web-00002"),
                    Change::Put(Resource::Revision(Box::new(rev.clone()))),
                    Change::Put(Resource::Service(Box::new(service("web")))),
                ],
                vec![Action::Ensure(Box::new(rev.clone()))],
            ),
            (
                "a staged revision withdrawn",
                vec![delete(Kind::Staged, "web-00002")],
                vec![retire("web-00002", Because::Withdrawn)],
            ),
            (
                "a service's settings change nothing here",
                vec![delete(Kind::Namespace, "team"), delete(Kind::Trigger, "tick")],
                vec![],
            ),
        ];
        for (what, changes, expected) in cases {
            assert_eq!(plan(&changes), expected, "{what}");
        }
    }

    #[test]
    fn a_fresh_list_keeps_deploys_under_way() {
        let listed = [component_revision("web", "web-00001")];
        let staged = [staged("new-00001")];
        let registered = [
            ("default".to_string(), "web-00001".to_string()),
            ("default".to_string(), "old-00001".to_string()),
            ("default".to_string(), "new-00001".to_string()),
        ];
        let actions = plan_reset(&listed, &staged, &registered);
        assert_eq!(
            actions,
            [
                Action::Ensure(Box::new(listed[0].clone())),
                Action::Stage(Box::new(staged[0].clone())),
                retire("old-00001", Because::Gone),
            ]
        );
    }

    fn staged(name: &str) -> StagedRevision {
        let service = name.split('-').next().unwrap();
        StagedRevision {
            revision: component_revision(service, name),
            service_config: Default::default(),
        }
    }

    fn service(name: &str) -> updraft_model::Service {
        updraft_model::Service {
            namespace: "default".into(),
            name: name.into(),
            latest_revision: format!("{name}-00002"),
            generation: 2,
            created_at_us: 1,
            updated_at_us: 1,
            config: Default::default(),
            resource_version: 0,
        }
    }

    /// A registry that records what it was asked.
    #[derive(Default)]
    struct Registry {
        known: Mutex<HashSet<String>>,
        staged: Mutex<Vec<String>>,
        retired: Mutex<Vec<(String, Because)>>,
    }

    impl RevisionHost for Registry {
        fn ensure(&self, revision: Revision) -> Result<(), String> {
            self.known.lock().unwrap().insert(revision.name);
            Ok(())
        }

        fn stage(&self, staged: StagedRevision) -> Result<(), String> {
            self.staged.lock().unwrap().push(staged.revision.name.clone());
            self.ensure(staged.revision)
        }

        fn retire<'a>(
            &'a self,
            _namespace: &'a str,
            name: &'a str,
            because: Because,
        ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
            Box::pin(async move {
                self.known.lock().unwrap().remove(name);
                self.retired.lock().unwrap().push((name.to_string(), because));
            })
        }

        fn registered(&self) -> Vec<(String, String)> {
            let known = self.known.lock().unwrap();
            known.iter().map(|name| ("default".to_string(), name.clone())).collect()
        }
    }

    async fn deploy(store: &Arc<dyn Store>, service: &str) -> u64 {
        let (svc, _) = updraft_store::contract::deploy(&**store, "default", service)
            .await
            .unwrap();
        svc.resource_version
    }

    async fn caught_up(applied: &mut watch::Receiver<u64>, written: u64) {
        tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|at| *at >= written))
            .await
            .expect("the reconciler caught up")
            .unwrap();
    }

    #[tokio::test]
    async fn the_registry_follows_writes_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db"), 1).unwrap());
        store.put_blob(updraft_store::contract::DIGEST, 1, 1).await.unwrap();
        let registry = Arc::new(Registry::default());
        let listed = store.snapshot().await.unwrap().revision;
        let reconciler = RevisionReconciler::new(registry.clone());
        let (applied_tx, mut applied) = watch::channel(0);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(follow(reconciler, store.clone(), listed, now, applied_tx, async {
            let _ = stop_rx.await;
        }));

        deploy(&store, "web").await;
        deploy(&store, "web").await;
        let written = deploy(&store, "api").await;
        caught_up(&mut applied, written).await;
        let known = |registry: &Registry| {
            let mut names: Vec<String> = registry.known.lock().unwrap().iter().cloned().collect();
            names.sort();
            names
        };
        assert_eq!(known(&registry), ["api-00001", "web-00001", "web-00002"]);

        store.delete_revision("default", "web-00001").await.unwrap();
        store.delete_service("default", "api").await.unwrap();
        caught_up(&mut applied, store.current_revision().await.unwrap()).await;
        assert_eq!(known(&registry), ["web-00002"]);
        assert_eq!(
            *registry.retired.lock().unwrap(),
            [
                ("web-00001".to_string(), Because::RevisionDeleted),
                ("api-00001".to_string(), Because::ServiceDeleted("api".into())),
            ]
        );

        // A staged revision is started; promoted it stays, withdrawn it goes.
        let web = updraft_store::contract::staged("default", "web", "web-00003");
        store.stage_revision(&web).await.unwrap();
        let api = updraft_store::contract::staged("default", "api", "api-00001");
        store.stage_revision(&api).await.unwrap();
        caught_up(&mut applied, store.current_revision().await.unwrap()).await;
        assert_eq!(*registry.staged.lock().unwrap(), ["web-00003", "api-00001"]);
        deploy(&store, "web").await;
        store.withdraw_staged("default", "api-00001").await.unwrap();
        caught_up(&mut applied, store.current_revision().await.unwrap()).await;
        assert_eq!(known(&registry), ["web-00002", "web-00003"]);
        assert_eq!(
            registry.retired.lock().unwrap().last(),
            Some(&("api-00001".to_string(), Because::Withdrawn))
        );

        // Writes it does not follow still move it on.
        store.create_namespace("team", 2).await.unwrap();
        caught_up(&mut applied, store.current_revision().await.unwrap()).await;
        stop_tx.send(()).unwrap();
        running.await.unwrap();
    }

    #[tokio::test]
    async fn a_compacted_log_lists_again() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_with_change_log(&dir.path().join("db"), 1, 2).unwrap());
        store.put_blob(updraft_store::contract::DIGEST, 1, 1).await.unwrap();
        let registry = Arc::new(Registry::default());
        registry.ensure(component_revision("gone", "gone-00001")).unwrap();
        let listed = store.snapshot().await.unwrap().revision;
        let reconciler = RevisionReconciler::new(registry.clone());
        // Written before it runs, past what the change log keeps: it must list again.
        deploy(&store, "web").await;
        deploy(&store, "web").await;
        let written = deploy(&store, "web").await;
        let (applied_tx, mut applied) = watch::channel(0);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(follow(reconciler, store.clone(), listed, now, applied_tx, async {
            let _ = stop_rx.await;
        }));
        caught_up(&mut applied, written).await;
        let mut names: Vec<String> = registry.known.lock().unwrap().iter().cloned().collect();
        names.sort();
        assert_eq!(names, ["web-00001", "web-00002", "web-00003"]);
        assert_eq!(
            *registry.retired.lock().unwrap(),
            [("gone-00001".to_string(), Because::Gone)]
        );
        stop_tx.send(()).unwrap();
        running.await.unwrap();
    }
}
