//! NATS: a core subscription (at most once) or a JetStream pull consumer whose
//! messages are acknowledged only once delivered.

use std::time::Duration;

use futures_util::StreamExt;
use updraft_model::FieldError;

use super::{event_source, message_event, BoxError, Message, Messages, NoSettle, Settle, Source};
use crate::trigger::{NatsSpec, NATS_EVENT_TYPE};

pub struct NatsSource {
    namespace: String,
    name: String,
    spec: NatsSpec,
}

impl NatsSource {
    pub fn new(namespace: &str, name: &str, spec: NatsSpec) -> NatsSource {
        NatsSource {
            namespace: namespace.to_string(),
            name: name.to_string(),
            spec,
        }
    }
}

struct JetStreamAck(async_nats::jetstream::Message);

#[async_trait::async_trait]
impl Settle for JetStreamAck {
    async fn ack(self: Box<Self>) -> Result<(), BoxError> {
        self.0.ack().await
    }
    async fn nack(self: Box<Self>, after: Duration) -> Result<(), BoxError> {
        self.0.ack_with(async_nats::jetstream::AckKind::Nak(Some(after))).await
    }
}

#[async_trait::async_trait]
impl Source for NatsSource {
    fn kind(&self) -> &'static str {
        "nats"
    }

    async fn open(&self) -> Result<Messages, BoxError> {
        use async_nats::jetstream;
        let client = async_nats::connect(&self.spec.url).await?;
        let source = event_source(&self.namespace, "nats", &self.name);
        let Some(stream_name) = &self.spec.stream else {
            let subscription = client.subscribe(self.spec.subject.clone()).await?;
            return Ok(subscription
                .map(move |message| {
                    let id = uuid::Uuid::new_v4().to_string();
                    let event = message_event(
                        id,
                        NATS_EVENT_TYPE,
                        source.clone(),
                        Some(&message.subject),
                        None,
                        &message.payload,
                    )?;
                    Ok(Message {
                        event,
                        settle: Box::new(NoSettle),
                    })
                })
                .boxed());
        };
        let context = jetstream::new(client);
        let stream = context
            .get_or_create_stream(jetstream::stream::Config {
                name: stream_name.clone(),
                subjects: vec![self.spec.subject.clone()],
                ..Default::default()
            })
            .await?;
        let durable = self
            .spec
            .durable
            .clone()
            .unwrap_or_else(|| format!("updraft-{}-{}", self.namespace, self.name));
        let policy = self.spec.delivery.clone().unwrap_or_default().policy(None);
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_or_create_consumer(
                &durable,
                jetstream::consumer::pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: self.spec.subject.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_micros(policy.timeout_us) * (policy.retries + 2),
                    ..Default::default()
                },
            )
            .await?;
        let messages = consumer.messages().await?;
        Ok(messages
            .map(move |message| {
                let message = message?;
                // The stream sequence names the message for good, so a redelivery after
                // a crash carries the same event id and the subscriber can drop it.
                let id = match message.info() {
                    Ok(info) => format!("{}-{}", info.stream, info.stream_sequence),
                    Err(_) => uuid::Uuid::new_v4().to_string(),
                };
                let event = message_event(
                    id,
                    NATS_EVENT_TYPE,
                    source.clone(),
                    Some(&message.subject),
                    None,
                    &message.payload,
                )?;
                Ok(Message {
                    event,
                    settle: Box::new(JetStreamAck(message)),
                })
            })
            .boxed())
    }

    async fn check(&self) -> Result<(), FieldError> {
        match tokio::time::timeout(super::CHECK_TIMEOUT, async_nats::connect(&self.spec.url)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(FieldError::new("spec.url", format!("cannot connect to NATS: {e}"))),
            Err(_) => Err(FieldError::new("spec.url", "NATS did not answer within 5 s")),
        }
    }
}
