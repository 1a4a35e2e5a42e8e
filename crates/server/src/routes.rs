//! The route reconciler: follows services and namespaces in the store and keeps the
//! gateway's route table. A change re-routes only the service it touches, so a
//! deploy costs the same with ten services or ten thousand.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use updraft_gateway::{host_for, tag_host_for, HostMap, Limiters, Rate, RevisionEndpoints, RouteTable, ServiceRoute};
use updraft_model::annotations::{is_private, validate_service_annotations, RateLimit};
use updraft_model::domain::DomainMapping;
use updraft_model::traffic::resolve;
use updraft_model::{Namespace, Service};
use updraft_store::{Change, Kind, Resource, Snapshot, WatchFilter};

use crate::reconcile::Reconciler;
use crate::tls::TlsDomains;

/// The revisions this node runs, as the route table needs them.
pub trait RouteTargets: Send + Sync {
    /// Where a revision's requests go, if it is known here.
    fn endpoints(&self, namespace: &str, revision: &str) -> Option<Arc<RevisionEndpoints>>;
    /// Tells a revision whether any host routes to it now; one nothing routes to
    /// drains and stops.
    fn set_routed(&self, namespace: &str, revision: &str, routed: bool);
}

type ServiceKey = (String, String);

/// What one service contributes to the table.
#[derive(Default)]
struct Routed {
    hosts: Vec<String>,
    revisions: BTreeSet<String>,
}

/// What the gateway enforces for a whole namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NamespaceRates {
    rate_limit: Option<RateLimit>,
    invocations_per_minute: Option<u32>,
}

impl NamespaceRates {
    fn of(namespace: &Namespace) -> Self {
        NamespaceRates {
            rate_limit: namespace.limits.rate_limit,
            invocations_per_minute: namespace.limits.quota.invocations_per_minute,
        }
    }
}

pub struct RouteReconciler {
    domain: String,
    table: Arc<RouteTable>,
    targets: Arc<dyn RouteTargets>,
    services: HashMap<ServiceKey, Service>,
    namespace_limits: HashMap<String, NamespaceRates>,
    hosts: HostMap,
    routed: HashMap<ServiceKey, Routed>,
    /// When each service's rollout moves its shares next (µs since the epoch).
    rollouts: HashMap<ServiceKey, i64>,
    /// Kept across changes, so re-routing a service does not refill its bucket.
    limiters: Limiters,
    /// Custom domains by the service they lead to, and the other way round.
    domains: HashMap<ServiceKey, BTreeMap<String, DomainMapping>>,
    domain_owners: HashMap<String, ServiceKey>,
    /// Where the TLS acceptor finds each custom domain's certificate.
    tls_domains: Option<Arc<TlsDomains>>,
}

impl RouteReconciler {
    pub fn new(domain: &str, table: Arc<RouteTable>, targets: Arc<dyn RouteTargets>) -> Self {
        RouteReconciler {
            domain: domain.to_string(),
            table,
            targets,
            services: HashMap::new(),
            namespace_limits: HashMap::new(),
            hosts: HostMap::new(),
            routed: HashMap::new(),
            rollouts: HashMap::new(),
            limiters: Limiters::default(),
            domains: HashMap::new(),
            domain_owners: HashMap::new(),
            tls_domains: None,
        }
    }

    /// Publishes each custom domain's certificate secret along with the routes.
    pub fn with_tls_domains(mut self, tls_domains: Arc<TlsDomains>) -> Self {
        self.tls_domains = Some(tls_domains);
        self
    }

    /// Records where a domain leads; returns the service it led to before, if another.
    fn map_domain(&mut self, mapping: DomainMapping) -> Option<ServiceKey> {
        let key = (mapping.namespace.clone(), mapping.service.clone());
        let before = self.unmap_domain(&mapping.domain).filter(|k| *k != key);
        self.domain_owners.insert(mapping.domain.clone(), key.clone());
        self.domains
            .entry(key)
            .or_default()
            .insert(mapping.domain.clone(), mapping);
        before
    }

    /// Forgets a domain; returns the service it led to.
    fn unmap_domain(&mut self, domain: &str) -> Option<ServiceKey> {
        let key = self.domain_owners.remove(domain)?;
        if let Some(mapped) = self.domains.get_mut(&key) {
            mapped.remove(domain);
            if mapped.is_empty() {
                self.domains.remove(&key);
            }
        }
        Some(key)
    }

    /// Routes everything in `snapshot` afresh, as at start or after falling behind
    /// the change log.
    pub fn reset(&mut self, snapshot: &Snapshot, now_us: i64) {
        let before: Vec<ServiceKey> = self.routed.keys().cloned().collect();
        self.domains.clear();
        self.domain_owners.clear();
        for mapping in &snapshot.domain_mappings {
            self.map_domain(mapping.clone());
        }
        self.publish_tls();
        self.namespace_limits = snapshot
            .namespaces
            .iter()
            .map(|n| (n.name.clone(), NamespaceRates::of(n)))
            .collect();
        self.services = snapshot
            .services
            .iter()
            .map(|s| ((s.namespace.clone(), s.name.clone()), s.clone()))
            .collect();
        for key in before {
            if !self.services.contains_key(&key) {
                self.unroute(&key);
            }
        }
        let keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        for key in keys {
            self.route(&key, now_us);
        }
        self.publish();
    }

    /// Applies one change from the store's watch; the caller publishes.
    pub fn apply(&mut self, change: Change, now_us: i64) {
        match change {
            Change::Put(Resource::Service(service)) => {
                let key = (service.namespace.clone(), service.name.clone());
                self.services.insert(key.clone(), *service);
                self.route(&key, now_us);
            }
            Change::Delete {
                kind: Kind::Service,
                namespace,
                name,
            } => {
                let key = (namespace, name);
                self.services.remove(&key);
                self.unroute(&key);
            }
            Change::Put(Resource::DomainMapping(mapping)) => {
                let key = (mapping.namespace.clone(), mapping.service.clone());
                if let Some(before) = self.map_domain(mapping) {
                    self.route(&before, now_us);
                }
                self.route(&key, now_us);
                self.publish_tls();
            }
            Change::Delete {
                kind: Kind::DomainMapping,
                name,
                ..
            } => {
                if let Some(before) = self.unmap_domain(&name) {
                    self.route(&before, now_us);
                }
                self.publish_tls();
            }
            Change::Put(Resource::Namespace(namespace)) => {
                let rates = NamespaceRates::of(&namespace);
                if self.namespace_limits.insert(namespace.name.clone(), rates) != Some(rates) {
                    let keys: Vec<ServiceKey> = self
                        .services
                        .keys()
                        .filter(|k| k.0 == namespace.name)
                        .cloned()
                        .collect();
                    for key in keys {
                        self.route(&key, now_us);
                    }
                }
            }
            _ => {}
        }
    }

    /// Re-routes the services whose rollout has moved on by `now_us`.
    pub fn advance_rollouts(&mut self, now_us: i64) {
        let due: Vec<ServiceKey> = self
            .rollouts
            .iter()
            .filter(|(_, at)| **at <= now_us)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.route(&key, now_us);
        }
    }

    /// When a rollout moves next, if one is under way.
    pub fn next_rollout_step_us(&self) -> Option<i64> {
        self.rollouts.values().min().copied()
    }

    pub fn publish(&self) {
        self.table.replace(self.hosts.clone());
    }

    /// Tells the TLS acceptor which secret holds each domain's certificate; done when
    /// domains change, not on every write.
    fn publish_tls(&self) {
        if let Some(tls) = &self.tls_domains {
            let secrets = self
                .domains
                .values()
                .flat_map(BTreeMap::values)
                .filter_map(|m| {
                    let secret = m.tls_secret.clone()?;
                    Some((m.domain.clone(), (m.namespace.clone(), secret)))
                })
                .collect();
            tls.replace(secrets);
        }
    }

    /// Builds one service's hosts: the service host splits by the traffic table, each
    /// tag host leads to its revision.
    fn route(&mut self, key: &ServiceKey, now_us: i64) {
        let Some(svc) = self.services.get(key).cloned() else {
            return self.unroute(key);
        };
        let mut limiters = Vec::new();
        let settings = validate_service_annotations("annotations", &svc.config.annotations).unwrap_or_default();
        if let Some(limit) = settings.rate_limit {
            limiters.push(self.limiters.get(
                format!("service {}/{}", svc.namespace, svc.name),
                Rate::PerSecond(limit),
            ));
        }
        let rates = self.namespace_limits.get(&svc.namespace).copied().unwrap_or_default();
        if let Some(limit) = rates.rate_limit {
            limiters.push(
                self.limiters
                    .get(format!("namespace {}", svc.namespace), Rate::PerSecond(limit)),
            );
        }
        if let Some(n) = rates.invocations_per_minute {
            limiters.push(self.limiters.get(
                format!(
                    "namespace {}'s quota of invocations (quota.invocations_per_minute)",
                    svc.namespace
                ),
                Rate::PerMinute(n),
            ));
        }
        let rollout = svc.config.rollout.as_ref();
        match rollout.and_then(|r| r.next_change_us(now_us)) {
            Some(at) => self.rollouts.insert(key.clone(), at),
            None => self.rollouts.remove(key),
        };
        let routing = resolve(&svc.config.traffic, &svc.latest_revision, rollout, now_us);
        let mut now = Routed::default();
        let mut weighted = Vec::new();
        for (revision, percent) in &routing.percents {
            if let Some(endpoints) = self.targets.endpoints(&svc.namespace, revision) {
                weighted.push((endpoints, *percent));
                now.revisions.insert(revision.clone());
            }
        }
        let private_to = is_private(&svc.config.labels).then(|| svc.namespace.clone());
        let mut hosts = vec![(
            host_for(&svc.name, &svc.namespace, &self.domain),
            Arc::new(ServiceRoute::split(weighted, limiters.clone()).private_to(private_to.clone())),
        )];
        let mut tagged = HashMap::new();
        for (tag, revision) in &routing.tags {
            if let Some(endpoints) = self.targets.endpoints(&svc.namespace, revision) {
                let route = Arc::new(ServiceRoute::single(endpoints, limiters.clone()).private_to(private_to.clone()));
                tagged.insert(tag.as_str(), route.clone());
                hosts.push((tag_host_for(tag, &svc.name, &svc.namespace, &self.domain), route));
                now.revisions.insert(revision.clone());
            }
        }
        // A custom domain shares the route of what it names, limits and all.
        let whole = hosts[0].1.clone();
        for mapping in self.domains.get(key).into_iter().flat_map(BTreeMap::values) {
            let route = match &mapping.tag {
                None => Some(whole.clone()),
                Some(tag) => tagged.get(tag.as_str()).cloned(),
            };
            if let Some(route) = route {
                hosts.push((mapping.domain.clone(), route));
            }
        }
        let before = self.routed.remove(key).unwrap_or_default();
        for host in &before.hosts {
            self.hosts.remove(host);
        }
        for (host, route) in hosts {
            now.hosts.push(host.clone());
            self.hosts.insert(host, route);
        }
        for revision in now.revisions.difference(&before.revisions) {
            self.targets.set_routed(&svc.namespace, revision, true);
        }
        for revision in before.revisions.difference(&now.revisions) {
            self.targets.set_routed(&svc.namespace, revision, false);
        }
        self.routed.insert(key.clone(), now);
    }

    fn unroute(&mut self, key: &ServiceKey) {
        self.rollouts.remove(key);
        self.limiters.remove(&format!("service {}/{}", key.0, key.1));
        let Some(before) = self.routed.remove(key) else {
            return;
        };
        for host in &before.hosts {
            self.hosts.remove(host);
        }
        for revision in &before.revisions {
            self.targets.set_routed(&key.0, revision, false);
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for RouteReconciler {
    fn name(&self) -> &'static str {
        "route table"
    }

    fn filter(&self) -> WatchFilter {
        routed()
    }

    async fn on_write(&mut self, changes: Vec<Change>, now_us: i64) {
        for change in changes {
            self.apply(change, now_us);
        }
        self.publish();
    }

    async fn on_list(&mut self, snapshot: &Snapshot, now_us: i64) {
        self.reset(snapshot, now_us);
    }

    fn wake_at_us(&self) -> Option<i64> {
        self.next_rollout_step_us()
    }

    async fn on_wake(&mut self, now_us: i64) {
        self.advance_rollouts(now_us);
        self.publish();
    }
}

/// The kinds routes are made of.
fn routed() -> WatchFilter {
    WatchFilter::kinds(&[Kind::Namespace, Kind::Service, Kind::Revision, Kind::DomainMapping])
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use std::time::Duration;
    use updraft_gateway::{RevisionKey, RevisionLimits};
    use updraft_model::traffic::{Rollout, Target, TrafficTarget};

    use tokio::sync::watch;
    use updraft_model::{Namespace, NamespaceLimits, ServiceConfig};
    use updraft_store::Store;

    use updraft_runtime::clock::now_us;

    use super::*;
    use crate::reconcile::follow;

    /// Revisions known by name, and a record of what the reconciler asked of them.
    #[derive(Default)]
    struct Targets {
        known: Mutex<HashMap<String, Arc<RevisionEndpoints>>>,
        routed: Mutex<HashMap<String, bool>>,
        lookups: Mutex<usize>,
    }

    impl Targets {
        fn add(&self, service: &str, revision: &str) {
            let key = RevisionKey {
                namespace: "default".into(),
                service: service.into(),
                revision: revision.into(),
            };
            self.known
                .lock()
                .unwrap()
                .insert(revision.into(), RevisionEndpoints::new(key, RevisionLimits::default()));
        }

        fn routed(&self, revision: &str) -> Option<bool> {
            self.routed.lock().unwrap().get(revision).copied()
        }
    }

    impl RouteTargets for Targets {
        fn endpoints(&self, _namespace: &str, revision: &str) -> Option<Arc<RevisionEndpoints>> {
            *self.lookups.lock().unwrap() += 1;
            self.known.lock().unwrap().get(revision).cloned()
        }

        fn set_routed(&self, _namespace: &str, revision: &str, routed: bool) {
            self.routed.lock().unwrap().insert(revision.into(), routed);
        }
    }

    fn service(name: &str, latest: &str, config: ServiceConfig) -> Service {
        Service {
            namespace: "default".into(),
            name: name.into(),
            latest_revision: latest.into(),
            generation: 1,
            created_at_us: 0,
            updated_at_us: 0,
            config,
            resource_version: 0,
        }
    }

    fn put(svc: Service) -> Change {
        Change::Put(Resource::Service(Box::new(svc)))
    }

    fn setup() -> (RouteReconciler, Arc<RouteTable>, Arc<Targets>) {
        let table = Arc::new(RouteTable::default());
        let targets = Arc::new(Targets::default());
        (
            RouteReconciler::new("localhost", table.clone(), targets.clone()),
            table,
            targets,
        )
    }

    fn serves(table: &RouteTable, host: &str) -> Vec<String> {
        table.lookup(host).map_or_else(Vec::new, |route| {
            route.targets().iter().map(|t| t.key.revision.clone()).collect()
        })
    }

    fn mapping(domain: &str, service: &str, tag: Option<&str>) -> Change {
        Change::Put(Resource::DomainMapping(DomainMapping {
            namespace: "default".into(),
            domain: domain.into(),
            service: service.into(),
            tag: tag.map(str::to_string),
            tls_secret: None,
            created_at_us: 0,
        }))
    }

    #[test]
    fn a_custom_domain_follows_its_service_or_tag_and_moves_and_goes() {
        let (mut routes, table, targets) = setup();
        targets.add("web", "web-1");
        targets.add("web", "web-2");
        targets.add("api", "api-1");
        let config = ServiceConfig {
            traffic: vec![
                TrafficTarget::new(Target::Revision("web-1".into()), 100, None),
                TrafficTarget::new(Target::Latest, 0, Some("canary".into())),
            ],
            ..Default::default()
        };
        // Mapped before its service exists: routed once it does.
        routes.apply(mapping("www.example.com", "web", None), 0);
        routes.apply(mapping("next.example.com", "web", Some("canary")), 0);
        routes.publish();
        assert!(table.lookup("www.example.com").is_none());
        routes.apply(put(service("web", "web-2", config)), 0);
        routes.apply(put(service("api", "api-1", ServiceConfig::default())), 0);
        routes.publish();
        assert_eq!(serves(&table, "www.example.com"), ["web-1"]);
        assert_eq!(serves(&table, "WWW.example.com:8080"), ["web-1"]);
        assert_eq!(serves(&table, "next.example.com"), ["web-2"]);

        routes.apply(mapping("www.example.com", "api", None), 0);
        routes.publish();
        assert_eq!(serves(&table, "www.example.com"), ["api-1"], "moved to another service");
        assert_eq!(serves(&table, "web.default.localhost"), ["web-1"]);

        routes.apply(
            Change::Delete {
                kind: Kind::DomainMapping,
                namespace: "default".into(),
                name: "www.example.com".into(),
            },
            0,
        );
        routes.publish();
        assert!(table.lookup("www.example.com").is_none());
        assert_eq!(serves(&table, "api.default.localhost"), ["api-1"]);
        assert_eq!(serves(&table, "next.example.com"), ["web-2"]);
    }

    #[test]
    fn a_service_gets_its_host_and_tag_hosts_and_loses_them_on_delete() {
        let (mut routes, table, targets) = setup();
        targets.add("web", "web-1");
        targets.add("web", "web-2");
        let config = ServiceConfig {
            traffic: vec![
                TrafficTarget::new(Target::Revision("web-1".into()), 90, None),
                TrafficTarget::new(Target::Latest, 10, Some("canary".into())),
            ],
            ..Default::default()
        };
        routes.apply(put(service("web", "web-2", config)), 0);
        routes.publish();
        assert_eq!(serves(&table, "web.default.localhost"), ["web-1", "web-2"]);
        assert_eq!(serves(&table, "canary-web.default.localhost"), ["web-2"]);
        assert_eq!(
            (targets.routed("web-1"), targets.routed("web-2")),
            (Some(true), Some(true))
        );

        routes.apply(put(service("web", "web-2", ServiceConfig::default())), 0);
        routes.publish();
        assert_eq!(serves(&table, "web.default.localhost"), ["web-2"]);
        assert!(
            table.lookup("canary-web.default.localhost").is_none(),
            "a tag removed is a host removed"
        );
        assert_eq!(
            targets.routed("web-1"),
            Some(false),
            "a revision left without traffic is told so"
        );

        routes.apply(
            Change::Delete {
                kind: Kind::Service,
                namespace: "default".into(),
                name: "web".into(),
            },
            0,
        );
        routes.publish();
        assert!(table.lookup("web.default.localhost").is_none());
        assert_eq!(targets.routed("web-2"), Some(false));
    }

    #[test]
    fn a_change_routes_only_the_service_it_touches() {
        let (mut routes, table, targets) = setup();
        for n in 0..200 {
            targets.add(&format!("s{n}"), &format!("s{n}-1"));
            routes.apply(
                put(service(&format!("s{n}"), &format!("s{n}-1"), ServiceConfig::default())),
                0,
            );
        }
        routes.publish();
        *targets.lookups.lock().unwrap() = 0;
        targets.add("s7", "s7-2");
        routes.apply(put(service("s7", "s7-2", ServiceConfig::default())), 0);
        routes.publish();
        assert_eq!(*targets.lookups.lock().unwrap(), 1, "one revision looked up, not 200");
        assert_eq!(serves(&table, "s7.default.localhost"), ["s7-2"]);
        assert_eq!(serves(&table, "s199.default.localhost"), ["s199-1"]);
    }

    #[test]
    fn a_rollout_moves_its_share_when_its_step_is_due() {
        let (mut routes, table, targets) = setup();
        targets.add("web", "web-1");
        targets.add("web", "web-2");
        let config = ServiceConfig {
            rollout: Some(Rollout::new("web-1", "web-2", 0, Duration::from_secs(10))),
            ..Default::default()
        };
        routes.apply(put(service("web", "web-2", config)), 0);
        routes.publish();
        assert_eq!(serves(&table, "web.default.localhost"), ["web-1", "web-2"]);
        let step = routes
            .next_rollout_step_us()
            .expect("a rollout under way has a next step");
        assert_eq!(step, 1_000_000);
        routes.advance_rollouts(step - 1);
        assert_eq!(
            routes.next_rollout_step_us(),
            Some(step),
            "nothing moves before its time"
        );
        routes.advance_rollouts(10_000_000);
        routes.publish();
        assert_eq!(serves(&table, "web.default.localhost"), ["web-2"], "the rollout ended");
        assert_eq!(routes.next_rollout_step_us(), None);
        assert_eq!(targets.routed("web-1"), Some(false));
    }

    #[test]
    fn a_namespace_rate_limit_reaches_its_services_only() {
        let (mut routes, table, targets) = setup();
        targets.add("web", "web-1");
        routes.apply(put(service("web", "web-1", ServiceConfig::default())), 0);
        let mut other = service("api", "api-1", ServiceConfig::default());
        other.namespace = "team".into();
        targets.add("api", "api-1");
        routes.apply(put(other), 0);
        let limited = Namespace {
            name: "default".into(),
            created_at_us: 0,
            limits: NamespaceLimits {
                rate_limit: Some(RateLimit {
                    per_second: 5,
                    burst: 5,
                }),
                ..Default::default()
            },
            resource_version: 3,
        };
        routes.apply(Change::Put(Resource::Namespace(limited)), 0);
        routes.publish();
        assert_eq!(table.lookup("web.default.localhost").unwrap().limiters.len(), 1);
        assert!(table.lookup("api.team.localhost").unwrap().limiters.is_empty());
    }

    #[test]
    fn a_reset_drops_what_the_snapshot_no_longer_has() {
        let (mut routes, table, targets) = setup();
        targets.add("old", "old-1");
        targets.add("new", "new-1");
        routes.apply(put(service("old", "old-1", ServiceConfig::default())), 0);
        routes.publish();
        let snapshot = Snapshot {
            revision: 9,
            services: vec![service("new", "new-1", ServiceConfig::default())],
            ..Default::default()
        };
        routes.reset(&snapshot, 0);
        assert!(table.lookup("old.default.localhost").is_none());
        assert_eq!(serves(&table, "new.default.localhost"), ["new-1"]);
        assert_eq!(targets.routed("old-1"), Some(false));
    }

    #[tokio::test]
    async fn the_table_follows_the_store_and_says_how_far() {
        use updraft_model::{RevisionConfig, RevisionTemplate};
        use updraft_store::{NewRevision, SqliteStore};

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db"), 1).unwrap());
        let (mut routes, table, targets) = setup();
        let listed = store.snapshot().await.unwrap();
        routes.reset(&listed, now_us());
        let (applied_tx, mut applied) = watch::channel(0);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(follow(
            routes,
            store.clone(),
            listed.revision,
            now_us,
            applied_tx,
            async {
                let _ = stop_rx.await;
            },
        ));

        let digest = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
        store.put_blob(digest, 1, 1).await.unwrap();
        targets.add("web", "web-00001");
        let config = RevisionConfig {
            package_digest: digest.into(),
            command: vec!["true".into()],
            command_source: "test".into(),
            env: Default::default(),
            env_secrets: Default::default(),
            memory_bytes: None,
            cpu_millis: None,
            scale_to_zero_after_ms: 60_000,
            readiness: None,
            runtime: updraft_model::RuntimeKind::Process,
            allowed_hosts: Vec::new(),
            layers: Vec::new(),
        };
        let (svc, _) = store
            .create_revision(
                NewRevision {
                    namespace: "default",
                    service: "web",
                    name: "web-00001",
                    template: &RevisionTemplate::for_package(digest),
                    config: &config,
                    service_config: &ServiceConfig::default(),
                    expected_service_version: None,
                },
                1,
            )
            .await
            .unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            applied.wait_for(|at| *at >= svc.resource_version),
        )
        .await
        .expect("the reconciler applied the write")
        .unwrap();
        assert_eq!(serves(&table, "web.default.localhost"), ["web-00001"]);

        store.delete_service("default", "web").await.unwrap();
        let written = store.current_revision().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), applied.wait_for(|at| *at >= written))
            .await
            .expect("the reconciler applied the delete")
            .unwrap();
        assert!(table.lookup("web.default.localhost").is_none());
        stop_tx.send(()).unwrap();
        running.await.unwrap();
    }
}
