//! Extractors whose refusals are [`ApiError`]s, so every error the API sends has the
//! one documented shape, and the path parameters the OpenAPI document describes.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use updraft_api::schema;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::openapi::Required;
use utoipa::IntoParams;

use crate::ApiError;

/// A JSON body; a refusal names the field that failed, as `spec.sink.ref.name`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Serialize> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::new(e.status(), format!("body: {}", e.body_text())))?;
        json_body(&bytes).map(JsonBody)
    }
}

/// Parses JSON so that errors name the field, unlike the stock extractor, and holds
/// it to the documented shape: serde reads a struct from an array too (`[1, 2]` as
/// the first two fields), which the schema does not allow and no client means.
pub fn json_body<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<T, ApiError> {
    // Parsed once; the value is both what is read and what the shape is checked against.
    let sent: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request("body", e.to_string()))?;
    let value: T = serde_path_to_error::deserialize(&sent).map_err(|e| {
        let error = e.inner().to_string();
        // An unknown key is a fault of the object that holds it, as a misspelt
        // setting is reported against the body rather than against a name it lacks.
        // (Inside an internally tagged enum serde tracks no path at all.)
        let depth = e
            .path()
            .iter()
            .count()
            .saturating_sub(usize::from(error.starts_with("unknown field")));
        ApiError::bad_request(&field_path(e.path().iter().take(depth)), error)
    })?;
    let read = serde_json::to_value(&value).map_err(ApiError::internal)?;
    match array_read_as_object(&sent, &read, "body") {
        Some(field) => Err(ApiError::bad_request(&field, "must be a JSON object, not an array")),
        None => Ok(value),
    }
}

/// `spec.sink.ref`, `traffic[2].percent`, or `body` for the whole of it (and for a
/// place serde could not reach, as in a body cut short).
fn field_path<'a>(segments: impl Iterator<Item = &'a serde_path_to_error::Segment>) -> String {
    use serde_path_to_error::Segment;
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Segment::Unknown => break,
        }
    }
    if path.is_empty() {
        "body".to_string()
    } else {
        path
    }
}

/// Where the request has an array and what was read from it is an object: a struct
/// filled from a sequence.
fn array_read_as_object(sent: &serde_json::Value, read: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    match (sent, read) {
        (Value::Array(_), Value::Object(_)) => Some(at.to_string()),
        (Value::Object(sent), Value::Object(read)) => sent.iter().find_map(|(key, value)| {
            let field = if at == "body" {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            read.get(key).and_then(|r| array_read_as_object(value, r, &field))
        }),
        (Value::Array(sent), Value::Array(read)) => sent
            .iter()
            .zip(read)
            .enumerate()
            .find_map(|(i, (s, r))| array_read_as_object(s, r, &format!("{at}[{i}]"))),
        _ => None,
    }
}

pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|e| ApiError::bad_request("query", e.body_text()))
    }
}

pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|e| ApiError::new(e.status(), format!("path: {}", e.body_text())))
    }
}

#[derive(Deserialize)]
pub struct NamespacePath {
    pub ns: String,
}

/// A service, trigger or broker.
#[derive(Deserialize)]
pub struct NamedPath {
    pub ns: String,
    pub name: String,
}

#[derive(Deserialize)]
pub struct RevisionPath {
    pub ns: String,
    pub revision: String,
}

// By hand: the derive drops `required` from parameters whose schema is built by a
// function, and path parameters are always required.
impl IntoParams for NamespacePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![path_param("ns", schema::namespace_name())]
    }
}

impl IntoParams for NamedPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            path_param("ns", schema::namespace_name()),
            path_param("name", schema::service_name()),
        ]
    }
}

impl IntoParams for RevisionPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            path_param("ns", schema::namespace_name()),
            path_param("revision", schema::revision_name()),
        ]
    }
}

pub(crate) fn path_param(name: &str, schema: ObjectBuilder) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .schema(Some(schema))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_events::delivery::DeliverySpec;

    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default)]
        delivery: Option<DeliverySpec>,
        #[serde(default)]
        list: Vec<DeliverySpec>,
    }

    #[test]
    fn a_struct_sent_as_an_array_is_refused_where_it_was_sent() {
        let e = json_body::<Outer>(b"[null, []]").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"), "{}", e.message);
        let e = json_body::<Outer>(br#"{"delivery": [3]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("delivery"), "{}", e.message);
        let e = json_body::<Outer>(br#"{"list": [{}, [null]]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("list[1]"), "{}", e.message);
    }

    #[test]
    fn objects_and_lists_pass() {
        let ok = json_body::<Outer>(br#"{"delivery": {"retry": 2}, "list": [{}, {"retry": 1}]}"#).unwrap();
        assert_eq!(ok.list.len(), 2);
        assert_eq!(ok.delivery.and_then(|d| d.retry), Some(2));
    }

    #[test]
    fn an_unknown_key_is_the_fault_of_the_object_holding_it() {
        let e = json_body::<Outer>(br#"{"replicas": 3}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"), "{}", e.message);
        assert!(e.message.contains("unknown field `replicas`"), "{}", e.message);
        let e = json_body::<Outer>(br#"{"list": [{}, {"retries": 1}]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("list[1]"), "{}", e.message);
    }

    #[test]
    fn an_unknown_key_in_a_tagged_spec_is_refused_too() {
        let e = json_body::<updraft_events::trigger::TriggerSpec>(br#"{"kind": "cron", "bogus": 1}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"), "{}", e.message);
        assert!(e.message.contains("bogus"), "{}", e.message);
    }

    #[test]
    fn a_body_cut_short_is_the_body_at_fault() {
        let e = json_body::<Outer>(b"{").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"), "{}", e.message);
    }

    #[test]
    fn a_type_error_names_the_field() {
        let e = json_body::<Outer>(br#"{"delivery": {"retry": "x"}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("delivery.retry"), "{}", e.message);
    }
}
