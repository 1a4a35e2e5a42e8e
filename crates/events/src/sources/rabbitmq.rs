//! RabbitMQ (AMQP 0-9-1), with Knative RabbitmqSource's model: a queue, optionally
//! declared and bound to an exchange; `prefetch` bounds the messages in flight; a
//! message is acknowledged after its delivery, or handed back (`basic.nack` with
//! requeue) when it could not be delivered nor dead-lettered. Unacknowledged
//! messages of a lost connection go back to the queue, so a crash loses none.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use updraft_model::FieldError;

use super::{
    content_id, event_source, message_event, refuse_inline_password, with_password, BoxError, Message, Messages,
    PasswordRef, SecretLookup, Settle, Source, CHECK_TIMEOUT,
};
use crate::delivery::{DeliverySpec, Destination};

/// The CloudEvents type of a message without a `type` property, as Knative's.
pub const RABBITMQ_EVENT_TYPE: &str = "dev.knative.rabbitmq.event";
pub const DEFAULT_RABBITMQ_URL: &str = "amqp://guest@127.0.0.1:5672/%2f";
const MAX_PREFETCH: u16 = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RabbitMqSpec {
    /// `amqp://user@host:port/vhost`; the password comes from `password`.
    #[serde(default = "default_url")]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<PasswordRef>,
    pub queue: String,
    /// Declare the queue (durable) when it is missing; otherwise it must exist.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub declare: bool,
    /// An exchange to bind the queue to (it must exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Messages in delivery at once (AMQP `basic.qos`), 1 to 1000.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

fn default_url() -> String {
    DEFAULT_RABBITMQ_URL.to_string()
}
fn default_prefetch() -> u16 {
    10
}

fn check_amqp_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
        return Err(FieldError::new(
            field,
            format!("{name:?} must be 1 to 255 characters without control characters"),
        ));
    }
    Ok(())
}

impl RabbitMqSpec {
    pub fn validate(&self, at: impl Fn(&str) -> String) -> Result<(), FieldError> {
        if !self.url.starts_with("amqp://") {
            return Err(FieldError::new(
                at("url"),
                format!("{:?} is not an amqp://user@host:port/vhost URL", self.url),
            ));
        }
        refuse_inline_password(&at("url"), &self.url)?;
        self.url
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|e| FieldError::new(at("url"), format!("{:?} is not an AMQP URL: {e}", self.url)))?;
        if let Some(password) = &self.password {
            password.secret_key_ref.validate(&at("password.secretKeyRef"))?;
        }
        check_amqp_name(&at("queue"), &self.queue)?;
        if let Some(exchange) = &self.exchange {
            check_amqp_name(&at("exchange"), exchange)?;
        }
        if let Some(key) = &self.routing_key {
            if self.exchange.is_none() {
                return Err(FieldError::new(at("routingKey"), "needs an exchange to bind with"));
            }
            if key.len() > 255 || key.chars().any(|c| c.is_control()) {
                return Err(FieldError::new(
                    at("routingKey"),
                    "must be at most 255 characters without control characters",
                ));
            }
        }
        if !(1..=MAX_PREFETCH).contains(&self.prefetch) {
            return Err(FieldError::new(
                at("prefetch"),
                format!("is {}; 1 to {MAX_PREFETCH} allowed", self.prefetch),
            ));
        }
        Ok(())
    }
}

pub struct RabbitMqSource {
    namespace: String,
    name: String,
    spec: RabbitMqSpec,
    url: String,
}

impl RabbitMqSource {
    pub fn new(
        namespace: &str,
        name: &str,
        spec: RabbitMqSpec,
        secrets: &dyn SecretLookup,
    ) -> Result<RabbitMqSource, FieldError> {
        let password = spec
            .password
            .as_ref()
            .map(|p| p.resolve("spec.password", namespace, secrets))
            .transpose()?;
        Ok(RabbitMqSource {
            namespace: namespace.to_string(),
            name: name.to_string(),
            url: with_password(&spec.url, password.as_deref()),
            spec,
        })
    }

    async fn connect(&self) -> Result<(Connection, lapin::Channel), BoxError> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        Ok((connection, channel))
    }

    /// Declares or looks up the queue, and binds it.
    async fn prepare(&self, channel: &lapin::Channel) -> Result<(), FieldError> {
        let options = QueueDeclareOptions {
            passive: !self.spec.declare,
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(self.spec.queue.as_str().into(), options, FieldTable::default())
            .await
            .map_err(|e| {
                FieldError::new(
                    "spec.queue",
                    format!(
                        "queue {:?} cannot be used (set declare to create it): {e}",
                        self.spec.queue
                    ),
                )
            })?;
        if let Some(exchange) = &self.spec.exchange {
            channel
                .queue_bind(
                    self.spec.queue.as_str().into(),
                    exchange.as_str().into(),
                    self.spec.routing_key.clone().unwrap_or_default().as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| FieldError::new("spec.exchange", format!("cannot bind to {exchange:?}: {e}")))?;
        }
        Ok(())
    }
}

struct AmqpAck(lapin::Acker);

#[async_trait::async_trait]
impl Settle for AmqpAck {
    async fn ack(self: Box<Self>) -> Result<(), BoxError> {
        self.0.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
    async fn nack(self: Box<Self>, after: Duration) -> Result<(), BoxError> {
        // A requeued message comes straight back; the pause keeps a failing
        // subscriber from being called in a tight loop.
        tokio::time::sleep(after).await;
        self.0
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Source for RabbitMqSource {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    fn in_flight(&self) -> usize {
        self.spec.prefetch as usize
    }

    async fn open(&self) -> Result<Messages, BoxError> {
        let (connection, channel) = self.connect().await?;
        self.prepare(&channel).await?;
        channel
            .basic_qos(self.spec.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.spec.queue.as_str().into(),
                format!("updraft-{}-{}", self.namespace, self.name).as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let source = format!(
            "{}#{}",
            event_source(&self.namespace, "rabbitmq", &self.name),
            self.spec.queue
        );
        let queue = self.spec.queue.clone();
        Ok(consumer
            .map(move |delivery| {
                // The connection lives as long as the stream reads from it.
                let _open = &connection;
                let delivery = delivery?;
                let properties = &delivery.properties;
                let id = match properties.message_id() {
                    Some(id) => id.to_string(),
                    None => content_id(&[
                        queue.as_bytes(),
                        delivery.routing_key.as_str().as_bytes(),
                        &delivery.data,
                    ]),
                };
                let ty = properties
                    .kind()
                    .as_ref()
                    .map_or(RABBITMQ_EVENT_TYPE.to_string(), |t| t.to_string());
                let routing_key = delivery.routing_key.to_string();
                let content_type = properties.content_type().as_ref().map(|t| t.to_string());
                let event = message_event(
                    id,
                    &ty,
                    source.clone(),
                    Some(&routing_key).filter(|k| !k.is_empty()).map(String::as_str),
                    content_type.as_deref(),
                    &delivery.data,
                )?;
                Ok(Message {
                    event,
                    settle: Box::new(AmqpAck(delivery.acker)),
                })
            })
            .boxed())
    }

    async fn check(&self) -> Result<(), FieldError> {
        let checked = tokio::time::timeout(CHECK_TIMEOUT, async {
            let (connection, channel) = self
                .connect()
                .await
                .map_err(|e| FieldError::new("spec.url", format!("cannot connect to RabbitMQ: {e}")))?;
            let prepared = self.prepare(&channel).await;
            let _ = connection.close(200, "checked".into()).await;
            prepared
        })
        .await;
        checked.unwrap_or_else(|_| Err(FieldError::new("spec.url", "RabbitMQ did not answer within 5 s")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RabbitMqSpec {
        RabbitMqSpec {
            url: DEFAULT_RABBITMQ_URL.into(),
            password: None,
            queue: "orders".into(),
            declare: false,
            exchange: None,
            routing_key: None,
            prefetch: 10,
            sink: Destination::service("hello", None),
            delivery: None,
        }
    }

    fn error(spec: RabbitMqSpec) -> String {
        spec.validate(|f| format!("spec.{f}")).unwrap_err().to_string()
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        assert!(spec().validate(|f| format!("spec.{f}")).is_ok());
        assert!(error(RabbitMqSpec {
            url: "http://x".into(),
            ..spec()
        })
        .starts_with("spec.url: "));
        assert!(error(RabbitMqSpec {
            url: "amqp://u:p@h/".into(),
            ..spec()
        })
        .contains("carries a password"));
        assert!(error(RabbitMqSpec {
            queue: String::new(),
            ..spec()
        })
        .starts_with("spec.queue: "));
        assert!(error(RabbitMqSpec {
            routing_key: Some("k".into()),
            ..spec()
        })
        .contains("needs an exchange"));
        assert!(error(RabbitMqSpec { prefetch: 0, ..spec() }).starts_with("spec.prefetch: is 0"));
    }
}
