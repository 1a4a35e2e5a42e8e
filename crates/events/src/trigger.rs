//! What a trigger is: a cron schedule, a broker filter or a message source, each with a
//! destination and a delivery spec. Stored as JSON and checked before it is stored.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use updraft_model::names::validate_service_name;
use updraft_model::FieldError;

use crate::announce::PlatformSpec;
use crate::cron::{CatchUp, Schedule};
use crate::delivery::{DeliverySpec, Destination};
use crate::filter::{validate_attribute_name, Filter};
use crate::sources::mqtt::MqttSpec;
use crate::sources::rabbitmq::RabbitMqSpec;
use crate::sources::redis::RedisStreamSpec;
use crate::webhook::WebhookSpec;

pub const DEFAULT_BROKER: &str = "default";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// The CloudEvents type of a cron firing, as Knative's PingSource sends it.
pub const PING_EVENT_TYPE: &str = "dev.knative.sources.ping";
/// The CloudEvents type of a NATS message turned into an event.
pub const NATS_EVENT_TYPE: &str = "dev.updraft.sources.nats";
/// Largest cron payload; a firing is stored with each delivery.
pub const MAX_CRON_DATA: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TriggerSpec {
    Cron(CronSpec),
    Event(EventSpec),
    Nats(NatsSpec),
    #[serde(rename = "rabbitmq")]
    RabbitMq(RabbitMqSpec),
    #[serde(rename = "redisstream")]
    RedisStream(RedisStreamSpec),
    Mqtt(MqttSpec),
    Webhook(WebhookSpec),
    Platform(PlatformSpec),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CronSpec {
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub sink: Destination,
    #[serde(default)]
    pub catch_up: CatchUp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EventSpec {
    #[serde(default = "default_broker")]
    pub broker: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filter: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    pub subscriber: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NatsSpec {
    #[serde(default = "default_nats_url")]
    pub url: String,
    pub subject: String,
    /// A JetStream stream: messages are acknowledged only after delivery. Without one,
    /// a core NATS subscription delivers at most once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<String>,
    pub sink: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

fn default_broker() -> String {
    DEFAULT_BROKER.to_string()
}
fn default_nats_url() -> String {
    DEFAULT_NATS_URL.to_string()
}

impl TriggerSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            TriggerSpec::Cron(_) => "cron",
            TriggerSpec::Event(_) => "event",
            TriggerSpec::Nats(_) => "nats",
            TriggerSpec::RabbitMq(_) => "rabbitmq",
            TriggerSpec::RedisStream(_) => "redisstream",
            TriggerSpec::Mqtt(_) => "mqtt",
            TriggerSpec::Webhook(_) => "webhook",
            TriggerSpec::Platform(_) => "platform",
        }
    }

    pub fn destination(&self) -> &Destination {
        match self {
            TriggerSpec::Cron(c) => &c.sink,
            TriggerSpec::Event(e) => &e.subscriber,
            TriggerSpec::Nats(n) => &n.sink,
            TriggerSpec::RabbitMq(r) => &r.sink,
            TriggerSpec::RedisStream(r) => &r.sink,
            TriggerSpec::Mqtt(m) => &m.sink,
            TriggerSpec::Webhook(w) => &w.sink,
            TriggerSpec::Platform(p) => &p.sink,
        }
    }

    pub fn delivery(&self) -> Option<&DeliverySpec> {
        match self {
            TriggerSpec::Cron(c) => c.delivery.as_ref(),
            TriggerSpec::Event(e) => e.delivery.as_ref(),
            TriggerSpec::Nats(n) => n.delivery.as_ref(),
            TriggerSpec::RabbitMq(r) => r.delivery.as_ref(),
            TriggerSpec::RedisStream(r) => r.delivery.as_ref(),
            TriggerSpec::Mqtt(m) => m.delivery.as_ref(),
            TriggerSpec::Webhook(w) => w.delivery.as_ref(),
            TriggerSpec::Platform(p) => p.delivery.as_ref(),
        }
    }

    /// Whether a source loop reads this trigger's messages from another system.
    pub fn is_message_source(&self) -> bool {
        matches!(
            self,
            TriggerSpec::Nats(_) | TriggerSpec::RabbitMq(_) | TriggerSpec::RedisStream(_) | TriggerSpec::Mqtt(_)
        )
    }

    /// Checks every field; `prefix` is where the spec sits in its manifest (`spec`).
    pub fn validate(&self, prefix: &str, namespace: &str) -> Result<(), FieldError> {
        let at = |name: &str| format!("{prefix}.{name}");
        match self {
            TriggerSpec::Cron(c) => {
                Schedule::parse(&at("schedule"), &c.schedule, c.timezone.as_deref())?;
                c.sink.resolve(&at("sink"), namespace)?;
                if c.data.is_some() && c.data_base64.is_some() {
                    return Err(FieldError::new(at("data"), "and dataBase64 are both set; give one"));
                }
                if let Some(data) = &c.data_base64 {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .map_err(|e| FieldError::new(at("dataBase64"), format!("is not base64: {e}")))?;
                    check_size(&at("dataBase64"), bytes.len())?;
                }
                if let Some(data) = &c.data {
                    check_size(&at("data"), data.len())?;
                }
                if let Some(content_type) = &c.content_type {
                    if !content_type.contains('/') || content_type.chars().any(|ch| ch.is_control()) {
                        return Err(FieldError::new(
                            at("contentType"),
                            format!("{content_type:?} is not a media type like application/json"),
                        ));
                    }
                }
            }
            TriggerSpec::Event(e) => {
                validate_service_name(&at("broker"), &e.broker)?;
                for name in e.filter.keys() {
                    validate_attribute_name(&format!("{prefix}.filter.attributes"), name)?;
                }
                for (i, f) in e.filters.iter().enumerate() {
                    f.validate(&format!("{prefix}.filters[{i}]"))?;
                }
                e.subscriber.resolve(&at("subscriber"), namespace)?;
            }
            TriggerSpec::Nats(n) => {
                if !(n.url.starts_with("nats://") || n.url.starts_with("tls://")) || n.url.len() < 8 {
                    return Err(FieldError::new(at("url"), format!("{:?} is not a nats:// URL", n.url)));
                }
                let subject_ok = !n.subject.is_empty()
                    && n.subject.split('.').all(|t| !t.is_empty())
                    && !n.subject.chars().any(|c| c.is_whitespace());
                if !subject_ok {
                    return Err(FieldError::new(
                        at("subject"),
                        format!(
                            "{:?} is not a NATS subject (dot-separated tokens, * and > wildcards)",
                            n.subject
                        ),
                    ));
                }
                for (name, value) in [("stream", &n.stream), ("durable", &n.durable)] {
                    if let Some(v) = value {
                        if v.is_empty()
                            || v.len() > 64
                            || v.chars().any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                        {
                            return Err(FieldError::new(
                                at(name),
                                format!("{v:?} must be letters, digits, - and _ (at most 64)"),
                            ));
                        }
                    }
                }
                if n.durable.is_some() && n.stream.is_none() {
                    return Err(FieldError::new(
                        at("durable"),
                        "needs a stream: durable consumers are JetStream's",
                    ));
                }
                n.sink.resolve(&at("sink"), namespace)?;
            }
            TriggerSpec::RabbitMq(r) => {
                r.validate(at)?;
                r.sink.resolve(&at("sink"), namespace)?;
            }
            TriggerSpec::RedisStream(r) => {
                r.validate(at)?;
                r.sink.resolve(&at("sink"), namespace)?;
            }
            TriggerSpec::Mqtt(m) => {
                m.validate(at)?;
                m.sink.resolve(&at("sink"), namespace)?;
            }
            TriggerSpec::Webhook(w) => {
                w.validate(at)?;
                w.sink.resolve(&at("sink"), namespace)?;
            }
            TriggerSpec::Platform(p) => {
                p.validate(at)?;
                p.sink.resolve(&at("sink"), namespace)?;
            }
        }
        if let Some(delivery) = self.delivery() {
            delivery.validate(&at("delivery"), namespace)?;
        }
        Ok(())
    }
}

fn check_size(field: &str, len: usize) -> Result<(), FieldError> {
    if len > MAX_CRON_DATA {
        return Err(FieldError::new(
            field,
            format!("is {len} bytes; at most {MAX_CRON_DATA} allowed"),
        ));
    }
    Ok(())
}

/// Trigger names follow service names' rules: they appear in event sources and URLs.
pub fn validate_trigger_name(field: &str, name: &str) -> Result<(), FieldError> {
    validate_service_name(field, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(schedule: &str) -> TriggerSpec {
        TriggerSpec::Cron(CronSpec {
            schedule: schedule.into(),
            timezone: None,
            data: None,
            data_base64: None,
            content_type: None,
            sink: Destination::service("hello", None),
            catch_up: CatchUp::Skip,
            delivery: None,
        })
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        assert!(cron("*/5 * * * * *").validate("spec", "default").is_ok());
        assert!(cron("bad")
            .validate("spec", "default")
            .unwrap_err()
            .to_string()
            .starts_with("spec.schedule: "));
        let TriggerSpec::Cron(mut both) = cron("* * * * *") else {
            unreachable!()
        };
        both.data = Some("x".into());
        both.data_base64 = Some("eA==".into());
        assert!(TriggerSpec::Cron(both)
            .validate("spec", "d")
            .unwrap_err()
            .to_string()
            .contains("both set"));
        let nats = |subject: &str, stream: Option<&str>, durable: Option<&str>| {
            TriggerSpec::Nats(NatsSpec {
                url: DEFAULT_NATS_URL.into(),
                subject: subject.into(),
                stream: stream.map(Into::into),
                durable: durable.map(Into::into),
                sink: Destination::service("hello", None),
                delivery: None,
            })
            .validate("spec", "d")
        };
        assert!(nats("orders.*", Some("ORDERS"), Some("updraft")).is_ok());
        assert!(nats("orders..x", None, None)
            .unwrap_err()
            .to_string()
            .contains("spec.subject"));
        assert!(nats("orders", None, Some("d"))
            .unwrap_err()
            .to_string()
            .contains("needs a stream"));
        assert!(nats("orders", Some("A.B"), None)
            .unwrap_err()
            .to_string()
            .contains("spec.stream"));
        let event = TriggerSpec::Event(EventSpec {
            broker: "default".into(),
            filter: BTreeMap::from([("Type".to_string(), "x".to_string())]),
            filters: vec![],
            subscriber: Destination::service("hello", None),
            delivery: None,
        });
        assert!(event
            .validate("spec", "d")
            .unwrap_err()
            .to_string()
            .contains("spec.filter.attributes"));
    }

    #[test]
    fn specs_round_trip_as_tagged_json() {
        let spec = cron("@hourly");
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"kind\":\"cron\""));
        assert_eq!(serde_json::from_str::<TriggerSpec>(&json).unwrap(), spec);
    }
}
