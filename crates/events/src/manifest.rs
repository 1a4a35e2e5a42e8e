//! Knative manifests for triggers: `sources.knative.dev/v1` PingSource,
//! `eventing.knative.dev/v1` Trigger and Broker, beside serving's Service, in and out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use updraft_model::knative::{parse_manifest_value, strict, yaml_documents, KService, ObjectMeta};
use updraft_model::FieldError;

use crate::cron::CatchUp;
use crate::delivery::{DeliverySpec, Destination};
use crate::filter::Filter;
use crate::trigger::{CronSpec, EventSpec, TriggerSpec, DEFAULT_BROKER};

const SOURCES_API: &str = "sources.knative.dev/v1";
const EVENTING_API: &str = "eventing.knative.dev/v1";
const SERVING_API: &str = "serving.knative.dev/v1";
/// PingSource has no field for missed ticks; this annotation chooses `skip` or `once`.
pub const CATCH_UP_ANNOTATION: &str = "updraft.dev/catch-up";

/// One document of a manifest file.
#[derive(Debug, Clone)]
pub enum Document {
    Service(Box<KService>),
    Trigger(Box<NamedTrigger>),
    Broker(Box<NamedBroker>),
    DomainMapping(Box<updraft_model::domain::MappingDocument>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedTrigger {
    pub namespace: Option<String>,
    pub name: String,
    pub spec: TriggerSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedBroker {
    pub namespace: Option<String>,
    pub name: String,
    pub delivery: Option<DeliverySpec>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Resource<S> {
    api_version: String,
    kind: String,
    metadata: ObjectMeta,
    spec: S,
    #[serde(default, skip_serializing)]
    #[allow(dead_code)]
    status: Option<serde_json::Value>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PingSourceSpec {
    schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
    sink: Destination,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TriggerFilter {
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KTriggerSpec {
    broker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    filter: Option<TriggerFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    filters: Vec<Filter>,
    subscriber: Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivery: Option<DeliverySpec>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct BrokerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivery: Option<DeliverySpec>,
}

/// Splits a file into its documents and parses each; empty documents are skipped. An
/// error carries the document's position (1-based).
pub fn parse_documents(text: &str) -> Result<Vec<Document>, (usize, FieldError)> {
    yaml_documents(text)?
        .into_iter()
        .map(|(i, value)| parse_document(value).map_err(|e| (i, e)))
        .collect()
}

pub fn parse_document(value: serde_yaml_ng::Value) -> Result<Document, FieldError> {
    let text_at = |key: &str| value.get(key).and_then(|v| v.as_str()).unwrap_or("").to_string();
    let (api_version, kind) = (text_at("apiVersion"), text_at("kind"));
    match (api_version.as_str(), kind.as_str()) {
        (SERVING_API, "Service") => Ok(Document::Service(Box::new(parse_manifest_value(value)?))),
        (SOURCES_API, "PingSource") => {
            let r: Resource<PingSourceSpec> = strict(value)?;
            let catch_up = match r.metadata.annotations.get(CATCH_UP_ANNOTATION) {
                None => CatchUp::Skip,
                Some(v) => v.parse().map_err(|e: String| {
                    FieldError::new(format!("metadata.annotations.{CATCH_UP_ANNOTATION}"), e)
                })?,
            };
            let spec = TriggerSpec::Cron(CronSpec {
                schedule: r.spec.schedule,
                timezone: r.spec.timezone,
                data: r.spec.data,
                data_base64: r.spec.data_base64,
                content_type: r.spec.content_type,
                sink: r.spec.sink,
                catch_up,
                delivery: None,
            });
            named(r.metadata, spec)
        }
        (EVENTING_API, "Trigger") => {
            let r: Resource<KTriggerSpec> = strict(value)?;
            let spec = TriggerSpec::Event(EventSpec {
                broker: r.spec.broker,
                filter: r.spec.filter.map(|f| f.attributes).unwrap_or_default(),
                filters: r.spec.filters,
                subscriber: r.spec.subscriber,
                delivery: r.spec.delivery,
            });
            named(r.metadata, spec)
        }
        (EVENTING_API, "Broker") => {
            let r: Resource<BrokerSpec> = strict(value)?;
            let name = required_name(&r.metadata)?;
            updraft_model::names::validate_service_name("metadata.name", &name)?;
            if let Some(delivery) = &r.spec.delivery {
                delivery.validate("spec.delivery", r.metadata.namespace.as_deref().unwrap_or("default"))?;
            }
            Ok(Document::Broker(Box::new(NamedBroker {
                namespace: r.metadata.namespace,
                name,
                delivery: r.spec.delivery,
            })))
        }
        (updraft_model::domain::API_VERSION, updraft_model::domain::KIND) => Ok(Document::DomainMapping(Box::new(
            updraft_model::domain::from_manifest(value)?,
        ))),
        _ => Err(FieldError::new(
            "apiVersion/kind",
            format!(
                "{api_version:?}/{kind:?} is not supported; updraft apply takes {SERVING_API} Service, {} DomainMapping, {SOURCES_API} PingSource, {EVENTING_API} Trigger and {EVENTING_API} Broker", updraft_model::domain::API_VERSION
            ),
        )),
    }
}

fn required_name(meta: &ObjectMeta) -> Result<String, FieldError> {
    meta.name
        .clone()
        .ok_or_else(|| FieldError::new("metadata.name", "is missing; every resource needs a name"))
}

fn named(meta: ObjectMeta, spec: TriggerSpec) -> Result<Document, FieldError> {
    let name = required_name(&meta)?;
    crate::trigger::validate_trigger_name("metadata.name", &name)?;
    spec.validate("spec", meta.namespace.as_deref().unwrap_or("default"))?;
    Ok(Document::Trigger(Box::new(NamedTrigger {
        namespace: meta.namespace,
        name,
        spec,
    })))
}

/// A trigger as the Knative manifest that makes it, or `None` for a NATS source, which
/// has no Knative v1 shape.
pub fn to_manifest(namespace: &str, name: &str, spec: &TriggerSpec) -> Option<serde_json::Value> {
    let meta = |annotations: BTreeMap<String, String>| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace.to_string()),
        labels: BTreeMap::new(),
        annotations,
    };
    let value = match spec {
        TriggerSpec::Cron(c) => {
            let annotations = match c.catch_up {
                CatchUp::Skip => BTreeMap::new(),
                CatchUp::Once => BTreeMap::from([(CATCH_UP_ANNOTATION.to_string(), "once".to_string())]),
            };
            serde_json::to_value(Resource {
                api_version: SOURCES_API.to_string(),
                kind: "PingSource".to_string(),
                metadata: meta(annotations),
                spec: PingSourceSpec {
                    schedule: c.schedule.clone(),
                    timezone: c.timezone.clone(),
                    content_type: c.content_type.clone(),
                    data: c.data.clone(),
                    data_base64: c.data_base64.clone(),
                    sink: c.sink.clone(),
                },
                status: None,
            })
        }
        TriggerSpec::Event(e) => serde_json::to_value(Resource {
            api_version: EVENTING_API.to_string(),
            kind: "Trigger".to_string(),
            metadata: meta(BTreeMap::new()),
            spec: KTriggerSpec {
                broker: e.broker.clone(),
                filter: (!e.filter.is_empty()).then(|| TriggerFilter {
                    attributes: e.filter.clone(),
                }),
                filters: e.filters.clone(),
                subscriber: e.subscriber.clone(),
                delivery: e.delivery.clone(),
            },
            status: None,
        }),
        _ => return None,
    };
    value.ok()
}

/// The default broker, which every namespace has without a manifest.
pub fn is_default_broker(name: &str) -> bool {
    name == DEFAULT_BROKER
}

#[cfg(test)]
mod tests {
    use super::*;

    const PING: &str = r#"
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata:
  name: tick
  annotations:
    updraft.dev/catch-up: once
spec:
  schedule: "*/2 * * * * *"
  timezone: Asia/Shanghai
  contentType: application/json
  data: '{"k": 1}'
  sink:
    ref:
      apiVersion: serving.knative.dev/v1
      kind: Service
      name: hello
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders
  namespace: shop
spec:
  broker: default
  filter:
    attributes:
      type: order.created
  filters:
    - any:
        - prefix: { source: /shop }
        - suffix: { source: /eu }
  subscriber:
    ref: { apiVersion: serving.knative.dev/v1, kind: Service, name: hello }
    uri: /orders
  delivery:
    retry: 2
    backoffPolicy: linear
    backoffDelay: PT0.1S
    deadLetterSink:
      ref: { apiVersion: serving.knative.dev/v1, kind: Service, name: dlq }
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
spec:
  delivery:
    retry: 4
"#;

    #[test]
    fn ping_sources_triggers_and_brokers_parse_and_round_trip() {
        let docs = parse_documents(PING).unwrap();
        assert_eq!(docs.len(), 3);
        let Document::Trigger(ping) = &docs[0] else {
            panic!("not a trigger")
        };
        let TriggerSpec::Cron(cron) = &ping.spec else {
            panic!("not cron")
        };
        assert_eq!(
            (cron.timezone.as_deref(), cron.catch_up),
            (Some("Asia/Shanghai"), CatchUp::Once)
        );
        let Document::Trigger(orders) = &docs[1] else {
            panic!("not a trigger")
        };
        assert_eq!(orders.namespace.as_deref(), Some("shop"));
        let TriggerSpec::Event(event) = &orders.spec else {
            panic!("not event")
        };
        assert_eq!(event.filter.get("type").map(String::as_str), Some("order.created"));
        assert_eq!(event.delivery.as_ref().unwrap().retry, Some(2));
        let Document::Broker(broker) = &docs[2] else {
            panic!("not a broker")
        };
        assert_eq!(broker.delivery.as_ref().unwrap().retry, Some(4));

        for doc in &docs[..2] {
            let Document::Trigger(t) = doc else { unreachable!() };
            let out = to_manifest(t.namespace.as_deref().unwrap_or("default"), &t.name, &t.spec).unwrap();
            let again = parse_document(serde_yaml_ng::to_value(&out).unwrap()).unwrap();
            let Document::Trigger(back) = again else {
                panic!("not a trigger")
            };
            assert_eq!(back.spec, t.spec);
        }
    }

    #[test]
    fn bad_manifests_name_the_field() {
        let err = |text: &str| parse_documents(text).unwrap_err().1.to_string();
        let ping = |spec: &str| {
            format!("apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {{name: t}}\nspec:\n{spec}")
        };
        let sink = "  sink: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: hello}}\n";
        assert!(err(&ping(&format!("  schedule: '*/70 * * * * *'\n{sink}"))).contains("spec.schedule: invalid cron"));
        assert!(err(&ping(&format!(
            "  schedule: '* * * * *'\n  timezone: Nowhere/Land\n{sink}"
        )))
        .contains("IANA"));
        assert!(err(&ping("  schedule: '* * * * *'\n")).contains("missing field `sink`"));
        assert!(
            err(&ping(&format!("  schedule: '* * * * *'\n  ceOverrides: {{}}\n{sink}")))
                .contains("spec.ceOverrides: unknown or unsupported field")
        );
        assert!(
            err(&ping(&format!("  schedule: '* * * * *'\n  dataBase64: '***'\n{sink}")))
                .contains("spec.dataBase64: is not base64")
        );
        assert!(err("apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {}\nspec: {schedule: '* * * * *', sink: {uri: 'http://x'}}").contains("metadata.name: is missing"));
        assert!(err("apiVersion: sources.knative.dev/v1\nkind: ApiServerSource\n").contains("is not supported"));
        let trigger = |spec: &str| {
            format!("apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\nspec:\n  broker: default\n  subscriber: {{uri: 'http://127.0.0.1:1/'}}\n{spec}")
        };
        assert!(err(&trigger("  filters: [{exact: {type: a}, prefix: {type: b}}]\n"))
            .contains("spec.filters[0]: has 2 dialects"));
        assert!(err(&trigger("  delivery: {backoffDelay: 5s}\n")).contains("spec.delivery.backoffDelay"));
        assert!(err(&trigger("  delivery: {backoffPolicy: random}\n")).contains("spec.delivery.backoffPolicy"));
        assert!(err(&trigger("  filter: {attributes: {Type: x}}\n")).contains("spec.filter.attributes"));
    }
}
