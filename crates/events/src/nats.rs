//! NATS sources: a task per source, delivering each message with the source's retries
//! before it is acknowledged (JetStream), so a message is never lost to a crash.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloudevents::{Event, EventBuilder, EventBuilderV10};
use futures_util::StreamExt;
use updraft_store::events::{NewDelivery, DEAD_LETTERED, DELIVERED, FAILED};
use updraft_store::EventStore;

use crate::delivery::{Destination, Policy};
use crate::dispatch::{dead_letter_event, Failure, Signals, Transport};
use crate::scheduler::parse_spec;
use crate::trigger::{NatsSpec, TriggerSpec, NATS_EVENT_TYPE};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the NATS sources need of the platform.
pub struct NatsSources {
    pub store: Arc<dyn EventStore>,
    pub transport: Arc<dyn Transport>,
    pub signals: Arc<Signals>,
    /// µs since the epoch.
    pub clock: fn() -> i64,
}

/// Keeps one task per NATS source, restarted when its spec changes.
pub async fn run(sources: Arc<NatsSources>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut running: HashMap<(String, String), (String, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        let changed = sources.signals.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let store = sources.store.clone();
        let triggers = tokio::task::spawn_blocking(move || store.triggers(None).unwrap_or_default())
            .await
            .unwrap_or_default();
        let wanted: HashMap<(String, String), (String, NatsSpec)> = triggers
            .into_iter()
            .filter_map(|t| match parse_spec(&t) {
                Some(TriggerSpec::Nats(spec)) => Some(((t.namespace, t.name), (t.spec, spec))),
                _ => None,
            })
            .collect();
        running.retain(|key, (spec, task)| {
            let keep = wanted.get(key).is_some_and(|(s, _)| s == spec) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (text, spec)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(consume(sources.clone(), key.0.clone(), key.1.clone(), spec));
            running.insert(key, (text, task));
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = changed => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}

/// Reads one source until it is stopped, reconnecting with a bounded backoff.
async fn consume(sources: Arc<NatsSources>, namespace: String, name: String, spec: NatsSpec) {
    let mut backoff = Duration::from_millis(250);
    loop {
        match sources.consume_once(&namespace, &name, &spec).await {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => {
                tracing::warn!(source = %name, url = %spec.url, "NATS source: {e}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

fn nats_event(namespace: &str, name: &str, subject: &str, id: String, payload: &Bytes) -> Result<Event, String> {
    let content_type = if serde_json::from_slice::<serde_json::Value>(payload).is_ok() {
        "application/json"
    } else {
        "application/octet-stream"
    };
    EventBuilderV10::new()
        .id(id)
        .ty(NATS_EVENT_TYPE)
        .source(format!("/apis/v1/namespaces/{namespace}/natssources/{name}"))
        .subject(subject)
        .time(chrono::Utc::now())
        .data(content_type, payload.to_vec())
        .build()
        .map_err(|e| e.to_string())
}

impl NatsSources {
    async fn consume_once(&self, namespace: &str, name: &str, spec: &NatsSpec) -> Result<(), BoxError> {
        use async_nats::jetstream;
        let client = async_nats::connect(&spec.url).await?;
        let policy = spec.delivery.clone().unwrap_or_default().policy(None);
        let Some(stream_name) = &spec.stream else {
            let mut subscription = client.subscribe(spec.subject.clone()).await?;
            while let Some(message) = subscription.next().await {
                let id = uuid::Uuid::new_v4().to_string();
                let event = nats_event(namespace, name, &message.subject, id, &message.payload)?;
                self.deliver_now(namespace, name, &spec.sink, &policy, event).await;
            }
            return Ok(());
        };
        let context = jetstream::new(client);
        let stream = context
            .get_or_create_stream(jetstream::stream::Config {
                name: stream_name.clone(),
                subjects: vec![spec.subject.clone()],
                ..Default::default()
            })
            .await?;
        let durable = spec
            .durable
            .clone()
            .unwrap_or_else(|| format!("updraft-{namespace}-{name}"));
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &durable,
                jetstream::consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: spec.subject.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_micros(policy.timeout_us) * (policy.retries + 2),
                    ..Default::default()
                },
            )
            .await?;
        let mut messages = consumer.messages().await?;
        while let Some(message) = messages.next().await {
            let message = message?;
            // The stream sequence names the message for good, so a redelivery after a
            // crash carries the same event id and the subscriber can drop the duplicate.
            let id = match message.info() {
                Ok(info) => format!("{}-{}", info.stream, info.stream_sequence),
                Err(_) => uuid::Uuid::new_v4().to_string(),
            };
            let event = nats_event(namespace, name, &message.subject, id, &message.payload)?;
            if self.deliver_now(namespace, name, &spec.sink, &policy, event).await {
                message.ack().await?;
            } else {
                let wait = Duration::from_micros(policy.backoff_us(1));
                message.ack_with(jetstream::AckKind::Nak(Some(wait))).await?;
            }
        }
        Ok(())
    }

    /// Delivers one queue message with the source's retries, and its dead letter when they
    /// run out. True when the message is dealt with and can be acknowledged.
    async fn deliver_now(
        &self,
        namespace: &str,
        name: &str,
        sink: &Destination,
        policy: &Policy,
        event: Event,
    ) -> bool {
        let Ok(target) = sink.resolve("sink", namespace) else {
            return false;
        };
        let timeout = Duration::from_micros(policy.timeout_us);
        let mut attempts = 0;
        let (error, status, body) = loop {
            let attempt = self.transport.send(namespace, &target, event.clone(), timeout).await;
            attempts += 1;
            match attempt.failure() {
                None => {
                    self.transport.counted(namespace, name, "nats", true);
                    self.record(namespace, name, sink, &event, DELIVERED, attempts, None);
                    return true;
                }
                Some(Failure {
                    error,
                    can_retry,
                    status,
                    body,
                }) => {
                    self.transport.counted(namespace, name, "nats", false);
                    if !can_retry || attempts > policy.retries {
                        break (error, status, body);
                    }
                    tokio::time::sleep(Duration::from_micros(policy.backoff_us(attempts))).await;
                }
            }
        };
        let Some(dead_letter) = &policy.dead_letter else {
            self.record(namespace, name, sink, &event, FAILED, attempts, Some(&error));
            return false;
        };
        let letter = dead_letter_event(event.clone(), self.transport.url(&target), status, &body);
        let Ok(letter_target) = dead_letter.resolve("deadLetterSink", namespace) else {
            return false;
        };
        match self
            .transport
            .send(namespace, &letter_target, letter, timeout)
            .await
            .failure()
        {
            None => {
                self.record(namespace, name, sink, &event, DEAD_LETTERED, attempts, Some(&error));
                true
            }
            Some(_) => false,
        }
    }

    /// Keeps a queue message's delivery in the trigger's history.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        namespace: &str,
        name: &str,
        sink: &Destination,
        event: &Event,
        status: &str,
        attempts: u32,
        error: Option<&str>,
    ) {
        let delivery = NewDelivery {
            trigger: name.to_string(),
            event: serde_json::to_string(event).unwrap_or_default(),
            target: serde_json::to_string(sink).unwrap_or_default(),
            policy: String::new(),
            dead_letter: false,
            broker: None,
            scheduled_at_us: None,
        };
        if let Err(e) = self
            .store
            .record(namespace, &delivery, status, attempts, error, (self.clock)())
        {
            tracing::warn!(source = %name, "cannot record a delivery: {e}");
        }
    }
}
