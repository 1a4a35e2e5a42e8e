//! Message sources: NATS, RabbitMQ, Redis Streams and MQTT, behind one trait.
//!
//! A [`Source`] connects to its system and yields [`Message`]s: the CloudEvent to
//! deliver (type, source and id taken from the message, so a redelivery keeps its id)
//! and the way to settle it. The loop here is the same for every kind: deliver with
//! the source's retries, dead-letter when they run out, and only then acknowledge to
//! the system; a message not dealt with is handed back, so a crash loses nothing.
//! Deliveries of one source run up to `in_flight` at once and are settled in the order
//! read (MQTT requires it, and the others do not mind).

pub mod mqtt;
pub mod nats;
pub mod rabbitmq;
pub mod redis;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cloudevents::{Event, EventBuilder, EventBuilderV10};
use futures_util::stream::{BoxStream, FuturesOrdered};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use updraft_model::secret::SecretKeyRef;
use updraft_model::FieldError;
use updraft_store::events::{NewDelivery, DEAD_LETTERED, DELIVERED, FAILED};
use updraft_store::EventStore;

use crate::delivery::{Destination, Policy};
use crate::dispatch::{dead_letter_event, Failure, Signals, Transport};
use crate::scheduler::parse_spec;
use crate::trigger::TriggerSpec;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a definition-time check may wait on the source's system.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One message read from a source.
pub struct Message {
    pub event: Event,
    pub settle: Box<dyn Settle>,
}

/// Tells the source's system what became of a message.
#[async_trait::async_trait]
pub trait Settle: Send {
    /// Delivered or dead-lettered: the system may forget it.
    async fn ack(self: Box<Self>) -> Result<(), BoxError>;
    /// Not delivered: the system keeps it and offers it again, not before `after`.
    async fn nack(self: Box<Self>, after: Duration) -> Result<(), BoxError>;
}

/// Settles nothing: for a system that does not keep messages (core NATS).
pub struct NoSettle;

#[async_trait::async_trait]
impl Settle for NoSettle {
    async fn ack(self: Box<Self>) -> Result<(), BoxError> {
        Ok(())
    }
    async fn nack(self: Box<Self>, _: Duration) -> Result<(), BoxError> {
        Ok(())
    }
}

pub type Messages = BoxStream<'static, Result<Message, BoxError>>;

#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// The trigger kind, for logs and metrics.
    fn kind(&self) -> &'static str;
    /// Messages in delivery at once.
    fn in_flight(&self) -> usize {
        1
    }
    /// Connects and reads until the connection ends or fails.
    async fn open(&self) -> Result<Messages, BoxError>;
    /// What only the real system can tell at definition time: a server that does not
    /// answer, a queue that does not exist. The error names the field.
    async fn check(&self) -> Result<(), FieldError>;
}

/// The namespace's secrets, as the platform keeps them.
pub trait SecretLookup: Send + Sync {
    /// One key of a secret as text; the error names `reader` and what is missing.
    fn text(&self, namespace: &str, reference: &SecretKeyRef, reader: &str) -> Result<String, String>;
}

/// A password kept in a secret, named by a source's spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRef {
    #[serde(rename = "secretKeyRef")]
    pub secret_key_ref: SecretKeyRef,
}

impl PasswordRef {
    pub fn resolve(&self, field: &str, namespace: &str, secrets: &dyn SecretLookup) -> Result<String, FieldError> {
        secrets
            .text(namespace, &self.secret_key_ref, field)
            .map_err(|e| FieldError::new(format!("{field}.secretKeyRef"), e))
    }
}

/// Refuses a URL that carries a password: specs are shown to anyone who may read
/// the trigger, so the password belongs in a secret.
pub fn refuse_inline_password(field: &str, url: &str) -> Result<(), FieldError> {
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
    if authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    {
        return Err(FieldError::new(
            field,
            "carries a password; keep it in a secret and name it with password.secretKeyRef",
        ));
    }
    Ok(())
}

/// Builds the connection URL with the password put back in, percent-encoded.
pub fn with_password(url: &str, password: Option<&str>) -> String {
    let Some(password) = password else {
        return url.to_string();
    };
    let encoded = percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC).to_string();
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) if !user.contains('/') => format!("{scheme}://{user}:{encoded}@{host}"),
            _ => format!("{scheme}://:{encoded}@{rest}"),
        },
        None => url.to_string(),
    }
}

/// The `source` attribute of a source's events: where Knative would name the
/// source resource.
pub fn event_source(namespace: &str, kind: &str, name: &str) -> String {
    format!("/apis/v1/namespaces/{namespace}/{kind}sources/{name}")
}

/// An event from a message's payload: JSON payloads keep their media type.
pub fn message_event(
    id: String,
    ty: &str,
    source: String,
    subject: Option<&str>,
    content_type: Option<&str>,
    payload: &[u8],
) -> Result<Event, BoxError> {
    let content_type = match content_type {
        Some(t) => t,
        None if serde_json::from_slice::<serde_json::Value>(payload).is_ok() => "application/json",
        None => "application/octet-stream",
    };
    let mut builder = EventBuilderV10::new()
        .id(id)
        .ty(ty)
        .source(source)
        .time(chrono::Utc::now())
        .data(content_type, payload.to_vec());
    if let Some(subject) = subject {
        builder = builder.subject(subject);
    }
    Ok(builder.build()?)
}

/// A stable id for a message its system does not name: the same content read again
/// gets the same id.
pub fn content_id(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hex::encode(&hash.finalize()[..16])
}

/// The source a trigger's spec describes, with its secrets resolved; `None` for a
/// kind that is not a message source.
pub fn source_for(
    namespace: &str,
    name: &str,
    spec: &TriggerSpec,
    secrets: &dyn SecretLookup,
) -> Option<Result<Arc<dyn Source>, FieldError>> {
    let made: Result<Arc<dyn Source>, FieldError> = match spec {
        TriggerSpec::Nats(s) => Ok(Arc::new(nats::NatsSource::new(namespace, name, s.clone()))),
        TriggerSpec::RabbitMq(s) => {
            rabbitmq::RabbitMqSource::new(namespace, name, s.clone(), secrets).map(|s| Arc::new(s) as _)
        }
        TriggerSpec::RedisStream(s) => {
            redis::RedisStreamSource::new(namespace, name, s.clone(), secrets).map(|s| Arc::new(s) as _)
        }
        TriggerSpec::Mqtt(s) => mqtt::MqttSource::new(namespace, name, s.clone(), secrets).map(|s| Arc::new(s) as _),
        _ => return None,
    };
    Some(made)
}

/// What the source loops need of the platform.
pub struct Sources {
    pub store: Arc<dyn EventStore>,
    pub transport: Arc<dyn Transport>,
    pub signals: Arc<Signals>,
    pub secrets: Arc<dyn SecretLookup>,
    /// µs since the epoch.
    pub clock: fn() -> i64,
}

type Running = HashMap<(String, String), (String, tokio::task::JoinHandle<()>)>;

/// Keeps one task per message source, restarted when its spec changes.
pub async fn run(sources: Arc<Sources>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut running: Running = HashMap::new();
    loop {
        let changed = sources.signals.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let store = sources.store.clone();
        let triggers = tokio::task::spawn_blocking(move || store.triggers(None).unwrap_or_default())
            .await
            .unwrap_or_default();
        let wanted: HashMap<(String, String), (String, TriggerSpec)> = triggers
            .into_iter()
            .filter_map(|t| {
                let spec = parse_spec(&t)?;
                spec.is_message_source()
                    .then_some(((t.namespace, t.name), (t.spec, spec)))
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

/// Reads one source until it is stopped, reconnecting with a bounded backoff. A
/// secret it needs and cannot find ends the task; the next reload tries again.
async fn consume(sources: Arc<Sources>, namespace: String, name: String, spec: TriggerSpec) {
    let source = match source_for(&namespace, &name, &spec, &*sources.secrets) {
        Some(Ok(source)) => source,
        Some(Err(e)) => {
            tracing::warn!(source = %name, namespace = %namespace, "cannot start the source: {e}");
            return;
        }
        None => return,
    };
    let sink = spec.destination().clone();
    let policy = spec.delivery().cloned().unwrap_or_default().policy(None);
    let mut backoff = Duration::from_millis(250);
    loop {
        match sources.consume_once(&namespace, &name, &*source, &sink, &policy).await {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => {
                tracing::warn!(source = %name, kind = source.kind(), "{e}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

impl Sources {
    async fn consume_once(
        &self,
        namespace: &str,
        name: &str,
        source: &dyn Source,
        sink: &Destination,
        policy: &Policy,
    ) -> Result<(), BoxError> {
        let mut messages = source.open().await?;
        let kind = source.kind();
        let in_flight = source.in_flight().max(1);
        let mut delivering = FuturesOrdered::new();
        let mut open = true;
        while open || !delivering.is_empty() {
            tokio::select! {
                biased;
                Some((settle, done)) = delivering.next(), if !delivering.is_empty() => {
                    let settle: Box<dyn Settle> = settle;
                    if done {
                        settle.ack().await?;
                    } else {
                        settle.nack(Duration::from_micros(policy.backoff_us(1))).await?;
                    }
                }
                read = messages.next(), if open && delivering.len() < in_flight => match read {
                    Some(read) => {
                        let Message { event, settle } = read?;
                        delivering.push_back(async move {
                            (settle, self.deliver_now(namespace, name, kind, sink, policy, event).await)
                        });
                    }
                    None => open = false,
                },
            }
        }
        Ok(())
    }

    /// Delivers one message with the source's retries, and its dead letter when they
    /// run out. True when the message is dealt with and can be acknowledged.
    async fn deliver_now(
        &self,
        namespace: &str,
        name: &str,
        kind: &str,
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
                    self.transport.counted(namespace, name, kind, true);
                    self.record(namespace, name, sink, &event, DELIVERED, attempts, None);
                    return true;
                }
                Some(Failure {
                    error,
                    can_retry,
                    status,
                    body,
                }) => {
                    self.transport.counted(namespace, name, kind, false);
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

    /// Keeps a message's delivery in the trigger's history.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_urls_and_are_put_back_encoded() {
        assert!(refuse_inline_password("spec.url", "amqp://guest@127.0.0.1:5672/%2f").is_ok());
        assert!(refuse_inline_password("spec.url", "redis://127.0.0.1:6379/0").is_ok());
        let refused = refuse_inline_password("spec.url", "amqp://guest:guest@h/").unwrap_err();
        assert!(refused.to_string().starts_with("spec.url: carries a password"));
        assert_eq!(
            with_password("amqp://guest@127.0.0.1:5672/%2f", Some("p@ss")),
            "amqp://guest:p%40ss@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            with_password("redis://127.0.0.1:6379", Some("x")),
            "redis://:x@127.0.0.1:6379"
        );
        assert_eq!(with_password("redis://h", None), "redis://h");
    }

    #[test]
    fn content_ids_are_stable_and_tell_parts_apart() {
        assert_eq!(content_id(&[b"a", b"bc"]), content_id(&[b"a", b"bc"]));
        assert_ne!(content_id(&[b"ab", b"c"]), content_id(&[b"a", b"bc"]));
        assert_eq!(content_id(&[b"x"]).len(), 32);
    }
}
