//! The platform's eventing parts that hold no loop: the group-commit writer, the
//! loops' wake-ups, the routing snapshot an accepted event is matched against, and the
//! client deliveries to outside sinks go through.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use cloudevents::Event;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use updraft_events::delivery::Policy;
use updraft_events::filter::trigger_matches;
use updraft_events::trigger::{TriggerSpec, DEFAULT_BROKER};
use updraft_runtime::clock::now_us;
use updraft_store::events::{Accepted, NewDelivery, Write};

use crate::error::ApiError;

/// Writes that arrive together are committed together.
const GROUP_MAX: usize = 256;

type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Group commit for accepted events and delivery outcomes: each is stored before its
/// caller goes on, and the ones queued while a transaction syncs share the next one.
pub struct EventWriter {
    queue: std::sync::mpsc::Sender<(Write, Reply)>,
}

impl EventWriter {
    pub fn start(store: Arc<dyn updraft_store::EventStore>) -> std::io::Result<EventWriter> {
        let (queue, pending) = std::sync::mpsc::channel::<(Write, Reply)>();
        std::thread::Builder::new().name("event-writer".into()).spawn(move || {
            while let Ok(first) = pending.recv() {
                let mut batch = vec![first];
                while batch.len() < GROUP_MAX {
                    match pending.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (writes, replies): (Vec<Write>, Vec<Reply>) = batch.into_iter().unzip();
                let result = store.write(writes, now_us()).map_err(|e| e.to_string());
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        })?;
        Ok(EventWriter { queue })
    }

    fn enqueue(&self, write: Write) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, String> {
        let (reply, done) = tokio::sync::oneshot::channel();
        self.queue
            .send((write, reply))
            .map_err(|_| "the event writer stopped".to_string())?;
        Ok(done)
    }

    pub async fn write(&self, write: Write) -> Result<(), String> {
        self.enqueue(write)?
            .await
            .map_err(|_| "the event writer stopped".to_string())?
    }

    /// For callers on a blocking thread.
    pub fn write_blocking(&self, write: Write) -> Result<(), String> {
        self.enqueue(write)?
            .blocking_recv()
            .map_err(|_| "the event writer stopped".to_string())?
    }
}

/// Wake-ups for the trigger loops.
#[derive(Default)]
pub struct TriggerSignals {
    /// Something was queued or finished: the dispatcher looks again.
    pub(crate) queued: Notify,
    /// A trigger was created, changed or deleted: the scheduler and sources reload.
    pub(crate) changed: Notify,
}

impl TriggerSignals {
    pub fn triggers_changed(&self) {
        self.changed.notify_waiters();
        self.queued.notify_one();
    }
}

pub(crate) fn policy_json(policy: &Policy) -> String {
    serde_json::to_string(policy).unwrap_or_default()
}

/// What routing an event needs, read once per store version: an event's path through
/// the broker never waits on the database while a commit syncs.
#[derive(Default)]
pub(crate) struct RoutingSnapshot {
    pub(crate) version: u64,
    pub(crate) namespaces: HashSet<String>,
    pub(crate) brokers: HashMap<(String, String), Option<updraft_events::delivery::DeliverySpec>>,
    /// (namespace, name, kind, spec) of every trigger.
    pub(crate) triggers: Vec<(String, String, String, Option<TriggerSpec>)>,
}

impl RoutingSnapshot {
    pub(crate) fn kind_of(&self, namespace: &str, trigger: &str) -> Option<&str> {
        self.triggers
            .iter()
            .find(|(ns, name, _, _)| ns == namespace && name == trigger)
            .map(|(_, _, kind, _)| kind.as_str())
    }

    /// The broker's delivery spec; the default broker exists in every namespace.
    pub(crate) fn broker(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<&updraft_events::delivery::DeliverySpec>, ApiError> {
        if !self.namespaces.contains(namespace) {
            return Err(updraft_store::StoreError::NoSuchNamespace(namespace.to_string()).into());
        }
        match self.brokers.get(&(namespace.to_string(), name.to_string())) {
            Some(delivery) => Ok(delivery.as_ref()),
            None if name == DEFAULT_BROKER => Ok(None),
            None => Err(ApiError::not_found(format!(
                "broker {name:?} does not exist in namespace {namespace:?}; the default broker is {DEFAULT_BROKER:?}"
            ))),
        }
    }

    /// The event, with a delivery for every trigger of the broker it matches.
    pub(crate) fn route(&self, namespace: &str, broker: &str, event: &Event) -> Result<Accepted, ApiError> {
        let broker_delivery = self.broker(namespace, broker)?;
        let json = serde_json::to_string(event).map_err(ApiError::internal)?;
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
                target: serde_json::to_string(&spec.subscriber).map_err(ApiError::internal)?,
                policy: policy_json(&policy),
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
}

pub type SinkClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn sink_client() -> SinkClient {
    Client::builder(TokioExecutor::new()).build_http()
}
