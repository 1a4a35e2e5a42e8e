//! What routing an event needs, read once per store version, and the routing itself:
//! an event sent to a broker gets a delivery for every trigger of that broker whose
//! filters it passes. Pure: an event's path through the broker never waits on the
//! database while a commit syncs.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use cloudevents::{AttributesReader, Event};
use updraft_store::events::{Accepted, NewDelivery};
use updraft_store::{EventStore, Store, StoreError};

use crate::delivery::DeliverySpec;
use crate::filter::trigger_matches;
use crate::scheduler::parse_spec;
use crate::trigger::{TriggerSpec, DEFAULT_BROKER};

#[derive(Default)]
pub struct RoutingSnapshot {
    /// The store version this was read at.
    pub version: u64,
    pub namespaces: HashSet<String>,
    /// The namespaces with a quota of events their brokers take a minute.
    pub fires_per_minute: HashMap<String, u32>,
    pub brokers: HashMap<(String, String), Option<DeliverySpec>>,
    /// (namespace, name, kind, spec) of every trigger; `None` for one that no longer
    /// parses.
    pub triggers: Vec<(String, String, String, Option<TriggerSpec>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("namespace {0:?} does not exist")]
    NoSuchNamespace(String),
    #[error("broker {name:?} does not exist in namespace {namespace:?}; the default broker is {DEFAULT_BROKER:?}")]
    NoSuchBroker { namespace: String, name: String },
    #[error("the event cannot be stored: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The routing snapshot of the store's current version, read again only after a write.
pub struct RoutingCache {
    store: Arc<dyn Store>,
    events: Arc<dyn EventStore>,
    cached: Mutex<Option<Arc<RoutingSnapshot>>>,
}

impl RoutingCache {
    pub fn new(store: Arc<dyn Store>, events: Arc<dyn EventStore>) -> RoutingCache {
        RoutingCache {
            store,
            events,
            cached: Mutex::new(None),
        }
    }

    pub async fn current(&self) -> Result<Arc<RoutingSnapshot>, StoreError> {
        let version = *self.store.subscribe().borrow();
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(snapshot) = cached.filter(|s| s.version == version) {
            return Ok(snapshot);
        }
        let all = self.store.namespaces().await?;
        let fires_per_minute = all
            .iter()
            .filter_map(|n| n.limits.quota.fires_per_minute.map(|q| (n.name.clone(), q)))
            .collect();
        let namespaces = all.into_iter().map(|n| n.name).collect();
        let events = self.events.clone();
        let (brokers, triggers) =
            tokio::task::spawn_blocking(move || Ok::<_, StoreError>((events.brokers(None)?, events.triggers(None)?)))
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))??;
        let snapshot = Arc::new(RoutingSnapshot {
            version,
            namespaces,
            fires_per_minute,
            brokers: brokers
                .into_iter()
                .map(|b| {
                    let delivery = b.delivery.as_deref().and_then(|d| serde_json::from_str(d).ok());
                    ((b.namespace, b.name), delivery)
                })
                .collect(),
            triggers: triggers
                .into_iter()
                .map(|t| {
                    let spec = parse_spec(&t);
                    (t.namespace, t.name, t.kind, spec)
                })
                .collect(),
        });
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot.clone());
        Ok(snapshot)
    }
}

impl RoutingSnapshot {
    pub fn kind_of(&self, namespace: &str, trigger: &str) -> Option<&str> {
        self.triggers
            .iter()
            .find(|(ns, name, _, _)| ns == namespace && name == trigger)
            .map(|(_, _, kind, _)| kind.as_str())
    }

    /// The broker's delivery spec; the default broker exists in every namespace.
    pub fn broker(&self, namespace: &str, name: &str) -> Result<Option<&DeliverySpec>, RouteError> {
        if !self.namespaces.contains(namespace) {
            return Err(RouteError::NoSuchNamespace(namespace.to_string()));
        }
        match self.brokers.get(&(namespace.to_string(), name.to_string())) {
            Some(delivery) => Ok(delivery.as_ref()),
            None if name == DEFAULT_BROKER => Ok(None),
            None => Err(RouteError::NoSuchBroker {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
        }
    }

    /// The event, with a delivery for every trigger of the broker it matches.
    pub fn route(&self, namespace: &str, broker: &str, event: &Event) -> Result<Accepted, RouteError> {
        let broker_delivery = self.broker(namespace, broker)?;
        let json = serde_json::to_string(event)?;
        let mut deliveries = Vec::new();
        for (ns, name, _, spec) in &self.triggers {
            let Some(TriggerSpec::Event(spec)) = spec else {
                continue;
            };
            if ns != namespace || spec.broker != broker || !trigger_matches(&spec.filter, &spec.filters, event) {
                continue;
            }
            let policy = spec.delivery.clone().unwrap_or_default().policy(broker_delivery);
            deliveries.push(NewDelivery {
                trigger: name.clone(),
                event: json.clone(),
                target: serde_json::to_string(&spec.subscriber)?,
                policy: policy.json(),
                dead_letter: false,
                broker: Some(broker.to_string()),
                scheduled_at_us: None,
            });
        }
        Ok(Accepted {
            event: json,
            deliveries,
        })
    }

    /// A platform event with a delivery for each platform source of `namespace` that
    /// wants its type; `None` when none does, so nothing is stored.
    pub fn announce(&self, namespace: &str, event: &Event) -> Result<Option<Accepted>, RouteError> {
        let mut deliveries = Vec::new();
        let mut json = None;
        for (ns, name, _, spec) in &self.triggers {
            let Some(TriggerSpec::Platform(spec)) = spec else {
                continue;
            };
            if ns != namespace || !spec.wants(event.ty()) {
                continue;
            }
            let text = match &json {
                Some(text) => text,
                None => json.insert(serde_json::to_string(event)?),
            };
            deliveries.push(NewDelivery {
                trigger: name.clone(),
                event: text.clone(),
                target: serde_json::to_string(&spec.sink)?,
                policy: spec.delivery.clone().unwrap_or_default().policy(None).json(),
                dead_letter: false,
                broker: None,
                scheduled_at_us: None,
            });
        }
        Ok(json.map(|event| Accepted { event, deliveries }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Destination, Reference};
    use crate::trigger::EventSpec;
    use cloudevents::{EventBuilder, EventBuilderV10};

    fn trigger(broker: &str, ty: &str, retry: Option<u32>) -> TriggerSpec {
        TriggerSpec::Event(EventSpec {
            broker: broker.into(),
            filter: [("type".to_string(), ty.to_string())].into(),
            filters: vec![],
            subscriber: Destination {
                reference: Some(Reference {
                    name: "sub".into(),
                    ..Default::default()
                }),
                uri: None,
            },
            delivery: retry.map(|r| DeliverySpec {
                retry: Some(r),
                ..Default::default()
            }),
        })
    }

    fn snapshot() -> RoutingSnapshot {
        RoutingSnapshot {
            version: 7,
            namespaces: ["default".to_string(), "other".to_string()].into(),
            fires_per_minute: HashMap::new(),
            brokers: [(
                ("default".to_string(), "orders".to_string()),
                Some(DeliverySpec {
                    retry: Some(9),
                    ..Default::default()
                }),
            )]
            .into(),
            triggers: vec![
                (
                    "default".into(),
                    "paid".into(),
                    "event".into(),
                    Some(trigger("orders", "paid", None)),
                ),
                (
                    "default".into(),
                    "paid-fast".into(),
                    "event".into(),
                    Some(trigger("orders", "paid", Some(1))),
                ),
                (
                    "default".into(),
                    "shipped".into(),
                    "event".into(),
                    Some(trigger("orders", "shipped", None)),
                ),
                (
                    "other".into(),
                    "paid".into(),
                    "event".into(),
                    Some(trigger("orders", "paid", None)),
                ),
                ("default".into(), "broken".into(), "event".into(), None),
            ],
        }
    }

    fn event(ty: &str) -> Event {
        EventBuilderV10::new().id("1").source("/test").ty(ty).build().unwrap()
    }

    #[test]
    fn an_event_gets_a_delivery_for_each_matching_trigger_of_its_broker_and_namespace() {
        let accepted = snapshot().route("default", "orders", &event("paid")).unwrap();
        let names: Vec<&str> = accepted.deliveries.iter().map(|d| d.trigger.as_str()).collect();
        assert_eq!(names, ["paid", "paid-fast"]);
        // The broker's delivery spec is the default a trigger's own overrides.
        let retries =
            |d: &NewDelivery| serde_json::from_str::<serde_json::Value>(&d.policy).unwrap()["retries"].clone();
        assert_eq!(retries(&accepted.deliveries[0]), 9);
        assert_eq!(retries(&accepted.deliveries[1]), 1);
        assert!(snapshot()
            .route("default", "orders", &event("refunded"))
            .unwrap()
            .deliveries
            .is_empty());
    }

    #[test]
    fn unknown_namespaces_and_brokers_are_refused_but_the_default_broker_always_exists() {
        let s = snapshot();
        assert!(matches!(
            s.route("nowhere", "default", &event("paid")),
            Err(RouteError::NoSuchNamespace(_))
        ));
        assert!(matches!(
            s.route("default", "nope", &event("paid")),
            Err(RouteError::NoSuchBroker { .. })
        ));
        assert!(s
            .route("other", "default", &event("paid"))
            .unwrap()
            .deliveries
            .is_empty());
        assert_eq!(s.kind_of("default", "shipped"), Some("event"));
    }
}
