//! Where events go and how hard Updraft tries: Knative's `Destination` and
//! `DeliverySpec`, resolved into a [`Policy`] with the retry schedule.

use serde::{Deserialize, Serialize};
use updraft_model::names::validate_service_name;
use updraft_model::FieldError;

/// Knative's `Destination`: a service (`ref`, with `uri` as a path under it) or a URI.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Reference {
    #[serde(default = "service_api_version")]
    pub api_version: String,
    #[serde(default = "service_kind")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn service_api_version() -> String {
    "serving.knative.dev/v1".to_string()
}
fn service_kind() -> String {
    "Service".to_string()
}

/// Where a destination resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A service reached through the gateway, so one at zero is woken.
    Service {
        namespace: String,
        name: String,
        path: String,
    },
    Uri(String),
    /// A broker of the namespace: the event is accepted there and routed to its
    /// triggers, as if POSTed to its ingress.
    Broker {
        namespace: String,
        name: String,
    },
}

/// Knative's API group of brokers, for a `ref` to one.
pub const BROKER_API_VERSION: &str = "eventing.knative.dev/v1";

impl Destination {
    pub fn service(name: &str, path: Option<&str>) -> Destination {
        Destination {
            reference: Some(Reference {
                api_version: service_api_version(),
                kind: service_kind(),
                name: name.to_string(),
                namespace: None,
            }),
            uri: path.map(str::to_string),
        }
    }

    pub fn broker(name: &str) -> Destination {
        Destination {
            reference: Some(Reference {
                api_version: BROKER_API_VERSION.to_string(),
                kind: "Broker".to_string(),
                name: name.to_string(),
                namespace: None,
            }),
            uri: None,
        }
    }

    pub fn resolve(&self, field: &str, namespace: &str) -> Result<Target, FieldError> {
        match (&self.reference, &self.uri) {
            (Some(r), uri) if r.kind == "Broker" && r.api_version == BROKER_API_VERSION => {
                validate_service_name(&format!("{field}.ref.name"), &r.name)?;
                if r.namespace.as_deref().is_some_and(|ns| ns != namespace) {
                    return Err(FieldError::new(
                        format!("{field}.ref.namespace"),
                        format!("a broker destination is a broker of namespace {namespace:?}; leave it out or give {namespace:?}"),
                    ));
                }
                if uri.is_some() {
                    return Err(FieldError::new(
                        format!("{field}.uri"),
                        "cannot be given beside a broker ref",
                    ));
                }
                Ok(Target::Broker {
                    namespace: namespace.to_string(),
                    name: r.name.clone(),
                })
            }
            (Some(r), uri) => {
                if r.kind != "Service" || r.api_version != service_api_version() {
                    return Err(FieldError::new(
                        format!("{field}.ref"),
                        format!(
                            "{}/{} is not supported; a ref names a serving.knative.dev/v1 Service or an eventing.knative.dev/v1 Broker",
                            r.api_version, r.kind
                        ),
                    ));
                }
                validate_service_name(&format!("{field}.ref.name"), &r.name)?;
                // Namespaces are tenants: what one sets up delivers to its own services.
                if r.namespace.as_deref().is_some_and(|ns| ns != namespace) {
                    return Err(FieldError::new(
                        format!("{field}.ref.namespace"),
                        format!("a destination is a service of namespace {namespace:?}, where its trigger is; leave it out or give {namespace:?}"),
                    ));
                }
                let path = uri.clone().unwrap_or_else(|| "/".to_string());
                if !path.starts_with('/') {
                    return Err(FieldError::new(
                        format!("{field}.uri"),
                        format!("{path:?} beside a ref is a path and must start with /"),
                    ));
                }
                Ok(Target::Service {
                    namespace: r.namespace.clone().unwrap_or_else(|| namespace.to_string()),
                    name: r.name.clone(),
                    path,
                })
            }
            (None, Some(uri)) => {
                let ok = uri
                    .strip_prefix("http://")
                    .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'));
                if !ok {
                    return Err(FieldError::new(
                        format!("{field}.uri"),
                        format!("{uri:?} is not an absolute http:// URL (https sinks are not supported yet)"),
                    ));
                }
                Ok(Target::Uri(uri.clone()))
            }
            (None, None) => Err(FieldError::new(field, "names no service (ref) and no uri; give one")),
        }
    }

    /// How the destination reads in listings: the service's name or the URI.
    pub fn describe(&self) -> String {
        match (&self.reference, &self.uri) {
            (Some(r), _) if r.kind == "Broker" => format!("broker/{}", r.name),
            (Some(r), Some(path)) => format!("{}{path}", r.name),
            (Some(r), None) => r.name.clone(),
            (None, Some(uri)) => uri.clone(),
            (None, None) => String::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    Linear,
    #[default]
    Exponential,
}

/// Knative's `DeliverySpec`. Durations are ISO-8601 (`PT0.5S`, `PT1M`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeliverySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<BackoffPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink: Option<Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

pub const MAX_RETRIES: u32 = 100;
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_BACKOFF_US: u64 = 200_000;
pub const DEFAULT_TIMEOUT_US: u64 = 30_000_000;
/// Backoff stops growing here, so an exponential policy never waits for days.
pub const MAX_BACKOFF_US: u64 = 3_600_000_000;

/// A delivery spec with its defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub retries: u32,
    pub backoff: BackoffPolicy,
    pub delay_us: u64,
    pub timeout_us: u64,
    pub dead_letter: Option<Destination>,
}

impl Policy {
    /// As a delivery row keeps it.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl DeliverySpec {
    pub fn validate(&self, field: &str, namespace: &str) -> Result<(), FieldError> {
        if let Some(retry) = self.retry {
            if retry > MAX_RETRIES {
                return Err(FieldError::new(
                    format!("{field}.retry"),
                    format!("{retry} is more than {MAX_RETRIES}"),
                ));
            }
        }
        if let Some(delay) = &self.backoff_delay {
            parse_iso8601(&format!("{field}.backoffDelay"), delay)?;
        }
        if let Some(timeout) = &self.timeout {
            let us = parse_iso8601(&format!("{field}.timeout"), timeout)?;
            if us == 0 {
                return Err(FieldError::new(format!("{field}.timeout"), "must be more than zero"));
            }
        }
        if let Some(sink) = &self.dead_letter_sink {
            sink.resolve(&format!("{field}.deadLetterSink"), namespace)?;
        }
        Ok(())
    }

    /// This spec over `fallback` (a broker's), field by field, with defaults for the rest.
    pub fn policy(&self, fallback: Option<&DeliverySpec>) -> Policy {
        let empty = DeliverySpec::default();
        let under = fallback.unwrap_or(&empty);
        let duration = |own: &Option<String>, theirs: &Option<String>, default: u64| {
            own.as_ref()
                .or(theirs.as_ref())
                .and_then(|d| parse_iso8601("", d).ok())
                .unwrap_or(default)
        };
        Policy {
            retries: self.retry.or(under.retry).unwrap_or(DEFAULT_RETRIES),
            backoff: self.backoff_policy.or(under.backoff_policy).unwrap_or_default(),
            delay_us: duration(&self.backoff_delay, &under.backoff_delay, DEFAULT_BACKOFF_US),
            timeout_us: duration(&self.timeout, &under.timeout, DEFAULT_TIMEOUT_US),
            dead_letter: self.dead_letter_sink.clone().or_else(|| under.dead_letter_sink.clone()),
        }
    }
}

impl Policy {
    /// The wait before retry number `retry` (1 for the first retry): `delay × retry`
    /// when linear, `delay × 2^retry` when exponential, as Knative documents them.
    pub fn backoff_us(&self, retry: u32) -> u64 {
        let wait = match self.backoff {
            BackoffPolicy::Linear => self.delay_us.saturating_mul(retry as u64),
            BackoffPolicy::Exponential => self.delay_us.saturating_mul(1u64 << retry.min(40)),
        };
        wait.min(MAX_BACKOFF_US)
    }
}

/// Whether a subscriber's answer is worth another try: Knative retries on timeouts,
/// 404, 408, 409, 429 and 5xx; other 4xx will not change by trying again.
pub fn retryable(status: u16) -> bool {
    matches!(status, 404 | 408 | 409 | 429) || status >= 500
}

/// What comes after a failed attempt, by the delivery's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time.
    Retry { next_at_us: i64 },
    /// Send the event, marked, to the dead-letter sink.
    DeadLetter { sink: Destination, attempts: u32 },
    /// Give up.
    Fail { attempts: u32 },
}

/// Decides what follows a failed attempt: another try while the failure may pass and
/// retries are left, then the dead-letter sink if there is one (but never a dead
/// letter's own), else failure. `attempts` counts the attempts made before this one.
pub fn after_failure(
    policy: &Policy,
    attempts: u32,
    can_retry: bool,
    is_dead_letter: bool,
    now_us: i64,
) -> AfterFailure {
    let attempts = attempts + 1;
    if can_retry && attempts <= policy.retries {
        return AfterFailure::Retry {
            next_at_us: now_us.saturating_add(policy.backoff_us(attempts) as i64),
        };
    }
    match (&policy.dead_letter, is_dead_letter) {
        (Some(sink), false) => AfterFailure::DeadLetter {
            sink: sink.clone(),
            attempts,
        },
        _ => AfterFailure::Fail { attempts },
    }
}

/// An ISO-8601 duration (`P1DT2H`, `PT0.2S`, `PT5M`) in microseconds. Years and months
/// have no fixed length, so they are refused.
pub fn parse_iso8601(field: &str, text: &str) -> Result<u64, FieldError> {
    let bad = |why: &str| {
        FieldError::new(
            field,
            format!("{text:?} is not an ISO-8601 duration like PT0.5S or PT2M: {why}"),
        )
    };
    let rest = text.strip_prefix('P').ok_or_else(|| bad("it must start with P"))?;
    if rest.is_empty() {
        return Err(bad("it has no parts"));
    }
    let mut total = 0f64;
    let mut in_time = false;
    let mut number = String::new();
    let mut time_parts = 0;
    for c in rest.chars() {
        match c {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' | '.' => number.push(c),
            unit => {
                let value: f64 = number.parse().map_err(|_| bad("a part has no number"))?;
                number.clear();
                let seconds = match (in_time, unit) {
                    (false, 'W') => 604_800.0,
                    (false, 'D') => 86_400.0,
                    (true, 'H') => 3_600.0,
                    (true, 'M') => 60.0,
                    (true, 'S') => 1.0,
                    (false, 'Y' | 'M') => return Err(bad("years and months have no fixed length")),
                    _ => return Err(bad(&format!("{unit:?} is not a unit here"))),
                };
                total += value * seconds;
                time_parts += usize::from(in_time);
            }
        }
    }
    if !number.is_empty() {
        return Err(bad("the last number has no unit"));
    }
    if in_time && time_parts == 0 {
        return Err(bad("nothing follows T"));
    }
    Ok((total * 1e6).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_retried_with_backoff_then_dead_lettered_or_failed() {
        let sink = Destination {
            reference: None,
            uri: Some("http://dead.example/".into()),
        };
        let policy = Policy {
            retries: 2,
            backoff: BackoffPolicy::Exponential,
            delay_us: 100,
            timeout_us: 1_000,
            dead_letter: Some(sink.clone()),
        };
        let now = 1_000_000;
        assert_eq!(
            after_failure(&policy, 0, true, false, now),
            AfterFailure::Retry { next_at_us: now + 200 }
        );
        assert_eq!(
            after_failure(&policy, 1, true, false, now),
            AfterFailure::Retry { next_at_us: now + 400 }
        );
        assert_eq!(
            after_failure(&policy, 2, true, false, now),
            AfterFailure::DeadLetter { sink, attempts: 3 }
        );
        // A 4xx that trying again cannot change goes to the sink at once.
        assert!(matches!(
            after_failure(&policy, 0, false, false, now),
            AfterFailure::DeadLetter { attempts: 1, .. }
        ));
        // A dead letter that fails is not dead-lettered again; without a sink, failure.
        assert_eq!(
            after_failure(&policy, 2, true, true, now),
            AfterFailure::Fail { attempts: 3 }
        );
        let no_sink = Policy {
            dead_letter: None,
            ..policy
        };
        assert_eq!(
            after_failure(&no_sink, 0, false, false, now),
            AfterFailure::Fail { attempts: 1 }
        );
    }

    #[test]
    fn iso8601_durations() {
        assert_eq!(parse_iso8601("d", "PT0.2S").unwrap(), 200_000);
        assert_eq!(parse_iso8601("d", "PT1M30S").unwrap(), 90_000_000);
        assert_eq!(parse_iso8601("d", "P1DT1H").unwrap(), 90_000_000_000);
        for bad in ["", "1S", "P", "PT", "PT1", "P1M", "PT1X", "PTS"] {
            let e = parse_iso8601("spec.delivery.backoffDelay", bad)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("spec.delivery.backoffDelay: "), "{bad}: {e}");
        }
    }

    #[test]
    fn policies_layer_over_the_broker_and_back_off() {
        let broker = DeliverySpec {
            retry: Some(5),
            backoff_delay: Some("PT1S".into()),
            dead_letter_sink: Some(Destination::service("dlq", None)),
            ..Default::default()
        };
        let own = DeliverySpec {
            retry: Some(2),
            backoff_policy: Some(BackoffPolicy::Linear),
            ..Default::default()
        };
        let policy = own.policy(Some(&broker));
        assert_eq!(policy.retries, 2);
        assert_eq!(policy.delay_us, 1_000_000);
        assert_eq!(policy.dead_letter.as_ref().unwrap().describe(), "dlq");
        assert_eq!((policy.backoff_us(1), policy.backoff_us(3)), (1_000_000, 3_000_000));
        let exponential = DeliverySpec::default().policy(None);
        assert_eq!(exponential.retries, DEFAULT_RETRIES);
        assert_eq!(
            (exponential.backoff_us(1), exponential.backoff_us(3)),
            (400_000, 1_600_000)
        );
        assert_eq!(exponential.backoff_us(99), MAX_BACKOFF_US);
        assert!(retryable(503) && retryable(429) && retryable(404) && !retryable(400) && !retryable(403));
    }

    #[test]
    fn destinations_resolve_or_say_why_not() {
        let svc = Destination::service("hello", Some("/cron"));
        assert_eq!(
            svc.resolve("sink", "team").unwrap(),
            Target::Service {
                namespace: "team".into(),
                name: "hello".into(),
                path: "/cron".into()
            }
        );
        let uri = Destination {
            reference: None,
            uri: Some("http://127.0.0.1:9/x".into()),
        };
        assert_eq!(
            uri.resolve("sink", "ns").unwrap(),
            Target::Uri("http://127.0.0.1:9/x".into())
        );
        let err = |d: Destination| d.resolve("spec.sink", "ns").unwrap_err().to_string();
        assert!(err(Destination::default()).contains("names no service"));
        assert!(err(Destination {
            reference: None,
            uri: Some("ftp://x".into())
        })
        .contains("spec.sink.uri"));
        assert!(err(Destination::service("Bad_Name", None)).contains("spec.sink.ref.name"));
        assert!(err(Destination::service("ok", Some("cron"))).contains("must start with /"));
        let mut broker = Destination::service("b", None);
        broker.reference.as_mut().unwrap().kind = "Broker".into();
        assert!(err(broker).contains("is not supported"));
        let mut elsewhere = Destination::service("b", None);
        elsewhere.reference.as_mut().unwrap().namespace = Some("other".into());
        assert!(err(elsewhere).contains("spec.sink.ref.namespace: a destination is a service of namespace \"ns\""));
        let mut here = Destination::service("b", None);
        here.reference.as_mut().unwrap().namespace = Some("ns".into());
        assert!(here.resolve("spec.sink", "ns").is_ok());
        let spec = DeliverySpec {
            retry: Some(1000),
            ..Default::default()
        };
        assert!(spec
            .validate("spec.delivery", "ns")
            .unwrap_err()
            .to_string()
            .contains("spec.delivery.retry"));
    }
}
