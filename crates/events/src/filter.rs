//! Trigger filters: Knative's `filter.attributes` and the `filters` dialects.

use std::collections::BTreeMap;

use cloudevents::Event;
use serde::{Deserialize, Serialize};
use updraft_model::FieldError;

use crate::cloudevent::attribute;

/// One entry of a Trigger's `filters` (Knative's SubscriptionsAPIFilter): exactly one
/// dialect per entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub all: Option<Vec<Filter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub any: Option<Vec<Filter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub not: Option<Box<Filter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cesql: Option<String>,
}

impl Filter {
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        let set = [
            self.exact.is_some(),
            self.prefix.is_some(),
            self.suffix.is_some(),
            self.all.is_some(),
            self.any.is_some(),
            self.not.is_some(),
            self.cesql.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if set != 1 {
            return Err(FieldError::new(
                field,
                format!("has {set} dialects; give exactly one of exact, prefix, suffix, all, any, not"),
            ));
        }
        if self.cesql.is_some() {
            return Err(FieldError::new(
                format!("{field}.cesql"),
                "is not supported; use exact, prefix, suffix, all, any or not",
            ));
        }
        for (name, map) in [
            ("exact", &self.exact),
            ("prefix", &self.prefix),
            ("suffix", &self.suffix),
        ] {
            if let Some(map) = map {
                if map.len() != 1 {
                    return Err(FieldError::new(
                        format!("{field}.{name}"),
                        format!("has {} attributes; give exactly one", map.len()),
                    ));
                }
                for (attr, value) in map {
                    validate_attribute_name(&format!("{field}.{name}"), attr)?;
                    if name != "exact" && value.is_empty() {
                        return Err(FieldError::new(format!("{field}.{name}.{attr}"), "must not be empty"));
                    }
                }
            }
        }
        for (name, list) in [("all", &self.all), ("any", &self.any)] {
            if let Some(list) = list {
                for (i, inner) in list.iter().enumerate() {
                    inner.validate(&format!("{field}.{name}[{i}]"))?;
                }
            }
        }
        if let Some(inner) = &self.not {
            inner.validate(&format!("{field}.not"))?;
        }
        Ok(())
    }

    pub fn matches(&self, event: &Event) -> bool {
        let test = |map: &BTreeMap<String, String>, pass: &dyn Fn(&str, &str) -> bool| {
            map.iter()
                .all(|(name, want)| attribute(event, name).is_some_and(|have| pass(&have, want)))
        };
        if let Some(map) = &self.exact {
            return test(map, &|have, want| have == want);
        }
        if let Some(map) = &self.prefix {
            return test(map, &|have, want| have.starts_with(want));
        }
        if let Some(map) = &self.suffix {
            return test(map, &|have, want| have.ends_with(want));
        }
        if let Some(list) = &self.all {
            return list.iter().all(|f| f.matches(event));
        }
        if let Some(list) = &self.any {
            return list.iter().any(|f| f.matches(event));
        }
        if let Some(inner) = &self.not {
            return !inner.matches(event);
        }
        false
    }
}

/// CloudEvents attribute names are lower-case letters and digits.
pub fn validate_attribute_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > 20 || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        return Err(FieldError::new(
            field,
            format!("{name:?} is not a CloudEvents attribute name (lower-case letters and digits, at most 20)"),
        ));
    }
    Ok(())
}

/// A trigger's whole filter: with `filters` set, `filter.attributes` is ignored, as in
/// Knative; an attribute filter's empty value matches any value of a present attribute.
pub fn trigger_matches(attributes: &BTreeMap<String, String>, filters: &[Filter], event: &Event) -> bool {
    if !filters.is_empty() {
        return filters.iter().all(|f| f.matches(event));
    }
    attributes
        .iter()
        .all(|(name, want)| attribute(event, name).is_some_and(|have| want.is_empty() || &have == want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloudevent::{EventBuilder, EventBuilderV10};

    fn event(ty: &str, source: &str) -> Event {
        EventBuilderV10::new()
            .id("1")
            .ty(ty)
            .source(source)
            .extension("region", "eu-west")
            .build()
            .unwrap()
    }

    fn one(kind: &str, attr: &str, value: &str) -> Filter {
        let map = Some(BTreeMap::from([(attr.to_string(), value.to_string())]));
        match kind {
            "exact" => Filter {
                exact: map,
                ..Default::default()
            },
            "prefix" => Filter {
                prefix: map,
                ..Default::default()
            },
            _ => Filter {
                suffix: map,
                ..Default::default()
            },
        }
    }

    #[test]
    fn dialects_match_as_knative_defines_them() {
        let e = event("com.shop.order.created", "/shop/eu");
        assert!(one("exact", "type", "com.shop.order.created").matches(&e));
        assert!(!one("exact", "type", "com.shop.order").matches(&e));
        assert!(one("prefix", "type", "com.shop.").matches(&e));
        assert!(one("suffix", "source", "/eu").matches(&e));
        assert!(
            one("prefix", "region", "eu-").matches(&e),
            "extensions are attributes too"
        );
        assert!(!one("exact", "missing", "x").matches(&e));
        let all = Filter {
            all: Some(vec![one("prefix", "type", "com."), one("suffix", "source", "/us")]),
            ..Default::default()
        };
        assert!(!all.matches(&e));
        let any = Filter {
            any: Some(vec![one("prefix", "type", "org."), one("suffix", "source", "/eu")]),
            ..Default::default()
        };
        assert!(any.matches(&e));
        let not = Filter {
            not: Some(Box::new(one("exact", "type", "com.shop.order.created"))),
            ..Default::default()
        };
        assert!(!not.matches(&e));
    }

    #[test]
    fn attribute_filters_match_exactly_and_empty_means_any() {
        let e = event("order.created", "/shop");
        let attrs = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(trigger_matches(&attrs(&[("type", "order.created")]), &[], &e));
        assert!(!trigger_matches(
            &attrs(&[("type", "order.created"), ("source", "/other")]),
            &[],
            &e
        ));
        assert!(trigger_matches(&attrs(&[("region", "")]), &[], &e));
        assert!(!trigger_matches(&attrs(&[("absent", "")]), &[], &e));
        assert!(
            trigger_matches(&BTreeMap::new(), &[], &e),
            "no filter takes every event"
        );
        assert!(
            trigger_matches(&attrs(&[("type", "nope")]), &[one("exact", "source", "/shop")], &e),
            "filters win over filter.attributes"
        );
    }

    #[test]
    fn malformed_filters_name_the_field() {
        let two = Filter {
            exact: Some(BTreeMap::new()),
            prefix: Some(BTreeMap::new()),
            ..Default::default()
        };
        assert!(two
            .validate("spec.filters[0]")
            .unwrap_err()
            .to_string()
            .contains("has 2 dialects"));
        let empty = Filter {
            exact: Some(BTreeMap::new()),
            ..Default::default()
        };
        assert!(empty
            .validate("f")
            .unwrap_err()
            .to_string()
            .contains("f.exact: has 0 attributes"));
        let nested = Filter {
            not: Some(Box::new(one("prefix", "type", ""))),
            ..Default::default()
        };
        assert_eq!(
            nested.validate("f").unwrap_err().to_string(),
            "f.not.prefix.type: must not be empty"
        );
        let sql = Filter {
            cesql: Some("type = 'x'".into()),
            ..Default::default()
        };
        assert!(sql.validate("f").unwrap_err().to_string().contains("not supported"));
        assert!(one("exact", "Type", "x").validate("f").is_err());
    }
}
