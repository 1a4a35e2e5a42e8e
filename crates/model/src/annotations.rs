//! The annotations Updraft reads: Knative's `autoscaling.knative.dev/*` on a revision
//! template, `serving.knative.dev/rollout-duration` and Updraft's rate limits on a
//! service. Other annotations are the user's own and are kept as they are.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::quantity::parse_duration;
use crate::FieldError;

pub const AUTOSCALING_PREFIX: &str = "autoscaling.knative.dev/";
/// Idle time after which a revision's instances are stopped, unless the service says
/// otherwise.
pub const DEFAULT_SCALE_TO_ZERO_AFTER: Duration = Duration::from_secs(60);
/// Idle time before a revision's last instance stops (Updraft's `--scale-to-zero-after`).
pub const SCALE_TO_ZERO_RETENTION: &str = "autoscaling.knative.dev/scale-to-zero-pod-retention-period";
pub const WINDOW: &str = "autoscaling.knative.dev/window";
pub const ROLLOUT_DURATION: &str = "serving.knative.dev/rollout-duration";
/// How long a new instance may take to become ready (Knative's progress deadline),
/// instead of the server's `--ready-timeout`.
pub const PROGRESS_DEADLINE: &str = "serving.knative.dev/progress-deadline";
const PROGRESS_DEADLINE_RANGE: Kind = Kind::Duration(Duration::from_secs(1), HOUR);
/// How an idle revision is kept: `fixed` or `hybrid-histogram` (Updraft's own).
pub const KEEP_ALIVE: &str = "updraft.dev/keep-alive";
pub const KEEP_ALIVE_POLICIES: &[&str] = &["fixed", "hybrid-histogram"];
/// Requests per second a service accepts (Updraft's own; Knative ignores it).
/// Hosts (`host` or `host:port`, `*` for any) a WebAssembly revision may send
/// `wasi:http` requests to, comma-separated; none when absent.
pub const ALLOWED_OUTBOUND_HOSTS: &str = "updraft.dev/allowed-outbound-hosts";
/// A function revision's runtime (`python3` or `node`): the package holds a handler,
/// not a server, and Updraft's shim serves it.
pub const FUNCTION_RUNTIME: &str = "updraft.dev/function-runtime";
pub const FUNCTION_RUNTIMES: &[&str] = &["python3", "node"];
/// The handler file or folder inside the package (`.` for the package itself).
pub const FUNCTION_HANDLER: &str = "updraft.dev/function-handler";
pub const RATE_LIMIT: &str = "updraft.dev/rate-limit";
/// Requests a service accepts at once above its rate.
pub const RATE_LIMIT_BURST: &str = "updraft.dev/rate-limit-burst";
/// A service label (Knative's): `cluster-local` makes the service private, answered
/// by the gateway only to callers allowed to invoke in its namespace.
pub const VISIBILITY: &str = "networking.knative.dev/visibility";
pub const CLUSTER_LOCAL: &str = "cluster-local";

/// Whether a service's labels make it private.
pub fn is_private(labels: &BTreeMap<String, String>) -> bool {
    labels.get(VISIBILITY).is_some_and(|v| v == CLUSTER_LOCAL)
}

/// Knative knows one visibility, `cluster-local`; anything else is a typo that would
/// leave a service public, so it is refused.
pub fn validate_visibility(field: &str, labels: &BTreeMap<String, String>) -> Result<(), FieldError> {
    match labels.get(VISIBILITY) {
        Some(value) if value != CLUSTER_LOCAL => Err(FieldError::new(
            format!("{field}[{VISIBILITY}]"),
            format!("{value:?} is not a visibility; the one there is is {CLUSTER_LOCAL} (remove the label for public)"),
        )),
        _ => Ok(()),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Choice(&'static [&'static str]),
    /// An integer in a closed range.
    Int(i64, i64),
    /// A number in a closed range.
    Float(f64, f64),
    /// A duration in a closed range.
    Duration(Duration, Duration),
}

const HOUR: Duration = Duration::from_secs(3600);

/// Every `autoscaling.knative.dev/*` key Knative defines, with what it allows. The
/// camel-case names are Knative's older spellings, which it still reads.
const AUTOSCALING: &[(&str, Kind)] = &[
    (
        "class",
        Kind::Choice(&["kpa.autoscaling.knative.dev", "hpa.autoscaling.knative.dev"]),
    ),
    ("metric", Kind::Choice(&["concurrency", "rps", "cpu", "memory"])),
    ("target", Kind::Float(0.01, f64::MAX)),
    ("target-utilization-percentage", Kind::Float(1.0, 100.0)),
    ("targetUtilizationPercentage", Kind::Float(1.0, 100.0)),
    ("target-burst-capacity", Kind::Float(-1.0, f64::MAX)),
    ("targetBurstCapacity", Kind::Float(-1.0, f64::MAX)),
    ("window", Kind::Duration(Duration::from_secs(6), HOUR)),
    ("panic-window-percentage", Kind::Float(1.0, 100.0)),
    ("panicWindowPercentage", Kind::Float(1.0, 100.0)),
    ("panic-threshold-percentage", Kind::Float(110.0, 1000.0)),
    ("panicThresholdPercentage", Kind::Float(110.0, 1000.0)),
    ("min-scale", Kind::Int(0, i32::MAX as i64)),
    ("minScale", Kind::Int(0, i32::MAX as i64)),
    ("max-scale", Kind::Int(0, i32::MAX as i64)),
    ("maxScale", Kind::Int(0, i32::MAX as i64)),
    ("initial-scale", Kind::Int(0, i32::MAX as i64)),
    ("initialScale", Kind::Int(0, i32::MAX as i64)),
    ("activation-scale", Kind::Int(1, i32::MAX as i64)),
    ("scale-down-delay", Kind::Duration(Duration::ZERO, HOUR)),
    ("scaleDownDelay", Kind::Duration(Duration::ZERO, HOUR)),
    (
        "scale-to-zero-pod-retention-period",
        Kind::Duration(Duration::ZERO, HOUR),
    ),
    (
        "metric-aggregation-algorithm",
        Kind::Choice(&["linear", "weightedExponential"]),
    ),
];

fn check(field: &str, value: &str, kind: Kind) -> Result<(), FieldError> {
    let out_of_range = |what: String| FieldError::new(field, format!("{value:?} {what}"));
    match kind {
        Kind::Choice(allowed) if allowed.contains(&value) => Ok(()),
        Kind::Choice(allowed) => Err(out_of_range(format!("is not one of {}", allowed.join(", ")))),
        Kind::Int(min, max) => match value.trim().parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(out_of_range(format!("must be an integer from {min} to {max}"))),
        },
        Kind::Float(min, max) => match value.trim().parse::<f64>() {
            Ok(n) if n >= min && n <= max => Ok(()),
            _ if max == f64::MAX => Err(out_of_range(format!("must be a number of at least {min}"))),
            _ => Err(out_of_range(format!("must be a number from {min} to {max}"))),
        },
        Kind::Duration(min, max) => {
            let d = parse_duration(field, value)?;
            if d < min || d > max {
                return Err(out_of_range(format!(
                    "must be from {} to {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                )));
            }
            Ok(())
        }
    }
}

/// The metric an autoscaler follows (`autoscaling.knative.dev/metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalingMetric {
    Concurrency,
    Rps,
    Cpu,
    Memory,
}

/// How an idle revision is kept ([`KEEP_ALIVE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    Fixed,
    HybridHistogram,
}

/// A revision template's autoscaling annotations, read once; `None` is "not set". The
/// camel-case spellings Knative still reads count as the kebab-case ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Autoscaling {
    /// `class: hpa.autoscaling.knative.dev` (else Knative's KPA).
    pub hpa_class: bool,
    pub metric: Option<ScalingMetric>,
    pub target: Option<f64>,
    pub target_utilization_percentage: Option<f64>,
    pub window: Option<Duration>,
    pub panic_window_percentage: Option<f64>,
    pub panic_threshold_percentage: Option<f64>,
    pub min_scale: Option<u32>,
    pub max_scale: Option<u32>,
    pub initial_scale: Option<u32>,
    pub activation_scale: Option<u32>,
    pub scale_down_delay: Option<Duration>,
    pub keep_alive: Option<KeepAlive>,
}

impl Autoscaling {
    /// Reads annotations [`validate_template_annotations`] accepted; a value it would
    /// refuse reads as not set.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Autoscaling {
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| annotations.get(&format!("{AUTOSCALING_PREFIX}{k}")))
                .map(|v| v.trim())
        };
        let float = |keys: &[&str]| text(keys).and_then(|v| v.parse::<f64>().ok());
        let count = |keys: &[&str]| text(keys).and_then(|v| v.parse::<u32>().ok());
        let duration = |keys: &[&str]| text(keys).and_then(|v| humantime::parse_duration(v).ok());
        Autoscaling {
            hpa_class: text(&["class"]) == Some("hpa.autoscaling.knative.dev"),
            metric: match text(&["metric"]) {
                Some("concurrency") => Some(ScalingMetric::Concurrency),
                Some("rps") => Some(ScalingMetric::Rps),
                Some("cpu") => Some(ScalingMetric::Cpu),
                Some("memory") => Some(ScalingMetric::Memory),
                _ => None,
            },
            target: float(&["target"]),
            target_utilization_percentage: float(&["target-utilization-percentage", "targetUtilizationPercentage"]),
            window: duration(&["window"]),
            panic_window_percentage: float(&["panic-window-percentage", "panicWindowPercentage"]),
            panic_threshold_percentage: float(&["panic-threshold-percentage", "panicThresholdPercentage"]),
            min_scale: count(&["min-scale", "minScale"]),
            max_scale: count(&["max-scale", "maxScale"]),
            initial_scale: count(&["initial-scale", "initialScale"]),
            activation_scale: count(&["activation-scale"]),
            scale_down_delay: duration(&["scale-down-delay", "scaleDownDelay"]),
            keep_alive: match annotations.get(KEEP_ALIVE).map(|v| v.trim()) {
                Some("fixed") => Some(KeepAlive::Fixed),
                Some("hybrid-histogram") => Some(KeepAlive::HybridHistogram),
                _ => None,
            },
        }
    }
}

/// Checks a revision template's annotations: each autoscaling key must be one Knative
/// defines, with a value it allows.
pub fn validate_template_annotations(path: &str, annotations: &BTreeMap<String, String>) -> Result<(), FieldError> {
    for (key, value) in annotations {
        let field = format!("{path}[{key}]");
        if let Some(name) = key.strip_prefix(AUTOSCALING_PREFIX) {
            let Some((_, kind)) = AUTOSCALING.iter().find(|(n, _)| *n == name) else {
                let known: Vec<&str> = AUTOSCALING.iter().map(|(n, _)| *n).collect();
                return Err(FieldError::new(
                    field,
                    format!("unknown autoscaling annotation; Knative defines {}", known.join(", ")),
                ));
            };
            check(&field, value, *kind)?;
        } else if key == KEEP_ALIVE {
            check(&field, value, Kind::Choice(KEEP_ALIVE_POLICIES))?;
        } else if key == PROGRESS_DEADLINE {
            check(&field, value, PROGRESS_DEADLINE_RANGE)?;
        } else if key == FUNCTION_RUNTIME {
            check(&field, value, Kind::Choice(FUNCTION_RUNTIMES))?;
            if !annotations.contains_key(FUNCTION_HANDLER) {
                return Err(FieldError::new(
                    format!("{path}[{FUNCTION_HANDLER}]"),
                    "is missing; a function names its handler file or folder",
                ));
            }
        } else if key == FUNCTION_HANDLER {
            let escapes = value.starts_with('/') || value.split('/').any(|part| part == "..");
            if value.is_empty() || escapes {
                return Err(FieldError::new(
                    field,
                    format!("{value:?} must be a path inside the package (no leading / and no ..)"),
                ));
            }
            if !annotations.contains_key(FUNCTION_RUNTIME) {
                return Err(FieldError::new(
                    format!("{path}[{FUNCTION_RUNTIME}]"),
                    "is missing; say python3 or node",
                ));
            }
        } else if key == ALLOWED_OUTBOUND_HOSTS {
            for host in allowed_outbound_hosts(annotations) {
                let ok = host == "*"
                    || (!host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')));
                if !ok {
                    return Err(FieldError::new(
                        field,
                        format!("{host:?} is not a host, host:port or *"),
                    ));
                }
            }
        } else if key == ROLLOUT_DURATION || key == RATE_LIMIT || key == RATE_LIMIT_BURST {
            return Err(FieldError::new(
                field,
                "belongs on the service (metadata.annotations), not on the revision template",
            ));
        }
    }
    // Every value is valid by now, so reading them cannot drop one.
    let read = Autoscaling::from_annotations(annotations);
    if let (Some(min), Some(max)) = (read.min_scale, read.max_scale) {
        if max != 0 && min > max {
            return Err(FieldError::new(
                format!("{path}[{AUTOSCALING_PREFIX}min-scale]"),
                format!("{min} is above max-scale {max}"),
            ));
        }
    }
    Ok(())
}

/// Checks a service's own annotations and returns its rollout duration and rate limit.
pub fn validate_service_annotations(
    path: &str,
    annotations: &BTreeMap<String, String>,
) -> Result<ServiceSettings, FieldError> {
    let mut settings = ServiceSettings::default();
    for (key, value) in annotations {
        let field = format!("{path}[{key}]");
        if key.starts_with(AUTOSCALING_PREFIX) {
            return Err(FieldError::new(
                field,
                "autoscaling annotations belong on the revision template (spec.template.metadata.annotations)",
            ));
        }
        if key == ROLLOUT_DURATION {
            let d = parse_duration(&field, value)?;
            if d > HOUR * 24 {
                return Err(FieldError::new(field, format!("{value:?} is longer than 24h")));
            }
            settings.rollout_duration = (!d.is_zero()).then_some(d);
        }
    }
    let rate = annotations.get(RATE_LIMIT);
    let burst = annotations.get(RATE_LIMIT_BURST);
    if rate.is_some() || burst.is_some() {
        settings.rate_limit = Some(RateLimit::parse(
            &format!("{path}[{RATE_LIMIT}]"),
            rate.map(String::as_str),
            &format!("{path}[{RATE_LIMIT_BURST}]"),
            burst.map(String::as_str),
        )?);
    }
    Ok(settings)
}

/// What a service's annotations ask of the gateway and the router.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceSettings {
    pub rollout_duration: Option<Duration>,
    pub rate_limit: Option<RateLimit>,
}

/// A token bucket: `per_second` refill, `burst` requests at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    /// A rate with an optional burst, which defaults to the rate (one second's worth).
    pub fn parse(
        rate_field: &str,
        rate: Option<&str>,
        burst_field: &str,
        burst: Option<&str>,
    ) -> Result<RateLimit, FieldError> {
        let positive = |field: &str, text: &str| match text.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(FieldError::new(
                field,
                format!("{text:?} must be a whole number of requests, at least 1"),
            )),
        };
        let Some(rate) = rate else {
            return Err(FieldError::new(rate_field, "is missing; a burst needs a rate"));
        };
        let per_second = positive(rate_field, rate)?;
        let burst = burst
            .map(|b| positive(burst_field, b))
            .transpose()?
            .unwrap_or(per_second);
        Ok(RateLimit { per_second, burst })
    }
}

/// The idle time after which a revision's instances stop: the retention period if set,
/// else Knative's stable window, else Updraft's default.
/// The revision's own start timeout, when it sets one.
pub fn progress_deadline(annotations: &BTreeMap<String, String>) -> Option<Duration> {
    annotations
        .get(PROGRESS_DEADLINE)
        .and_then(|value| parse_duration(PROGRESS_DEADLINE, value).ok())
}

pub fn scale_to_zero_after(annotations: &BTreeMap<String, String>) -> Duration {
    [SCALE_TO_ZERO_RETENTION, WINDOW]
        .iter()
        .find_map(|k| annotations.get(*k))
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_SCALE_TO_ZERO_AFTER)
}

/// The hosts of [`ALLOWED_OUTBOUND_HOSTS`], trimmed.
pub fn allowed_outbound_hosts(annotations: &BTreeMap<String, String>) -> Vec<String> {
    annotations
        .get(ALLOWED_OUTBOUND_HOSTS)
        .map(|v| {
            v.split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_local_is_the_one_visibility() {
        let labels = |v: &str| BTreeMap::from([(VISIBILITY.to_string(), v.to_string())]);
        assert!(is_private(&labels("cluster-local")));
        assert!(!is_private(&BTreeMap::new()));
        validate_visibility("metadata.labels", &labels("cluster-local")).unwrap();
        validate_visibility("metadata.labels", &BTreeMap::new()).unwrap();
        let err = validate_visibility("metadata.labels", &labels("internal")).unwrap_err();
        assert_eq!(err.field, "metadata.labels[networking.knative.dev/visibility]");
        assert!(err.message.contains("cluster-local"), "{err}");
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn autoscaling_reads_each_key_once_in_either_spelling() {
        let read = Autoscaling::from_annotations(&map(&[
            ("autoscaling.knative.dev/class", "hpa.autoscaling.knative.dev"),
            ("autoscaling.knative.dev/metric", "rps"),
            ("autoscaling.knative.dev/target", " 50 "),
            ("autoscaling.knative.dev/window", "20s"),
            ("autoscaling.knative.dev/minScale", "1"),
            ("autoscaling.knative.dev/max-scale", "7"),
            ("autoscaling.knative.dev/scale-down-delay", "15s"),
            ("autoscaling.knative.dev/initial-scale", "-1"),
            (KEEP_ALIVE, "hybrid-histogram"),
        ]));
        assert!(read.hpa_class);
        assert_eq!(read.metric, Some(ScalingMetric::Rps));
        assert_eq!(read.target, Some(50.0));
        assert_eq!(read.window, Some(Duration::from_secs(20)));
        assert_eq!((read.min_scale, read.max_scale), (Some(1), Some(7)));
        assert_eq!(read.scale_down_delay, Some(Duration::from_secs(15)));
        assert_eq!(read.initial_scale, None, "a value validation refuses reads as not set");
        assert_eq!(read.keep_alive, Some(KeepAlive::HybridHistogram));
        assert_eq!(Autoscaling::from_annotations(&BTreeMap::new()), Autoscaling::default());
    }

    #[test]
    fn knative_autoscaling_annotations_are_checked() {
        let ok = map(&[
            ("autoscaling.knative.dev/min-scale", "1"),
            ("autoscaling.knative.dev/max-scale", "5"),
            ("autoscaling.knative.dev/target", "10"),
            ("autoscaling.knative.dev/metric", "rps"),
            ("autoscaling.knative.dev/window", "40s"),
            ("autoscaling.knative.dev/class", "kpa.autoscaling.knative.dev"),
            ("example.com/owner", "team-a"),
        ]);
        validate_template_annotations("a", &ok).unwrap();
        for (key, value, wanted) in [
            ("autoscaling.knative.dev/min-scale", "-1", "integer"),
            ("autoscaling.knative.dev/window", "2s", "from 6s"),
            ("autoscaling.knative.dev/metric", "latency", "not one of"),
            ("autoscaling.knative.dev/target-scale", "3", "unknown autoscaling"),
            ("serving.knative.dev/rollout-duration", "10s", "belongs on the service"),
            (
                "updraft.dev/keep-alive",
                "forever",
                "not one of fixed, hybrid-histogram",
            ),
        ] {
            let err = validate_template_annotations("a", &map(&[(key, value)])).unwrap_err();
            assert_eq!(err.field, format!("a[{key}]"));
            assert!(err.message.contains(wanted), "{key}: {err}");
        }
        let err = validate_template_annotations(
            "a",
            &map(&[
                ("autoscaling.knative.dev/min-scale", "4"),
                ("autoscaling.knative.dev/max-scale", "2"),
            ]),
        )
        .unwrap_err();
        assert!(err.message.contains("above max-scale"), "{err}");
    }

    #[test]
    fn service_annotations_give_rollout_and_rate() {
        let s = validate_service_annotations(
            "metadata.annotations",
            &map(&[(ROLLOUT_DURATION, "60s"), (RATE_LIMIT, "50"), (RATE_LIMIT_BURST, "5")]),
        )
        .unwrap();
        assert_eq!(s.rollout_duration, Some(Duration::from_secs(60)));
        assert_eq!(
            s.rate_limit,
            Some(RateLimit {
                per_second: 50,
                burst: 5
            })
        );
        let s = validate_service_annotations("m", &map(&[(RATE_LIMIT, "7")])).unwrap();
        assert_eq!(s.rate_limit.unwrap().burst, 7);
        let err = validate_service_annotations("m", &map(&[(RATE_LIMIT, "0")])).unwrap_err();
        assert_eq!(err.field, format!("m[{RATE_LIMIT}]"));
        let err = validate_service_annotations("m", &map(&[(RATE_LIMIT_BURST, "3")])).unwrap_err();
        assert!(err.message.contains("needs a rate"));
        let err = validate_service_annotations("m", &map(&[("autoscaling.knative.dev/min-scale", "1")])).unwrap_err();
        assert!(err.message.contains("revision template"));
    }

    #[test]
    fn scale_to_zero_prefers_retention_then_window() {
        assert_eq!(scale_to_zero_after(&map(&[])), DEFAULT_SCALE_TO_ZERO_AFTER);
        assert_eq!(scale_to_zero_after(&map(&[(WINDOW, "20s")])), Duration::from_secs(20));
        assert_eq!(
            scale_to_zero_after(&map(&[(WINDOW, "20s"), (SCALE_TO_ZERO_RETENTION, "2s")])),
            Duration::from_secs(2)
        );
    }
}
