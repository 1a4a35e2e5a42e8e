//! A service's traffic table: which revisions get what share of requests, which have a
//! tag (their own URL), how a gradual rollout moves the `latest` share, and how a share
//! becomes a per-request choice.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::MAX_NAMESPACE_NAME;
use crate::FieldError;

/// One row of the table, as Knative's `spec.traffic[]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficTarget {
    /// A revision by name; absent when the row follows the latest revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Follows the service's latest ready revision as new ones are deployed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub latest: bool,
    #[serde(default)]
    pub percent: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// What a row points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Latest,
    Revision(String),
}

impl Target {
    /// `latest` or a revision name, as the CLI takes it.
    pub fn parse(text: &str) -> Target {
        if text == "latest" || text == "@latest" {
            Target::Latest
        } else {
            Target::Revision(text.to_string())
        }
    }
}

impl TrafficTarget {
    pub fn latest(percent: u32) -> Self {
        TrafficTarget {
            revision: None,
            latest: true,
            percent,
            tag: None,
        }
    }

    pub fn new(target: Target, percent: u32, tag: Option<String>) -> Self {
        match target {
            Target::Latest => TrafficTarget {
                tag,
                ..TrafficTarget::latest(percent)
            },
            Target::Revision(name) => TrafficTarget {
                revision: Some(name),
                latest: false,
                percent,
                tag,
            },
        }
    }

    pub fn target(&self) -> Target {
        match &self.revision {
            Some(name) => Target::Revision(name.clone()),
            None => Target::Latest,
        }
    }

    /// The revision this row sends requests to now.
    pub fn resolve<'a>(&'a self, latest: &'a str) -> &'a str {
        self.revision.as_deref().unwrap_or(latest)
    }
}

/// The table a new service starts with: everything to the latest revision.
pub fn default_traffic() -> Vec<TrafficTarget> {
    vec![TrafficTarget::latest(100)]
}

/// Most rows a traffic table may have: a share is at least 1%, so 100 rows already
/// split everything, and each tag is a row of its own.
pub const MAX_TRAFFIC_ROWS: usize = 100;

/// Checks a table against the revisions that exist (`revisions`, including one about
/// to be created). `path` is where the table sits (`spec.traffic`).
/// With `revisions` of `None` only the table's own shape is checked (before the
/// revisions are known, as a client does).
pub fn validate_traffic(
    path: &str,
    service: &str,
    targets: &[TrafficTarget],
    revisions: Option<&[&str]>,
) -> Result<(), FieldError> {
    if targets.is_empty() {
        return Err(FieldError::new(
            path,
            "is empty; give at least one row, e.g. latestRevision: true, percent: 100",
        ));
    }
    if targets.len() > MAX_TRAFFIC_ROWS {
        return Err(FieldError::new(
            path,
            format!(
                "has {} rows; at most {MAX_TRAFFIC_ROWS} (shares are whole percents, tags one per row)",
                targets.len()
            ),
        ));
    }
    let mut total = 0;
    let mut tags: Vec<&str> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let row = format!("{path}[{i}]");
        match (&t.revision, t.latest) {
            (Some(_), true) => {
                return Err(FieldError::new(
                    row,
                    "names a revision and follows the latest at once; give one of revisionName or latestRevision: true",
                ))
            }
            (None, false) => {
                return Err(FieldError::new(
                    row,
                    "names no revision; give revisionName or latestRevision: true",
                ))
            }
            (Some(name), false) => {
                if let Some(known) = revisions.filter(|known| !known.contains(&name.as_str())) {
                    return Err(FieldError::new(
                        format!("{row}.revisionName"),
                        format!(
                            "{name:?} is not a revision of service {service:?} (it has {})",
                            known.join(", ")
                        ),
                    ));
                }
            }
            _ => {}
        }
        if t.percent > 100 {
            return Err(FieldError::new(
                format!("{row}.percent"),
                format!("{} must be from 0 to 100", t.percent),
            ));
        }
        total += t.percent;
        if let Some(tag) = &t.tag {
            validate_tag(&format!("{row}.tag"), service, tag)?;
            if tags.contains(&tag.as_str()) {
                return Err(FieldError::new(
                    format!("{row}.tag"),
                    format!("{tag:?} is used by more than one row"),
                ));
            }
            tags.push(tag);
        }
    }
    if total != 100 {
        return Err(FieldError::new(
            path,
            format!("percents add up to {total}; they must add up to 100"),
        ));
    }
    Ok(())
}

/// A tag becomes part of a host name, `{tag}-{service}`, which must stay a DNS label.
fn validate_tag(field: &str, service: &str, tag: &str) -> Result<(), FieldError> {
    let bytes = tag.as_bytes();
    let ok = !bytes.is_empty()
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1] != b'-'
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if !ok {
        return Err(FieldError::new(
            field,
            format!("{tag:?} must be lower-case letters, digits and '-', starting with a letter"),
        ));
    }
    if tag.len() + 1 + service.len() > MAX_NAMESPACE_NAME {
        return Err(FieldError::new(
            field,
            format!("{tag:?} is too long: the host label {tag}-{service} would pass 63 characters"),
        ));
    }
    Ok(())
}

/// A gradual move of the `latest` share from one revision to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub from: String,
    pub to: String,
    pub started_us: i64,
    pub duration_us: i64,
}

/// Steps are at least a second apart, and there are at most 99 of them after the first.
const MAX_STEPS: i64 = 99;

impl Rollout {
    pub fn new(from: &str, to: &str, started_us: i64, duration: Duration) -> Self {
        Rollout {
            from: from.to_string(),
            to: to.to_string(),
            started_us,
            duration_us: duration.as_micros() as i64,
        }
    }

    fn steps(&self) -> i64 {
        (self.duration_us / 1_000_000).clamp(1, MAX_STEPS)
    }

    /// The share (0–100) of the `latest` rows the new revision has at `now_us`: 1% at
    /// once, as Knative does, then equal steps until 100% at the end of the duration.
    pub fn percent_at(&self, now_us: i64) -> u32 {
        let elapsed = now_us - self.started_us;
        if elapsed >= self.duration_us {
            return 100;
        }
        let steps = self.steps();
        let step = (elapsed.max(0) * steps / self.duration_us.max(1)).min(steps);
        (1 + 99 * step / steps) as u32
    }

    /// When the share changes next, if it still will.
    pub fn next_change_us(&self, now_us: i64) -> Option<i64> {
        if self.done(now_us) {
            return None;
        }
        let steps = self.steps();
        let elapsed = (now_us - self.started_us).max(0);
        let step = elapsed * steps / self.duration_us.max(1);
        // The first instant at which the step count passes `step`.
        let next = ((step + 1) * self.duration_us + steps - 1) / steps;
        Some(self.started_us + next)
    }

    pub fn done(&self, now_us: i64) -> bool {
        now_us >= self.started_us + self.duration_us
    }
}

/// A resolved table: the share of each revision, and the revision behind each tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// Revision name → percent, only revisions with a share.
    pub percents: BTreeMap<String, u32>,
    /// Tag → revision name.
    pub tags: BTreeMap<String, String>,
}

impl Routing {
    pub fn percent_of(&self, revision: &str) -> u32 {
        self.percents.get(revision).copied().unwrap_or(0)
    }

    pub fn tags_of(&self, revision: &str) -> Vec<String> {
        self.tags
            .iter()
            .filter(|(_, r)| *r == revision)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Whether the revision gets requests by share or by tag.
    pub fn routes_to(&self, revision: &str) -> bool {
        self.percents.contains_key(revision) || self.tags.values().any(|r| r == revision)
    }
}

/// Resolves `latest` rows and an unfinished rollout into per-revision shares.
pub fn resolve(targets: &[TrafficTarget], latest: &str, rollout: Option<&Rollout>, now_us: i64) -> Routing {
    let mut routing = Routing::default();
    let rolling = rollout.filter(|r| r.to == latest && !r.done(now_us));
    for t in targets {
        let revision = t.resolve(latest);
        if let Some(tag) = &t.tag {
            routing.tags.insert(tag.clone(), revision.to_string());
        }
        if t.percent == 0 {
            continue;
        }
        match rolling {
            Some(r) if t.latest => {
                let to_new = t.percent * r.percent_at(now_us) / 100;
                *routing.percents.entry(r.to.clone()).or_default() += to_new;
                *routing.percents.entry(r.from.clone()).or_default() += t.percent - to_new;
            }
            _ => *routing.percents.entry(revision.to_string()).or_default() += t.percent,
        }
    }
    routing.percents.retain(|_, p| *p > 0);
    routing
}

/// Orders `weights.len()` choices over one round of `sum(weights)` requests so that
/// each gets exactly its weight and the choices interleave as evenly as possible
/// (smooth weighted round-robin, as nginx balances upstreams).
pub fn weighted_slots(weights: &[u32]) -> Vec<u8> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut slots = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i64::from(*w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        slots.push(best as u8);
    }
    slots
}

/// A traffic change as the CLI takes it: new shares (replacing all shares when any is
/// given), tags to add, tags to remove. Tags already set are kept.
pub fn edit(
    current: &[TrafficTarget],
    shares: &[(Target, u32)],
    add_tags: &[(Target, String)],
    remove_tags: &[String],
) -> Result<Vec<TrafficTarget>, String> {
    let mut percents: Vec<(Target, u32)> = current
        .iter()
        .filter(|t| t.percent > 0)
        .map(|t| (t.target(), t.percent))
        .collect();
    if !shares.is_empty() {
        percents = shares.to_vec();
    }
    let mut tags: Vec<(Target, String)> = current
        .iter()
        .filter_map(|t| t.tag.clone().map(|tag| (t.target(), tag)))
        .collect();
    for tag in remove_tags {
        if !tags.iter().any(|(_, t)| t == tag) {
            return Err(format!("there is no tag {tag:?} to remove"));
        }
    }
    tags.retain(|(_, t)| !remove_tags.contains(t) && !add_tags.iter().any(|(_, new)| new == t));
    tags.extend(add_tags.iter().cloned());
    let mut table: Vec<TrafficTarget> = percents
        .into_iter()
        .map(|(target, percent)| TrafficTarget::new(target, percent, None))
        .collect();
    for (target, tag) in tags {
        match table.iter_mut().find(|t| t.target() == target && t.tag.is_none()) {
            Some(row) => row.tag = Some(tag),
            None => table.push(TrafficTarget::new(target, 0, Some(tag))),
        }
    }
    Ok(table)
}

/// The table after a rollback: everything to the revision before the one that serves
/// most now; tags stay where they point.
pub fn rollback(
    current: &[TrafficTarget],
    routing: &Routing,
    generations: &BTreeMap<String, u32>,
) -> Result<(String, Vec<TrafficTarget>), String> {
    let primary = routing
        .percents
        .iter()
        .max_by_key(|(name, percent)| (**percent, generations.get(*name).copied().unwrap_or(0)))
        .map(|(name, _)| name.clone())
        .ok_or("no revision serves traffic now")?;
    let primary_generation = generations.get(&primary).copied().unwrap_or(0);
    let previous = generations
        .iter()
        .filter(|(_, g)| **g < primary_generation)
        .max_by_key(|(_, g)| **g)
        .map(|(name, _)| name.clone())
        .ok_or_else(|| format!("{primary} serves now and there is no earlier revision to roll back to"))?;
    let table = all_to(current, &previous);
    Ok((previous, table))
}

/// The table that sends everything to `revision`, keeping the tags of `current`.
pub fn all_to(current: &[TrafficTarget], revision: &str) -> Vec<TrafficTarget> {
    let mut table = vec![TrafficTarget::new(Target::Revision(revision.to_string()), 100, None)];
    for t in current.iter().filter(|t| t.tag.is_some()) {
        table.push(TrafficTarget {
            percent: 0,
            ..t.clone()
        });
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(name: &str, percent: u32) -> TrafficTarget {
        TrafficTarget::new(Target::Revision(name.into()), percent, None)
    }

    #[test]
    fn tables_must_add_up_and_name_real_revisions() {
        let revs = ["hello-00001", "hello-00002"];
        validate_traffic(
            "t",
            "hello",
            &[rev("hello-00001", 90), TrafficTarget::latest(10)],
            Some(&revs),
        )
        .unwrap();
        // Without the list of revisions, only the shape is checked.
        validate_traffic("t", "hello", &[rev("hello-00009", 100)], None).unwrap();
        let err = validate_traffic("t", "hello", &[rev("hello-00001", 90)], Some(&revs)).unwrap_err();
        assert!(err.message.contains("add up to 90"), "{err}");
        let err = validate_traffic("t", "hello", &[rev("hello-00009", 100)], Some(&revs)).unwrap_err();
        assert_eq!(err.field, "t[0].revisionName");
        let mut tagged = rev("hello-00001", 100);
        tagged.tag = Some("Canary".into());
        assert_eq!(
            validate_traffic("t", "hello", &[tagged], Some(&revs))
                .unwrap_err()
                .field,
            "t[0].tag"
        );
        let mut a = rev("hello-00001", 50);
        a.tag = Some("x".into());
        let mut b = rev("hello-00002", 50);
        b.tag = Some("x".into());
        assert!(validate_traffic("t", "hello", &[a, b], Some(&revs))
            .unwrap_err()
            .message
            .contains("more than one"));
        let both = TrafficTarget {
            latest: true,
            ..rev("hello-00001", 100)
        };
        assert_eq!(
            validate_traffic("t", "hello", &[both], Some(&revs)).unwrap_err().field,
            "t[0]"
        );
        assert!(validate_traffic("t", "hello", &[], Some(&revs)).is_err());
        let mut rows: Vec<TrafficTarget> = (0..MAX_TRAFFIC_ROWS)
            .map(|i| {
                let mut row = rev("hello-00001", 1);
                row.tag = Some(format!("t{i}"));
                row
            })
            .collect();
        validate_traffic("t", "hello", &rows, Some(&revs)).unwrap();
        rows.push(TrafficTarget::latest(0));
        let err = validate_traffic("t", "hello", &rows, Some(&revs)).unwrap_err();
        assert!(err.message.contains("has 101 rows; at most 100"), "{err}");
    }

    #[test]
    fn resolve_follows_latest_and_merges_rows() {
        let table = vec![
            rev("hello-00001", 60),
            TrafficTarget::latest(40),
            TrafficTarget::new(Target::Revision("hello-00001".into()), 0, Some("old".into())),
        ];
        let r = resolve(&table, "hello-00003", None, 0);
        assert_eq!(r.percent_of("hello-00001"), 60);
        assert_eq!(r.percent_of("hello-00003"), 40);
        assert_eq!(r.tags["old"], "hello-00001");
        assert!(r.routes_to("hello-00001") && !r.routes_to("hello-00002"));
    }

    #[test]
    fn rollout_moves_latest_in_steps() {
        let r = Rollout::new("a", "b", 1_000_000, Duration::from_secs(4));
        let at = |s: f64| r.percent_at(1_000_000 + (s * 1e6) as i64);
        assert_eq!(at(0.0), 1);
        assert_eq!(at(0.99), 1);
        assert_eq!(at(1.0), 25);
        assert_eq!(at(2.5), 50);
        assert_eq!(at(3.0), 75);
        assert_eq!(at(4.0), 100);
        assert_eq!(r.next_change_us(1_000_000), Some(2_000_000));
        assert_eq!(r.next_change_us(2_500_000), Some(3_000_000));
        assert_eq!(r.percent_at(r.next_change_us(2_500_000).unwrap()), 50);
        assert_eq!(r.next_change_us(4_000_000), Some(5_000_000));
        assert_eq!(r.next_change_us(5_000_000), None);
        let table = default_traffic();
        let mid = resolve(&table, "b", Some(&r), 1_000_000 + 2_000_000);
        assert_eq!(mid.percent_of("a"), 50);
        assert_eq!(mid.percent_of("b"), 50);
        let done = resolve(&table, "b", Some(&r), 1_000_000 + 5_000_000);
        assert_eq!(done.percents.len(), 1);
        let long = Rollout::new("a", "b", 0, Duration::from_secs(600));
        assert_eq!(long.percent_at(0), 1);
        assert!(long.percent_at(300_000_000) >= 49 && long.percent_at(300_000_000) <= 51);
        assert!(long.percent_at(599_000_000) < 100);
    }

    #[test]
    fn slots_give_each_its_weight_evenly() {
        let slots = weighted_slots(&[90, 10]);
        assert_eq!(slots.len(), 100);
        assert_eq!(slots.iter().filter(|s| **s == 1).count(), 10);
        // Even spread: never two picks of the small share in a row.
        assert!(slots.windows(2).all(|w| !(w[0] == 1 && w[1] == 1)));
        let slots = weighted_slots(&[33, 33, 34]);
        for i in 0..3u8 {
            assert!(slots.iter().filter(|s| **s == i).count() >= 33);
        }
        assert_eq!(weighted_slots(&[100]), vec![0; 100]);
    }

    #[test]
    fn edit_replaces_shares_and_keeps_tags() {
        let current = vec![TrafficTarget::new(Target::Latest, 100, Some("current".into()))];
        let table = edit(
            &current,
            &[(Target::Revision("hello-00001".into()), 90), (Target::Latest, 10)],
            &[(Target::Revision("hello-00002".into()), "canary".into())],
            &[],
        )
        .unwrap();
        assert_eq!(
            table,
            vec![
                rev("hello-00001", 90),
                TrafficTarget::new(Target::Latest, 10, Some("current".into())),
                TrafficTarget::new(Target::Revision("hello-00002".into()), 0, Some("canary".into())),
            ]
        );
        let untagged = edit(&table, &[], &[], &["canary".into()]).unwrap();
        assert_eq!(untagged.len(), 2);
        assert!(edit(&table, &[], &[], &["nope".into()]).is_err());
    }

    #[test]
    fn rollback_goes_to_the_revision_before_the_main_one() {
        let generations: BTreeMap<String, u32> = [("h-00001", 1), ("h-00002", 2), ("h-00003", 3)]
            .iter()
            .map(|(n, g)| (n.to_string(), *g))
            .collect();
        let mut table = default_traffic();
        table.push(TrafficTarget::new(
            Target::Revision("h-00003".into()),
            0,
            Some("x".into()),
        ));
        let routing = resolve(&table, "h-00003", None, 0);
        let (to, new) = rollback(&table, &routing, &generations).unwrap();
        assert_eq!(to, "h-00002");
        assert_eq!(new[0], rev("h-00002", 100));
        assert_eq!(new[1].tag.as_deref(), Some("x"));
        let routing = resolve(&new, "h-00003", None, 0);
        assert_eq!(rollback(&new, &routing, &generations).unwrap().0, "h-00001");
        let routing = resolve(&[rev("h-00001", 100)], "h-00003", None, 0);
        assert!(rollback(&[], &routing, &generations).is_err());
    }
}
