//! CloudEvents 1.0 over HTTP: reading binary, structured and batched requests, and
//! writing an event as a binary-mode request.

use bytes::Bytes;
use cloudevents::binding::http::builder::Builder;
use cloudevents::binding::http::{to_event, Serializer};
use cloudevents::event::{ExtensionValue, SpecVersion};
use cloudevents::message::BinaryDeserializer;
use cloudevents::{AttributesReader, Event};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use updraft_model::FieldError;

pub use cloudevents::{Data, EventBuilder, EventBuilderV10};

const BATCH: &str = "application/cloudevents-batch+json";

/// Reads the events of one ingress request: one in binary or structured mode, or
/// several in batched mode. Every event must be CloudEvents 1.0 with its required
/// attributes; the error names the first that is not, and why.
pub fn read_request(headers: &HeaderMap, body: Bytes) -> Result<Vec<Event>, FieldError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with(BATCH) {
        let values: Vec<serde_json::Value> = serde_json::from_slice(&body)
            .map_err(|e| FieldError::new("body", format!("is not a JSON array of CloudEvents: {e}")))?;
        if values.is_empty() {
            return Err(FieldError::new("body", "is an empty batch"));
        }
        return values
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                let field = format!("body[{i}]");
                require_v1(&field, value.get("specversion").and_then(|v| v.as_str()))?;
                let event: Event = serde_json::from_value(value)
                    .map_err(|e| FieldError::new(&field, format!("is not a valid CloudEvent: {e}")))?;
                check(&field, event)
            })
            .collect();
    }
    let structured = content_type.starts_with("application/cloudevents+json");
    if structured {
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| FieldError::new("body", format!("is not JSON: {e}")))?;
        require_v1("body", value.get("specversion").and_then(|v| v.as_str()))?;
    } else {
        let version = headers.get("ce-specversion").and_then(|v| v.to_str().ok());
        if version.is_none() {
            return Err(FieldError::new(
                "ce-specversion",
                "is missing: send a binary-mode event (ce-* headers) or a structured one (content-type application/cloudevents+json)",
            ));
        }
        require_v1("ce-specversion", version)?;
    }
    let field = if structured { "body" } else { "headers" };
    let event = to_event(headers, body.to_vec())
        .map_err(|e| FieldError::new(field, format!("is not a valid CloudEvent: {e}")))?;
    Ok(vec![check(field, event)?])
}

fn require_v1(field: &str, version: Option<&str>) -> Result<(), FieldError> {
    match version {
        Some("1.0") => Ok(()),
        Some(other) => Err(FieldError::new(
            field,
            format!("specversion {other:?} is not supported; send CloudEvents 1.0"),
        )),
        None => Err(FieldError::new(field, "has no specversion; send CloudEvents 1.0")),
    }
}

fn check(field: &str, event: Event) -> Result<Event, FieldError> {
    if event.specversion() != SpecVersion::V10 {
        return Err(FieldError::new(field, "is not CloudEvents 1.0"));
    }
    for (name, value) in [
        ("id", event.id()),
        ("type", event.ty()),
        ("source", event.source().as_str()),
    ] {
        if value.is_empty() {
            return Err(FieldError::new(
                field,
                format!("attribute {name} is empty; it is required"),
            ));
        }
    }
    Ok(event)
}

/// An attribute or extension as text, the way filters compare it.
pub fn attribute(event: &Event, name: &str) -> Option<String> {
    event
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
}

/// Sets an extension attribute (Knative's dead-letter extensions, the origin of replies).
pub fn set_extension(event: &mut Event, name: &str, value: impl Into<ExtensionValue>) {
    event.set_extension(name, value);
}

/// An event as a binary-mode HTTP request: `ce-*` headers, `content-type` and the data.
pub fn to_binary(event: Event) -> Result<(HeaderMap, Bytes), String> {
    struct Parts(HeaderMap);
    impl Builder<(HeaderMap, Bytes)> for Parts {
        fn header(&mut self, key: &str, value: HeaderValue) {
            if let Ok(name) = http::HeaderName::from_bytes(key.as_bytes()) {
                self.0.insert(name, value);
            }
        }
        fn body(&mut self, bytes: Vec<u8>) -> cloudevents::message::Result<(HeaderMap, Bytes)> {
            Ok((std::mem::take(&mut self.0), Bytes::from(bytes)))
        }
        fn finish(&mut self) -> cloudevents::message::Result<(HeaderMap, Bytes)> {
            Ok((std::mem::take(&mut self.0), Bytes::new()))
        }
    }
    BinaryDeserializer::deserialize_binary(event, Serializer::new(Parts(HeaderMap::new()))).map_err(|e| e.to_string())
}

/// A subscriber's reply, when it is an event (binary or structured); anything else,
/// including an empty reply, is not.
pub fn read_reply(headers: &HeaderMap, body: Bytes) -> Option<Event> {
    let structured = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/cloudevents+json"));
    if !structured && !headers.contains_key("ce-specversion") {
        return None;
    }
    read_request(headers, body).ok().and_then(|mut events| events.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const BINARY: &[(&str, &str)] = &[
        ("ce-specversion", "1.0"),
        ("ce-id", "e1"),
        ("ce-source", "/orders"),
        ("ce-type", "order.created"),
        ("ce-region", "eu"),
        ("content-type", "application/json"),
    ];

    #[test]
    fn binary_structured_and_batched_events_are_read() {
        let events = read_request(&headers(BINARY), Bytes::from_static(b"{\"n\":1}")).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].ty(), "order.created");
        assert_eq!(attribute(&events[0], "region").as_deref(), Some("eu"));
        assert_eq!(attribute(&events[0], "source").as_deref(), Some("/orders"));

        let structured = br#"{"specversion":"1.0","id":"e2","source":"/s","type":"t","data":{"k":1}}"#;
        let events = read_request(
            &headers(&[("content-type", "application/cloudevents+json; charset=utf-8")]),
            Bytes::from_static(structured),
        )
        .unwrap();
        assert_eq!(events[0].id(), "e2");

        let batch = br#"[{"specversion":"1.0","id":"a","source":"/s","type":"t"},{"specversion":"1.0","id":"b","source":"/s","type":"t"}]"#;
        let events = read_request(&headers(&[("content-type", BATCH)]), Bytes::from_static(batch)).unwrap();
        assert_eq!(events.iter().map(|e| e.id()).collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn an_event_round_trips_through_binary_mode() {
        let event = read_request(&headers(BINARY), Bytes::from_static(b"{\"n\":1}"))
            .unwrap()
            .remove(0);
        let (h, body) = to_binary(event).unwrap();
        assert_eq!(h.get("ce-id").unwrap(), "e1");
        assert_eq!(h.get("ce-region").unwrap(), "eu");
        assert_eq!(h.get("content-type").unwrap(), "application/json");
        assert_eq!(&body[..], b"{\"n\":1}");
        let back = read_reply(&h, body).unwrap();
        assert_eq!(back.id(), "e1");
        assert!(read_reply(&HeaderMap::new(), Bytes::from_static(b"ok")).is_none());
    }

    #[test]
    fn bad_events_are_refused_with_the_reason() {
        let err = |h: &[(&str, &str)], body: &'static [u8]| {
            read_request(&headers(h), Bytes::from_static(body))
                .unwrap_err()
                .to_string()
        };
        assert!(err(&[], b"{}").contains("ce-specversion: is missing"));
        let mut old = BINARY.to_vec();
        old[0] = ("ce-specversion", "0.3");
        assert!(err(&old, b"").contains("\"0.3\" is not supported"));
        let no_id: Vec<_> = BINARY.iter().copied().filter(|(k, _)| *k != "ce-id").collect();
        assert!(err(&no_id, b"").contains("id"), "{}", err(&no_id, b""));
        let no_type: Vec<_> = BINARY.iter().copied().filter(|(k, _)| *k != "ce-type").collect();
        assert!(err(&no_type, b"").contains("type"));
        let structured = [("content-type", "application/cloudevents+json")];
        assert!(err(&structured, b"not json").contains("body: is not JSON"));
        assert!(err(&structured, br#"{"id":"x","source":"/s","type":"t"}"#).contains("has no specversion"));
        assert!(
            err(&structured, br#"{"specversion":"1.0","source":"/s","type":"t"}"#).contains("not a valid CloudEvent")
        );
        let batch = [("content-type", BATCH)];
        assert!(err(&batch, b"[]").contains("empty batch"));
        assert!(err(
            &batch,
            br#"[{"specversion":"1.0","id":"a","source":"/s","type":"t"},{"specversion":"1.0","id":"b"}]"#
        )
        .starts_with("body[1]"));
    }
}
