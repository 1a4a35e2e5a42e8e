//! CloudEvents 1.0 over HTTP: reading binary, structured and batched requests, and
//! writing an event as a binary-mode request.

use bytes::Bytes;
use cloudevents::binding::http::builder::Builder;
use cloudevents::binding::http::Serializer;
use cloudevents::event::{ExtensionValue, SpecVersion};
use cloudevents::message::{BinaryDeserializer, BinarySerializer, MessageAttributeValue};
use cloudevents::{AttributesReader, Event};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, CONTROLS};
use updraft_model::FieldError;

pub use cloudevents::{Data, EventBuilder, EventBuilderV10};

const BATCH: &str = "application/cloudevents-batch+json";

/// Longest attribute or extension value accepted, in bytes.
pub const MAX_ATTRIBUTE_BYTES: usize = 4096;
/// Most extension attributes on one event.
pub const MAX_EXTENSIONS: usize = 64;
/// Longest extension name; the specification recommends at most 20 characters.
pub const MAX_EXTENSION_NAME: usize = 64;

/// What a binary-mode header value percent-encodes besides the controls and all that
/// is not ASCII: space, double-quote and percent (HTTP binding 1.0.2 §3.1.3.2).
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

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
    if structured {
        let event: Event = serde_json::from_slice(&body)
            .map_err(|e| FieldError::new("body", format!("is not a valid CloudEvent: {e}")))?;
        return Ok(vec![check("body", event)?]);
    }
    let event = Binary::read(headers, body)?
        .into_event()
        .map_err(|e| FieldError::new("headers", format!("is not a valid CloudEvent: {e}")))?;
    Ok(vec![check("headers", event)?])
}

/// A binary-mode event's attributes, decoded from their headers.
struct Binary {
    attributes: Vec<(String, String)>,
    content_type: Option<String>,
    body: Bytes,
}

impl Binary {
    fn read(headers: &HeaderMap, body: Bytes) -> Result<Binary, FieldError> {
        let mut attributes = Vec::new();
        for (name, value) in headers {
            let Some(attribute) = name.as_str().strip_prefix("ce-") else {
                continue;
            };
            if attribute == "specversion" {
                continue;
            }
            let field = name.as_str();
            attributes.push((attribute.to_string(), decode_header_value(field, value.as_bytes())?));
        }
        let content_type = match headers.get(CONTENT_TYPE) {
            Some(value) => Some(decode_header_value("content-type", value.as_bytes())?),
            None => None,
        };
        Ok(Binary {
            attributes,
            content_type,
            body,
        })
    }
}

impl BinaryDeserializer for Binary {
    fn deserialize_binary<R: Sized, V: BinarySerializer<R>>(self, visitor: V) -> cloudevents::message::Result<R> {
        let mut visitor = visitor.set_spec_version(SpecVersion::V10)?;
        let known = SpecVersion::V10.attribute_names();
        for (name, value) in self.attributes {
            let value = MessageAttributeValue::String(value);
            visitor = if known.contains(&name.as_str()) {
                visitor.set_attribute(&name, value)?
            } else {
                visitor.set_extension(&name, value)?
            };
        }
        if let Some(content_type) = self.content_type {
            visitor = visitor.set_attribute("datacontenttype", MessageAttributeValue::String(content_type))?;
        }
        if self.body.is_empty() {
            visitor.end()
        } else {
            visitor.end_with_data(self.body.to_vec())
        }
    }
}

/// A header value as the binding reads it: a double-quoted string unescaped (older
/// senders), then one round of percent-decoding, and the result must be UTF-8. Raw
/// UTF-8, which some senders put in headers, is taken as it is.
fn decode_header_value(field: &str, raw: &[u8]) -> Result<String, FieldError> {
    let unquoted: Vec<u8> = match raw {
        [b'"', inner @ .., b'"'] => {
            let mut out = Vec::with_capacity(inner.len());
            let mut escaped = false;
            for &b in inner {
                if !escaped && b == b'\\' {
                    escaped = true;
                } else {
                    out.push(b);
                    escaped = false;
                }
            }
            out
        }
        _ => raw.to_vec(),
    };
    let decoded: Vec<u8> = percent_decode(&unquoted).collect();
    String::from_utf8(decoded).map_err(|_| {
        FieldError::new(
            field,
            "is not UTF-8 once percent-decoded (the HTTP binding percent-encodes each UTF-8 byte, %C3%BC for ü)",
        )
    })
}

/// A header value as the binding writes it: UTF-8, percent-encoded outside printable
/// ASCII and for space, double-quote and percent.
fn encode_header_value(value: &[u8]) -> HeaderValue {
    let text = String::from_utf8_lossy(value);
    let encoded: String = utf8_percent_encode(&text, HEADER_VALUE).collect();
    HeaderValue::from_str(&encoded).expect("percent-encoded text is a valid header value")
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
    let mut extensions = 0;
    for (name, value) in event.iter() {
        let value = value.to_string();
        if value.len() > MAX_ATTRIBUTE_BYTES {
            return Err(FieldError::new(
                field,
                format!(
                    "attribute {name} is {} bytes long; at most {MAX_ATTRIBUTE_BYTES} are accepted (put large content in the data)",
                    value.len()
                ),
            ));
        }
        if !SpecVersion::V10.attribute_names().contains(&name) {
            extensions += 1;
            validate_extension_name(field, name)?;
        }
    }
    if extensions > MAX_EXTENSIONS {
        return Err(FieldError::new(
            field,
            format!("has {extensions} extension attributes; at most {MAX_EXTENSIONS} are accepted"),
        ));
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

/// Extension names are lower-case ASCII letters and digits (CloudEvents 1.0 §3.1.1);
/// receivers' SDKs refuse anything else.
pub fn validate_extension_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err(FieldError::new(
            field,
            format!("extension name {name:?} must be lower-case letters (a-z) and digits (0-9) only"),
        ));
    }
    if name.len() > MAX_EXTENSION_NAME {
        return Err(FieldError::new(
            field,
            format!(
                "extension name {name:?} is {} characters long; at most {MAX_EXTENSION_NAME} (20 or fewer are recommended)",
                name.len()
            ),
        ));
    }
    Ok(())
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
                let value = if key.starts_with("ce-") {
                    encode_header_value(value.as_bytes())
                } else {
                    value
                };
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

    fn raw_headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        map
    }

    fn binary_with(extra: &[(&str, &[u8])]) -> HeaderMap {
        let mut pairs: Vec<(&str, &[u8])> = BINARY.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        pairs.extend_from_slice(extra);
        raw_headers(&pairs)
    }

    #[test]
    fn header_values_are_percent_decoded_and_encoded_as_the_binding_says() {
        let event = read_request(
            &binary_with(&[
                ("ce-city", b"Z%C3%BCrich"),
                ("ce-quoted", b"\"a \\\"b\\\" c\""),
                ("ce-raw", "Zürich".as_bytes()),
                ("ce-subject", b"Euro%20%E2%82%AC%20%f0%9f%98%80"),
            ]),
            Bytes::new(),
        )
        .unwrap()
        .remove(0);
        assert_eq!(attribute(&event, "city").as_deref(), Some("Zürich"));
        assert_eq!(attribute(&event, "quoted").as_deref(), Some("a \"b\" c"));
        assert_eq!(
            attribute(&event, "raw").as_deref(),
            Some("Zürich"),
            "raw UTF-8 is taken as sent"
        );
        assert_eq!(event.subject(), Some("Euro € 😀"), "lower-case hex decodes too");

        let (h, _) = to_binary(event).unwrap();
        assert_eq!(h.get("ce-city").unwrap(), "Z%C3%BCrich");
        assert_eq!(h.get("ce-subject").unwrap(), "Euro%20%E2%82%AC%20%F0%9F%98%80");
        assert_eq!(h.get("ce-quoted").unwrap(), "a%20%22b%22%20c");
        let back = read_reply(&h, Bytes::new()).unwrap();
        assert_eq!(attribute(&back, "city").as_deref(), Some("Zürich"));

        let overlong = read_request(&binary_with(&[("ce-city", b"%C0%A0")]), Bytes::new()).unwrap_err();
        assert_eq!(overlong.field, "ce-city");
        assert!(overlong.message.contains("not UTF-8"), "{overlong}");
    }

    #[test]
    fn extension_names_and_attribute_sizes_are_bounded() {
        let bad_name = br#"{"specversion":"1.0","id":"a","source":"/s","type":"t","bad_ext":"x"}"#;
        let structured = headers(&[("content-type", "application/cloudevents+json")]);
        let e = read_request(&structured, Bytes::from_static(bad_name)).unwrap_err();
        assert!(
            e.message
                .contains("extension name \"bad_ext\" must be lower-case letters"),
            "{e}"
        );
        let upper = read_request(&binary_with(&[("ce-Region2", b"x")]), Bytes::new()).unwrap();
        assert_eq!(
            attribute(&upper[0], "region2").as_deref(),
            Some("x"),
            "header names are case-blind"
        );

        let long = "x".repeat(MAX_ATTRIBUTE_BYTES + 1);
        let e = read_request(&binary_with(&[("ce-big", long.as_bytes())]), Bytes::new()).unwrap_err();
        assert!(e.message.contains("attribute big is 4097 bytes long"), "{e}");

        let many: String = (0..=MAX_EXTENSIONS).map(|i| format!(r#","e{i}":"v""#)).collect();
        let body = format!(r#"{{"specversion":"1.0","id":"a","source":"/s","type":"t"{many}}}"#);
        let e = read_request(&structured, Bytes::from(body)).unwrap_err();
        assert!(e.message.contains("has 65 extension attributes"), "{e}");
        assert!(validate_extension_name("ext", &"a".repeat(MAX_EXTENSION_NAME + 1)).is_err());
        assert!(validate_extension_name("ext", "knativeerrordest").is_ok());
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
