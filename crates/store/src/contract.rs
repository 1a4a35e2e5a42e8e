//! What every [`Store`] implementation promises about revisions, compare-and-swap
//! and the change log. An implementation runs [`all`] with a function that opens an
//! empty store keeping the given number of revisions in its change log.

use std::sync::Arc;
use std::time::Duration;

use updraft_model::traffic::{Target, TrafficTarget};
use updraft_model::{Revision, RevisionConfig, RevisionTemplate, ServiceConfig, StagedRevision};

use updraft_model::auth::{AuditEntry, Grant, Role, TokenRecord};
use updraft_model::domain::DomainMapping;

use crate::watch::{Change, Kind, Resource, Watch, WatchFilter, WatchStep};
use crate::{NewRevision, SecretRecord, Store, StoreError};

/// Opens an empty store whose change log keeps this many revisions.
pub type OpenStore<'a> = &'a dyn Fn(u64) -> Arc<dyn Store>;

/// The package digest [`deploy`] deploys; put its blob first.
pub const DIGEST: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

/// Runs every case; panics on the first broken promise.
pub async fn all(open: OpenStore<'_>) {
    writes_number_the_store_and_stamp_resources(open(1000)).await;
    updates_compare_the_version_they_read(open(1000)).await;
    the_log_replays_writes_in_order(open(1000)).await;
    filters_and_pages_keep_whole_writes(open(1000)).await;
    a_compacted_log_says_so(open(3)).await;
    a_watch_streams_later_writes(open(1000)).await;
    a_staged_revision_is_promoted_or_withdrawn(open(1000)).await;
    tokens_are_kept_by_id_and_revoked(open(1000)).await;
    the_audit_log_reads_back_in_order(open(1000)).await;
    secrets_are_kept_per_namespace(open(1000)).await;
    a_domain_is_held_by_one_namespace_and_watched(open(1000)).await;
    a_namespace_goes_only_empty_and_takes_what_it_held(open(1000)).await;
}

fn config() -> RevisionConfig {
    RevisionConfig {
        package_digest: DIGEST.into(),
        command: vec!["python3".into(), "main.py".into()],
        command_source: "main.py".into(),
        env: Default::default(),
        env_secrets: Default::default(),
        memory_bytes: None,
        cpu_millis: None,
        scale_to_zero_after_ms: 60_000,
        readiness: None,
        runtime: updraft_model::RuntimeKind::Process,
        allowed_hosts: Vec::new(),
        layers: Vec::new(),
    }
}

/// Writes the service's next revision and its settings, as a deploy's last write
/// does (for other crates' tests too).
pub async fn deploy(
    store: &dyn Store,
    namespace: &str,
    service: &str,
) -> crate::Result<(updraft_model::Service, updraft_model::Revision)> {
    write_next_revision(store, namespace, service, &config(), 1).await
}

/// Writes the service's next revision, running `config`, at `now_us`, over the
/// service version it reads first.
pub async fn write_next_revision(
    store: &dyn Store,
    namespace: &str,
    service: &str,
    config: &RevisionConfig,
    now_us: i64,
) -> crate::Result<(updraft_model::Service, updraft_model::Revision)> {
    let expected_service_version = store.service(namespace, service).await?.map(|s| s.resource_version);
    let name = store.next_revision_name(namespace, service).await?;
    store
        .create_revision(
            NewRevision {
                namespace,
                service,
                name: &name,
                template: &RevisionTemplate::for_package(&config.package_digest),
                config,
                service_config: &ServiceConfig::default(),
                expected_service_version,
            },
            now_us,
        )
        .await
}

async fn with_blob(store: Arc<dyn Store>) -> Arc<dyn Store> {
    store.put_blob(DIGEST, 10, 0).await.unwrap();
    store
}

async fn writes_number_the_store_and_stamp_resources(store: Arc<dyn Store>) {
    let store = with_blob(store).await;
    let start = store.current_revision().await.unwrap();
    let team = store.create_namespace("team", 1).await.unwrap();
    assert_eq!(team.resource_version, start + 1);
    let (svc, rev) = deploy(&*store, "team", "web").await.unwrap();
    assert_eq!(svc.resource_version, start + 2, "one write, one revision");
    assert_eq!(rev.resource_version, start + 2);
    assert_eq!(store.current_revision().await.unwrap(), start + 2);
    let read = store.service("team", "web").await.unwrap().unwrap();
    assert_eq!(read.resource_version, svc.resource_version, "reads carry the version");
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.revision, start + 2);
    assert!(snapshot.services.iter().any(|s| s == &svc));
    assert!(snapshot.revisions.iter().any(|r| r == &rev));
    assert!(snapshot.namespaces.iter().any(|n| n == &team));
}

async fn updates_compare_the_version_they_read(store: Arc<dyn Store>) {
    let store = with_blob(store).await;
    let (first, _) = deploy(&*store, "default", "web").await.unwrap();
    let (second, _) = deploy(&*store, "default", "web").await.unwrap();
    let pinned = ServiceConfig {
        traffic: vec![TrafficTarget::new(Target::Revision("web-00001".into()), 100, None)],
        ..Default::default()
    };
    let stale = store
        .update_service_config("default", "web", &pinned, first.resource_version, 2)
        .await
        .unwrap_err();
    assert!(
        matches!(stale, StoreError::Conflict { expected, actual, .. } if expected == first.resource_version && actual == second.resource_version),
        "{stale}"
    );
    assert_eq!(
        store.service("default", "web").await.unwrap().unwrap(),
        second,
        "a lost race changes nothing"
    );
    let updated = store
        .update_service_config("default", "web", &pinned, second.resource_version, 2)
        .await
        .unwrap();
    assert!(updated.resource_version > second.resource_version);
    assert_eq!(updated.config, pinned);

    let (template, config, service_config) = (
        RevisionTemplate::for_package(DIGEST),
        config(),
        ServiceConfig::default(),
    );
    let deploy_having_read = |expected_service_version| {
        store.create_revision(
            NewRevision {
                namespace: "default",
                service: "web",
                name: "web-racer",
                template: &template,
                config: &config,
                service_config: &service_config,
                expected_service_version,
            },
            3,
        )
    };
    for read in [Some(second.resource_version), None] {
        let err = deploy_having_read(read).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "read {read:?}: {err}");
    }
    assert!(store.revision("default", "web-racer").await.unwrap().is_none());
    assert_eq!(store.service("default", "web").await.unwrap().unwrap(), updated);
}

async fn the_log_replays_writes_in_order(store: Arc<dyn Store>) {
    let store = with_blob(store).await;
    let start = store.current_revision().await.unwrap();
    let (svc, rev) = deploy(&*store, "default", "web").await.unwrap();
    let (_, rev2) = deploy(&*store, "default", "web").await.unwrap();
    store.delete_service("default", "web").await.unwrap();
    let page = store.changes_after(start, &WatchFilter::default(), 100).await.unwrap();
    let seen: Vec<(u64, Kind, bool, String)> = page
        .events
        .iter()
        .map(|e| match &e.change {
            Change::Put(r) => (e.revision, r.kind(), true, name_of(r)),
            Change::Delete { kind, name, .. } => (e.revision, *kind, false, name.clone()),
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (start + 1, Kind::Revision, true, rev.name.clone()),
            (start + 1, Kind::Service, true, svc.name.clone()),
            (start + 2, Kind::Revision, true, rev2.name.clone()),
            (start + 2, Kind::Service, true, svc.name.clone()),
            (start + 3, Kind::Service, false, svc.name.clone()),
            (start + 3, Kind::Revision, false, rev.name.clone()),
            (start + 3, Kind::Revision, false, rev2.name.clone()),
        ]
    );
    assert_eq!(page.events[0].change, Change::Put(Resource::Revision(Box::new(rev))));
    assert_eq!(page.events[1].change, Change::Put(Resource::Service(Box::new(svc))));
    assert_eq!(page.through, start + 3);
    let resumed = store
        .changes_after(start + 2, &WatchFilter::default(), 100)
        .await
        .unwrap();
    assert!(
        resumed.events.iter().all(|e| e.revision == start + 3),
        "resumes after the revision"
    );
    let none = store
        .changes_after(start + 3, &WatchFilter::default(), 100)
        .await
        .unwrap();
    assert!(none.events.is_empty());
    assert_eq!(none.through, start + 3);
}

fn name_of(resource: &Resource) -> String {
    match resource {
        Resource::Namespace(r) => r.name.clone(),
        Resource::Service(r) => r.name.clone(),
        Resource::Revision(r) => r.name.clone(),
        Resource::Staged(r) => r.revision.name.clone(),
        Resource::Trigger(r) => r.name.clone(),
        Resource::Broker(r) => r.name.clone(),
        Resource::DomainMapping(r) => r.domain.clone(),
    }
}

async fn filters_and_pages_keep_whole_writes(store: Arc<dyn Store>) {
    let store = with_blob(store).await;
    let start = store.current_revision().await.unwrap();
    store.create_namespace("team", 1).await.unwrap();
    deploy(&*store, "team", "a").await.unwrap();
    deploy(&*store, "default", "b").await.unwrap();
    let services = store
        .changes_after(start, &WatchFilter::kind(Kind::Service), 100)
        .await
        .unwrap();
    let names: Vec<String> = services
        .events
        .iter()
        .map(|e| match &e.change {
            Change::Put(r) => name_of(r),
            Change::Delete { name, .. } => name.clone(),
        })
        .collect();
    assert_eq!(names, ["a", "b"]);
    let team = WatchFilter {
        kinds: Vec::new(),
        namespace: Some("team".into()),
    };
    let in_team = store.changes_after(start, &team, 100).await.unwrap();
    assert_eq!(in_team.events.len(), 3, "the namespace itself, a's revision and a");
    assert_eq!(in_team.through, start + 3, "what did not match is read past");
    let routed = WatchFilter::kinds(&[Kind::Namespace, Kind::Service]);
    let routed = store.changes_after(start, &routed, 100).await.unwrap();
    assert_eq!(routed.events.len(), 3, "team, a and b; not the revisions");
    let first = store
        .changes_after(start + 1, &WatchFilter::default(), 1)
        .await
        .unwrap();
    assert_eq!(first.events.len(), 2, "a page holds whole writes");
    assert_eq!(first.through, start + 2);
}

async fn a_compacted_log_says_so(store: Arc<dyn Store>) {
    let store = with_blob(store).await;
    for _ in 0..5 {
        deploy(&*store, "default", "web").await.unwrap();
    }
    let now = store.current_revision().await.unwrap();
    let err = store.changes_after(0, &WatchFilter::default(), 100).await.unwrap_err();
    assert!(matches!(err, StoreError::Compacted { requested: 0, .. }), "{err}");
    let kept = store
        .changes_after(now - 3, &WatchFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(kept.events.len(), 6, "the last three writes are kept");
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.revisions.len(), 5, "a follower lists again");
    assert!(store
        .changes_after(snapshot.revision, &WatchFilter::default(), 100)
        .await
        .unwrap()
        .events
        .is_empty());
}

async fn a_watch_streams_later_writes(store: Arc<dyn Store>) {
    let store = with_blob(store).await;
    let from = store.current_revision().await.unwrap();
    let mut watch = Watch::new(store.clone(), WatchFilter::kind(Kind::Service), from);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store.create_namespace("quiet", 1).await.unwrap();
            deploy(&*store, "default", "web").await.unwrap();
        })
    };
    let event = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch woke for the write")
        .unwrap();
    assert!(
        matches!(&event.change, Change::Put(Resource::Service(s)) if s.name == "web"),
        "{event:?}"
    );
    assert_eq!(event.revision, from + 2, "the namespace's write was skipped, not lost");
    assert_eq!(watch.revision(), from + 2);
    writer.await.unwrap();
    store.delete_service("default", "web").await.unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch woke for the delete")
        .unwrap();
    assert_eq!(
        gone.change,
        Change::Delete {
            kind: Kind::Service,
            namespace: "default".into(),
            name: "web".into()
        }
    );
    let mut behind = Watch::new(store.clone(), WatchFilter::default(), 0);
    assert!(behind.next().await.is_ok(), "nothing is compacted yet");

    // A follower learns that writes it does not want were read past, so it can say it
    // is current to the store's revision without waiting for a change it wants.
    let mut brokers = Watch::new(
        store.clone(),
        WatchFilter::kind(Kind::Broker),
        store.current_revision().await.unwrap(),
    );
    deploy(&*store, "default", "other").await.unwrap();
    let step = tokio::time::timeout(Duration::from_secs(10), brokers.step())
        .await
        .expect("the watch woke for the write it skips")
        .unwrap();
    assert_eq!(
        step,
        WatchStep::Skipped {
            through: store.current_revision().await.unwrap()
        }
    );
}

/// A revision of `service` to stage, as a deploy stages it (for other crates' tests too).
pub fn staged(namespace: &str, service: &str, name: &str) -> StagedRevision {
    StagedRevision {
        revision: Revision {
            namespace: namespace.into(),
            service: service.into(),
            name: name.into(),
            generation: 1,
            created_at_us: 1,
            template: RevisionTemplate::for_package(DIGEST),
            config: config(),
            resource_version: 0,
        },
        service_config: ServiceConfig::default(),
    }
}

async fn a_staged_revision_is_promoted_or_withdrawn(store: Arc<dyn Store>) {
    let store = with_blob(store).await;
    let start = store.current_revision().await.unwrap();
    let first = staged("default", "web", "web-00001");
    let stored = store.stage_revision(&first).await.unwrap();
    assert_eq!(stored.revision.resource_version, start + 1);
    assert!(
        store.service("default", "web").await.unwrap().is_none(),
        "no service refers to it"
    );
    assert!(store.revision("default", "web-00001").await.unwrap().is_none());
    assert_eq!(store.staged_revisions().await.unwrap(), vec![stored.clone()]);
    assert_eq!(store.snapshot().await.unwrap().staged, vec![stored.clone()]);
    assert!(
        store.unreferenced_blobs(i64::MAX).await.unwrap().is_empty(),
        "its package is in use"
    );
    for taken in [
        staged("default", "web", "web-00001"),
        staged("default", "api", "web-00001"),
    ] {
        let err = store.stage_revision(&taken).await.unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    }
    let err = store
        .stage_revision(&staged("nowhere", "web", "web-00001"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchNamespace(_)), "{err}");

    let (svc, rev) = deploy(&*store, "default", "web").await.unwrap();
    assert_eq!(rev.name, "web-00001");
    assert!(store.staged_revisions().await.unwrap().is_empty(), "promoted");
    let promotion = store
        .changes_after(start + 1, &WatchFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(
        promotion.events.iter().map(|e| e.change.clone()).collect::<Vec<_>>(),
        vec![
            Change::Delete {
                kind: Kind::Staged,
                namespace: "default".into(),
                name: "web-00001".into()
            },
            Change::Put(Resource::Revision(Box::new(rev))),
            Change::Put(Resource::Service(Box::new(svc))),
        ],
        "one write promotes it"
    );

    let second = store
        .stage_revision(&staged("default", "web", "web-00002"))
        .await
        .unwrap();
    store.withdraw_staged("default", "web-00002").await.unwrap();
    let withdrawn = store
        .changes_after(second.revision.resource_version, &WatchFilter::kind(Kind::Staged), 100)
        .await
        .unwrap();
    assert_eq!(
        withdrawn.events.iter().map(|e| e.change.clone()).collect::<Vec<_>>(),
        vec![Change::Delete {
            kind: Kind::Staged,
            namespace: "default".into(),
            name: "web-00002".into()
        }]
    );
    let err = store.withdraw_staged("default", "web-00002").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    assert_eq!(
        store.next_revision_name("default", "web").await.unwrap(),
        "web-00002",
        "a withdrawn name is free again"
    );
}

fn token(id: &str) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        name: format!("name-{id}"),
        secret_sha256: "00".repeat(32),
        grants: vec![Grant::in_namespace(Role::Viewer, "default")],
        created_at_us: 1,
        created_by: None,
        expires_at_us: Some(99),
    }
}

async fn tokens_are_kept_by_id_and_revoked(store: Arc<dyn Store>) {
    let revision = store.current_revision().await.unwrap();
    store.create_token(&token("bbbbbbbbbbbb")).await.unwrap();
    store.create_token(&token("aaaaaaaaaaaa")).await.unwrap();
    assert!(matches!(
        store.create_token(&token("aaaaaaaaaaaa")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.token("aaaaaaaaaaaa").await.unwrap(), Some(token("aaaaaaaaaaaa")));
    assert_eq!(store.token("cccccccccccc").await.unwrap(), None);
    let ids: Vec<String> = store.tokens().await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]);
    assert_eq!(store.revoke_token("aaaaaaaaaaaa").await.unwrap(), token("aaaaaaaaaaaa"));
    assert_eq!(store.token("aaaaaaaaaaaa").await.unwrap(), None);
    assert!(matches!(
        store.revoke_token("aaaaaaaaaaaa").await,
        Err(StoreError::NotFound { kind: "token", .. })
    ));
    assert_eq!(
        store.current_revision().await.unwrap(),
        revision,
        "tokens stay out of the change log"
    );
}

async fn the_audit_log_reads_back_in_order(store: Arc<dyn Store>) {
    let entry = |at_us: i64, token: Option<&str>| AuditEntry {
        seq: 0,
        at_us,
        token_id: token.map(str::to_owned),
        method: "PUT".into(),
        path: "/v1/namespaces/default/services/a".into(),
        namespace: Some("default".into()),
        status: 200,
    };
    let mut seqs = Vec::new();
    for (at, token) in [(10, Some("aaaaaaaaaaaa")), (20, None), (30, Some("aaaaaaaaaaaa"))] {
        seqs.push(store.append_audit(&entry(at, token)).await.unwrap());
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let all = store.audit(0, None, 100).await.unwrap();
    assert_eq!(all.iter().map(|e| e.at_us).collect::<Vec<_>>(), [10, 20, 30]);
    assert_eq!(
        all[0],
        AuditEntry {
            seq: seqs[0],
            ..entry(10, Some("aaaaaaaaaaaa"))
        }
    );
    let latest = store.audit(0, None, 2).await.unwrap();
    assert_eq!(
        latest.iter().map(|e| e.at_us).collect::<Vec<_>>(),
        [20, 30],
        "the limit keeps the latest"
    );
    let since = store.audit(20, Some("aaaaaaaaaaaa"), 100).await.unwrap();
    assert_eq!(since.iter().map(|e| e.at_us).collect::<Vec<_>>(), [30]);
}

async fn secrets_are_kept_per_namespace(store: Arc<dyn Store>) {
    let revision = store.current_revision().await.unwrap();
    store.create_namespace("other", 1).await.unwrap();
    let secret = |namespace: &str, sealed: &[u8], at_us: i64| SecretRecord {
        namespace: namespace.into(),
        name: "db".into(),
        sealed: sealed.to_vec(),
        created_at_us: at_us,
        updated_at_us: at_us,
    };
    assert_eq!(
        store.put_secret(&secret("default", b"one", 10), true).await.unwrap(),
        secret("default", b"one", 10)
    );
    assert!(matches!(
        store.put_secret(&secret("default", b"two", 20), true).await,
        Err(StoreError::AlreadyExists(_))
    ));
    let replaced = store.put_secret(&secret("default", b"two", 20), false).await.unwrap();
    assert_eq!(
        (
            replaced.sealed.as_slice(),
            replaced.created_at_us,
            replaced.updated_at_us
        ),
        (&b"two"[..], 10, 20)
    );
    store.put_secret(&secret("other", b"three", 30), true).await.unwrap();
    assert!(matches!(
        store.put_secret(&secret("nowhere", b"x", 1), true).await,
        Err(StoreError::NoSuchNamespace(_))
    ));
    assert_eq!(store.secret("default", "db").await.unwrap(), Some(replaced));
    assert_eq!(
        store.secrets(Some("other")).await.unwrap(),
        [secret("other", b"three", 30)]
    );
    assert_eq!(store.secrets(None).await.unwrap().len(), 2);
    store.delete_secret("default", "db").await.unwrap();
    assert!(matches!(
        store.delete_secret("default", "db").await,
        Err(StoreError::NotFound { kind: "secret", .. })
    ));
    assert_eq!(store.secret("default", "db").await.unwrap(), None);
    assert_eq!(
        store.current_revision().await.unwrap(),
        revision + 1,
        "only the namespace went through the change log"
    );
}

async fn a_domain_is_held_by_one_namespace_and_watched(store: Arc<dyn Store>) {
    store.create_namespace("other", 1).await.unwrap();
    let start = store.current_revision().await.unwrap();
    let mapping = |namespace: &str, service: &str, at_us: i64| DomainMapping {
        namespace: namespace.into(),
        domain: "api.example.com".into(),
        service: service.into(),
        tag: None,
        tls_secret: None,
        created_at_us: at_us,
    };
    let (written, created) = store
        .put_domain_mapping(&mapping("default", "hello", 10))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(written, mapping("default", "hello", 10));
    let (moved, created) = store
        .put_domain_mapping(&mapping("default", "other", 20))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(
        moved,
        mapping("default", "other", 10),
        "the mapping keeps when it was made"
    );
    assert!(matches!(
        store.put_domain_mapping(&mapping("other", "hello", 30)).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(matches!(
        store.put_domain_mapping(&mapping("nowhere", "hello", 30)).await,
        Err(StoreError::NoSuchNamespace(_))
    ));
    assert!(store.domain_mappings(Some("other")).await.unwrap().is_empty());
    assert_eq!(store.domain_mappings(None).await.unwrap(), std::slice::from_ref(&moved));
    assert_eq!(
        store.snapshot().await.unwrap().domain_mappings,
        std::slice::from_ref(&moved)
    );
    assert!(matches!(
        store.delete_domain_mapping("other", "api.example.com").await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.delete_domain_mapping("default", "api.example.com").await.unwrap(),
        moved
    );
    store.put_domain_mapping(&mapping("other", "hello", 40)).await.unwrap();

    let page = store
        .changes_after(start, &WatchFilter::kind(Kind::DomainMapping), 100)
        .await
        .unwrap();
    let seen: Vec<String> = page
        .events
        .iter()
        .map(|e| match &e.change {
            Change::Put(Resource::DomainMapping(m)) => format!("put {}/{}", m.namespace, m.service),
            Change::Delete { namespace, name, .. } => format!("delete {namespace}/{name}"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "put default/hello",
            "put default/other",
            "delete default/api.example.com",
            "put other/hello"
        ]
    );
}

async fn a_namespace_goes_only_empty_and_takes_what_it_held(store: Arc<dyn Store>) {
    let store = with_blob(store).await;
    store.create_namespace("gone", 1).await.unwrap();
    store.create_namespace("kept", 1).await.unwrap();
    deploy(&*store, "gone", "web").await.unwrap();
    let secret = SecretRecord {
        namespace: "gone".into(),
        name: "db".into(),
        sealed: b"x".to_vec(),
        created_at_us: 1,
        updated_at_us: 1,
    };
    store.put_secret(&secret, true).await.unwrap();
    let mapping = DomainMapping {
        namespace: "gone".into(),
        domain: "gone.example.com".into(),
        service: "web".into(),
        tag: None,
        tls_secret: None,
        created_at_us: 1,
    };
    store.put_domain_mapping(&mapping).await.unwrap();
    let only_gone = TokenRecord {
        grants: vec![Grant::in_namespace(Role::Developer, "gone")],
        ..token("aaaaaaaaaaaa")
    };
    let both = TokenRecord {
        grants: vec![
            Grant::in_namespace(Role::Developer, "gone"),
            Grant::in_namespace(Role::Viewer, "kept"),
        ],
        ..token("bbbbbbbbbbbb")
    };
    store.create_token(&only_gone).await.unwrap();
    store.create_token(&both).await.unwrap();

    assert!(matches!(
        store.delete_namespace("gone").await,
        Err(StoreError::NotEmpty(_))
    ));
    assert!(
        store.namespace("gone").await.unwrap().is_some(),
        "a refusal changes nothing"
    );
    store.delete_service("gone", "web").await.unwrap();
    let start = store.current_revision().await.unwrap();
    assert_eq!(store.delete_namespace("gone").await.unwrap().name, "gone");
    assert!(matches!(
        store.delete_namespace("gone").await,
        Err(StoreError::NoSuchNamespace(_))
    ));
    assert_eq!(store.namespace("gone").await.unwrap(), None);
    assert_eq!(store.secret("gone", "db").await.unwrap(), None);
    assert!(store.domain_mappings(None).await.unwrap().is_empty());
    assert_eq!(
        store.token("aaaaaaaaaaaa").await.unwrap(),
        None,
        "a token left with no grant goes"
    );
    assert_eq!(
        store.token("bbbbbbbbbbbb").await.unwrap().unwrap().grants,
        [Grant::in_namespace(Role::Viewer, "kept")]
    );
    let page = store.changes_after(start, &WatchFilter::default(), 100).await.unwrap();
    let deleted: Vec<(Kind, String)> = page
        .events
        .iter()
        .filter_map(|e| match &e.change {
            Change::Delete { kind, name, .. } => Some((*kind, name.clone())),
            Change::Put(_) => None,
        })
        .collect();
    assert_eq!(
        deleted,
        [
            (Kind::DomainMapping, "gone.example.com".to_string()),
            (Kind::Namespace, "gone".to_string())
        ],
        "one write, watched"
    );
    assert_eq!(
        page.events
            .iter()
            .map(|e| e.revision)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        1
    );
    store.create_namespace("gone", 2).await.unwrap();
    assert!(
        store.secrets(Some("gone")).await.unwrap().is_empty(),
        "made again, it starts empty"
    );
}
