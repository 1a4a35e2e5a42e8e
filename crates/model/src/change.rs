//! What a service's settings become when a deploy, an update or a manifest changes it:
//! its labels, annotations, traffic table and rollout, with or without a new revision.
//! Decided here without I/O; the server reads the service, asks, and writes the answer.

use std::collections::BTreeMap;

use crate::annotations::validate_service_annotations;
use crate::error::FieldError;
use crate::resources::ServiceConfig;
use crate::traffic::{validate_traffic, Rollout, Target, TrafficTarget};

/// What to do with the traffic table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrafficChange {
    /// Keep it (a new service gets everything to its latest).
    Keep,
    /// Keep it, but pin `latest` rows to the current latest first, so the new
    /// revision gets nothing (blue/green).
    NoTrafficForNew,
    /// Replace it (a manifest's `spec.traffic`, or its absence: everything to latest).
    Set(Vec<TrafficTarget>),
}

/// The settings a change asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsChange {
    /// Replaces the service's labels when given.
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: BTreeMap<String, String>,
    pub traffic: TrafficChange,
}

/// The service as the change finds it.
#[derive(Debug, Clone, Copy)]
pub struct Current<'a> {
    pub service: &'a str,
    /// Its settings, or `None` for a service that does not exist yet.
    pub config: Option<&'a ServiceConfig>,
    /// Its latest revision's name.
    pub latest: Option<&'a str>,
    /// Every revision it has.
    pub revisions: &'a [&'a str],
}

/// The service's settings after `change`, with `new_revision` the revision it makes
/// (if any) becoming the latest at `now_us`. A new revision behind a service whose
/// annotations ask for a gradual rollout, with traffic on `latest`, starts a rollout
/// from the previous latest; a change that makes no revision keeps a rollout under way.
pub fn next_config(
    current: Current<'_>,
    change: SettingsChange,
    new_revision: Option<&str>,
    now_us: i64,
) -> Result<ServiceConfig, FieldError> {
    let mut config = current.config.cloned().unwrap_or_default();
    if let Some(labels) = change.labels {
        config.labels = labels;
    }
    config.annotations = change.annotations;
    let settings = validate_service_annotations("metadata.annotations", &config.annotations)?;
    match change.traffic {
        TrafficChange::Keep => {}
        TrafficChange::NoTrafficForNew => match current.latest {
            Some(latest) => {
                for row in config.traffic.iter_mut().filter(|t| t.latest) {
                    *row = TrafficTarget::new(Target::Revision(latest.to_string()), row.percent, row.tag.take());
                }
            }
            None => {
                return Err(FieldError::new(
                    "no_traffic",
                    "a new service's first revision takes all its traffic; --no-traffic is for later revisions",
                ))
            }
        },
        TrafficChange::Set(traffic) => config.traffic = traffic,
    }
    let mut names = current.revisions.to_vec();
    names.extend(new_revision);
    validate_traffic("spec.traffic", current.service, &config.traffic, Some(&names))?;
    config.rollout = match (new_revision, current.latest, settings.rollout_duration) {
        (Some(new), Some(previous), Some(duration)) if config.traffic.iter().any(|t| t.latest && t.percent > 0) => {
            Some(Rollout::new(previous, new, now_us, duration))
        }
        (Some(_), _, _) => None,
        (None, _, _) => config.rollout.filter(|r| !r.done(now_us)),
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::annotations::ROLLOUT_DURATION;
    use crate::traffic::default_traffic;

    const NOW: i64 = 1_000_000_000;

    fn to(revision: &str, percent: u32) -> TrafficTarget {
        TrafficTarget::new(Target::Revision(revision.into()), percent, None)
    }

    fn latest(percent: u32) -> TrafficTarget {
        TrafficTarget::new(Target::Latest, percent, None)
    }

    fn gradual() -> BTreeMap<String, String> {
        BTreeMap::from([(ROLLOUT_DURATION.to_string(), "60s".to_string())])
    }

    fn with(traffic: Vec<TrafficTarget>, annotations: BTreeMap<String, String>) -> ServiceConfig {
        ServiceConfig {
            traffic,
            annotations,
            ..Default::default()
        }
    }

    fn change(traffic: TrafficChange, annotations: BTreeMap<String, String>) -> SettingsChange {
        SettingsChange {
            labels: None,
            annotations,
            traffic,
        }
    }

    #[test]
    fn settings_follow_the_change() {
        let split = with(vec![latest(80), to("web-00001", 20)], BTreeMap::new());
        let plain_gradual = with(default_traffic(), gradual());
        let under_way = ServiceConfig {
            rollout: Some(Rollout::new(
                "web-00001",
                "web-00002",
                NOW - 10_000_000,
                Duration::from_secs(60),
            )),
            ..with(default_traffic(), gradual())
        };
        let done = ServiceConfig {
            rollout: Some(Rollout::new(
                "web-00001",
                "web-00002",
                NOW - 120_000_000,
                Duration::from_secs(60),
            )),
            ..with(default_traffic(), gradual())
        };
        let rollout = |from: &str, to: &str| Some(Rollout::new(from, to, NOW, Duration::from_secs(60)));
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Option<&ServiceConfig>,
            SettingsChange,
            Option<&str>,
            ServiceConfig,
        )> = vec![
            (
                "a new service sends everything to its latest",
                None,
                change(TrafficChange::Set(default_traffic()), BTreeMap::new()),
                Some("web-00001"),
                with(default_traffic(), BTreeMap::new()),
            ),
            (
                "a deploy keeps the split",
                Some(&split),
                change(TrafficChange::Keep, BTreeMap::new()),
                Some("web-00002"),
                split.clone(),
            ),
            (
                "no traffic for the new one pins latest to the old latest",
                Some(&split),
                change(TrafficChange::NoTrafficForNew, BTreeMap::new()),
                Some("web-00002"),
                with(vec![to("web-00001", 80), to("web-00001", 20)], BTreeMap::new()),
            ),
            (
                "a gradual rollout starts from the previous latest",
                Some(&plain_gradual),
                change(TrafficChange::Keep, gradual()),
                Some("web-00002"),
                ServiceConfig {
                    rollout: rollout("web-00001", "web-00002"),
                    ..with(default_traffic(), gradual())
                },
            ),
            (
                "a settings change keeps a rollout under way",
                Some(&under_way),
                change(TrafficChange::Keep, gradual()),
                None,
                under_way.clone(),
            ),
            (
                "and drops one that is done",
                Some(&done),
                change(TrafficChange::Keep, gradual()),
                None,
                with(default_traffic(), gradual()),
            ),
            (
                "a new revision ends a rollout when the annotation is gone",
                Some(&under_way),
                change(TrafficChange::Keep, BTreeMap::new()),
                Some("web-00003"),
                with(default_traffic(), BTreeMap::new()),
            ),
        ];
        for (what, config, change, new_revision, expected) in cases {
            let latest = config.map(|_| "web-00001");
            let current = Current {
                service: "web",
                config,
                latest,
                revisions: if config.is_some() { &["web-00001"] } else { &[] },
            };
            assert_eq!(next_config(current, change, new_revision, NOW), Ok(expected), "{what}");
        }
    }

    #[test]
    fn a_bad_change_names_its_field() {
        let current = Current {
            service: "web",
            config: None,
            latest: None,
            revisions: &[],
        };
        let cases = [
            ("no_traffic", change(TrafficChange::NoTrafficForNew, BTreeMap::new())),
            (
                "spec.traffic",
                change(TrafficChange::Set(vec![to("gone-00001", 100)]), BTreeMap::new()),
            ),
            (
                "metadata.annotations",
                change(
                    TrafficChange::Keep,
                    BTreeMap::from([(ROLLOUT_DURATION.to_string(), "soon".to_string())]),
                ),
            ),
        ];
        for (field, change) in cases {
            let err = next_config(current, change, Some("web-00001"), NOW).unwrap_err();
            assert!(err.field.starts_with(field), "{field}: {err}");
        }
    }
}
