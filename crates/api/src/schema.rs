//! Schemas for strings the API checks against a rule, built from the rule's own
//! constants so the document and the check cannot drift apart.

use updraft_model::domain::{DOMAIN_PATTERN, MAX_DOMAIN};
use updraft_model::names::{MAX_NAMESPACE_NAME, MAX_SERVICE_NAME, NAMESPACE_NAME_PATTERN, SERVICE_NAME_PATTERN};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};

fn label(pattern: &str, max: usize, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(1))
        .max_length(Some(max))
        .description(Some(description))
}

pub fn namespace_name() -> ObjectBuilder {
    label(
        NAMESPACE_NAME_PATTERN,
        MAX_NAMESPACE_NAME,
        "A namespace: a DNS-1123 label",
    )
}

/// A custom domain: the pattern is the rule's shape; the server checks label lengths
/// and the numeric top label as well.
pub fn domain_name() -> ObjectBuilder {
    label(
        DOMAIN_PATTERN,
        MAX_DOMAIN,
        "A DNS name of the user's own, like api.example.com",
    )
}

/// The same rule for a field that may also be `null` (an optional field).
fn or_null(schema: ObjectBuilder) -> ObjectBuilder {
    schema.schema_type(SchemaType::from_iter([Type::String, Type::Null]))
}

pub fn optional_tag() -> ObjectBuilder {
    or_null(label(
        NAMESPACE_NAME_PATTERN,
        MAX_NAMESPACE_NAME,
        "A tag: a DNS-1123 label",
    ))
}

pub fn optional_secret_name() -> ObjectBuilder {
    or_null(secret_name())
}

pub fn secret_name() -> ObjectBuilder {
    label(NAMESPACE_NAME_PATTERN, MAX_NAMESPACE_NAME, "A secret: a DNS-1123 label")
}

/// A secret's keys and their base64 values, at least one.
pub fn secret_data() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .min_properties(Some(1))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .content_encoding("base64"),
        ))
        .description(Some("Key → value, base64-encoded (as Kubernetes' `data`)"))
}

/// Services, triggers and brokers.
pub fn service_name() -> ObjectBuilder {
    label(SERVICE_NAME_PATTERN, MAX_SERVICE_NAME, "A DNS-1035 label")
}

/// `{service}-{generation}`, as `hello-00002`.
pub fn revision_name() -> ObjectBuilder {
    label(
        SERVICE_NAME_PATTERN,
        MAX_NAMESPACE_NAME,
        "A revision: `{service}-{generation}`",
    )
}

/// What `GET /v1/usage` sums by.
pub const USAGE_GROUPINGS: [&str; 4] = ["service", "revision", "day", "hour"];

pub fn usage_grouping() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(USAGE_GROUPINGS))
        .description(Some("What to sum usage by (`service` if not given)"))
}
