//! Cron schedules with seconds and time zones, and the decision of what is due.
//!
//! A schedule's cursor is the latest scheduled time already handled (fired or
//! skipped); storing it with each firing makes a firing happen once per scheduled time,
//! across restarts.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};
use updraft_model::FieldError;

/// A scheduled time later than this after its second is a missed tick, not a late one.
pub const MISSED_AFTER_US: i64 = 1_000_000;

/// What to do with ticks missed while the server was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Fire nothing for missed ticks; carry on from the next one.
    #[default]
    Skip,
    /// Fire once, for the latest missed tick.
    Once,
}

impl FromStr for CatchUp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(CatchUp::Skip),
            "once" => Ok(CatchUp::Once),
            other => Err(format!("{other:?} is not a catch-up policy; use skip or once")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses a 5-field (minutes) or 6-field (seconds first) schedule or a macro such as
    /// `@hourly`, in `timezone` (IANA name; UTC when absent). A `CRON_TZ=Zone ` prefix,
    /// as Knative's PingSource allows, names the zone too.
    pub fn parse(field: &str, schedule: &str, timezone: Option<&str>) -> Result<Schedule, FieldError> {
        let mut pattern = schedule.trim();
        let mut zone = timezone.map(str::to_string);
        if let Some(rest) = pattern.strip_prefix("CRON_TZ=").or_else(|| pattern.strip_prefix("TZ=")) {
            let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            if zone.is_some() {
                return Err(FieldError::new(
                    field,
                    "names a time zone both in the schedule and separately; use one",
                ));
            }
            zone = Some(name.to_string());
            pattern = rest.trim();
        }
        let tz = match zone.as_deref() {
            None | Some("") => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                FieldError::new(
                    "timezone",
                    format!("{name:?} is not an IANA time zone; use a name like Europe/Berlin or Asia/Shanghai"),
                )
            })?,
        };
        let fields = pattern.split_whitespace().count();
        if !(pattern.starts_with('@') || fields == 5 || fields == 6) {
            return Err(FieldError::new(
                field,
                format!(
                    "invalid cron {schedule:?}: has {fields} fields; use 5 (minute hour day month weekday), 6 (second first) or a macro like @hourly"
                ),
            ));
        }
        if !pattern.starts_with('@') {
            check_steps(schedule, pattern, fields).map_err(|m| FieldError::new(field, m))?;
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| FieldError::new(field, format!("invalid cron {schedule:?}: {}", describe_error(&e))))?;
        let schedule = Schedule { cron, tz };
        if schedule.next_after(0).is_none() {
            return Err(FieldError::new(
                field,
                format!("invalid cron {schedule:?}: it never fires", schedule = pattern),
            ));
        }
        Ok(schedule)
    }

    pub fn timezone(&self) -> &str {
        self.tz.name()
    }

    /// The first scheduled time strictly after `after_us` (Unix microseconds).
    pub fn next_after(&self, after_us: i64) -> Option<i64> {
        let start = self.tz.from_utc_datetime(&utc(after_us).naive_utc());
        self.cron.find_next_occurrence(&start, false).ok().map(|t| micros(&t))
    }

    /// The latest scheduled time at or before `at_us`.
    pub fn latest_at_or_before(&self, at_us: i64) -> Option<i64> {
        let start = self.tz.from_utc_datetime(&utc(at_us).naive_utc());
        self.cron
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|t| micros(&t))
    }

    /// What is due at `now_us` for a trigger whose cursor is `cursor_us`.
    pub fn due(&self, cursor_us: i64, now_us: i64, catch_up: CatchUp) -> Due {
        let latest = self.latest_at_or_before(now_us).filter(|&t| t > cursor_us);
        let fire = latest.filter(|&t| now_us - t <= MISSED_AFTER_US || catch_up == CatchUp::Once);
        let cursor = latest.unwrap_or(cursor_us);
        Due {
            fire,
            cursor,
            next: self.next_after(cursor.max(now_us)),
        }
    }
}

/// The outcome of [`Schedule::due`]: the scheduled time to fire now, if any, the cursor
/// to store with it, and the next time to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    pub fire: Option<i64>,
    pub cursor: i64,
    pub next: Option<i64>,
}

/// Croner takes a step larger than its field (`*/70` seconds) as "only at 0"; a user who
/// wrote it meant something else, so it is refused.
fn check_steps(schedule: &str, pattern: &str, fields: usize) -> Result<(), String> {
    const NAMES: [(&str, u32); 6] = [
        ("second", 59),
        ("minute", 59),
        ("hour", 23),
        ("day-of-month", 31),
        ("month", 12),
        ("day-of-week", 7),
    ];
    let names = if fields == 6 { &NAMES[..] } else { &NAMES[1..] };
    for (text, (name, max)) in pattern.split_whitespace().zip(names) {
        for part in text.split(',') {
            if let Some((_, step)) = part.split_once('/') {
                match step.parse::<u32>() {
                    Ok(n) if (1..=*max).contains(&n) => {}
                    _ => {
                        return Err(format!(
                            "invalid cron {schedule:?}: {name} field step {step:?} must be 1-{max}"
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

fn describe_error(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError::*;
    match e {
        EmptyPattern => "it is empty".to_string(),
        InvalidPattern(m) | IllegalCharacters(m) | ComponentError(m) => m.clone(),
        other => other.to_string(),
    }
}

fn utc(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn micros<T: TimeZone>(t: &DateTime<T>) -> i64 {
    t.timestamp_micros()
}

/// RFC 3339 text of a Unix-microsecond time, for CloudEvents' `time` and for views.
pub fn rfc3339(us: i64) -> String {
    utc(us).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_micros()
    }

    #[test]
    fn six_fields_fire_to_the_second_and_five_fields_to_the_minute() {
        let every5 = Schedule::parse("schedule", "*/5 * * * * *", None).unwrap();
        assert_eq!(
            every5.next_after(at("2026-01-01T00:00:01Z")),
            Some(at("2026-01-01T00:00:05Z"))
        );
        assert_eq!(
            every5.next_after(at("2026-01-01T00:00:05Z")),
            Some(at("2026-01-01T00:00:10Z"))
        );
        let minutely = Schedule::parse("schedule", "* * * * *", None).unwrap();
        assert_eq!(
            minutely.next_after(at("2026-01-01T00:00:01Z")),
            Some(at("2026-01-01T00:01:00Z"))
        );
        let hourly = Schedule::parse("schedule", "@hourly", None).unwrap();
        assert_eq!(
            hourly.next_after(at("2026-01-01T00:10:00Z")),
            Some(at("2026-01-01T01:00:00Z"))
        );
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let nine = Schedule::parse("schedule", "0 0 9 * * *", Some("Asia/Shanghai")).unwrap();
        assert_eq!(
            nine.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T01:00:00Z"))
        );
        let prefixed = Schedule::parse("schedule", "CRON_TZ=Asia/Shanghai 0 9 * * *", None).unwrap();
        assert_eq!(prefixed.timezone(), "Asia/Shanghai");
        assert_eq!(
            prefixed.next_after(at("2026-01-01T00:00:00Z")),
            Some(at("2026-01-01T01:00:00Z"))
        );
    }

    #[test]
    fn daylight_saving_gaps_fire_once_after_the_gap_and_overlaps_fire_once() {
        // Berlin springs forward at 02:00 local on 2026-03-29 (01:00 UTC): 02:30 does not exist.
        let half_past_two = Schedule::parse("schedule", "0 30 2 * * *", Some("Europe/Berlin")).unwrap();
        let fired = half_past_two.next_after(at("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(
            fired,
            at("2026-03-29T01:00:00Z"),
            "the first real instant after the gap"
        );
        assert_eq!(half_past_two.next_after(fired), Some(at("2026-03-30T00:30:00Z")));
        // It falls back at 03:00 local on 2026-10-25: 02:30 happens twice, fires once.
        let first = half_past_two.next_after(at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, at("2026-10-25T00:30:00Z"));
        assert_eq!(half_past_two.next_after(first), Some(at("2026-10-26T01:30:00Z")));
        // A schedule every 30 minutes keeps its real interval across the switch.
        let every30 = Schedule::parse("schedule", "0 */30 * * * *", Some("Europe/Berlin")).unwrap();
        let mut t = at("2026-03-29T00:30:00Z");
        let mut gaps = Vec::new();
        for _ in 0..4 {
            let next = every30.next_after(t).unwrap();
            gaps.push((next - t) / 60_000_000);
            t = next;
        }
        assert_eq!(gaps, vec![30, 30, 30, 30]);
    }

    #[test]
    fn due_fires_on_time_ticks_and_follows_the_catch_up_policy() {
        let every_second = Schedule::parse("schedule", "* * * * * *", None).unwrap();
        let t0 = at("2026-01-01T00:00:00Z");
        let on_time = every_second.due(t0, t0 + 1_000_020, CatchUp::Skip);
        assert_eq!(on_time.fire, Some(t0 + 1_000_000));
        assert_eq!(on_time.cursor, t0 + 1_000_000);
        assert_eq!(on_time.next, Some(t0 + 2_000_000));
        let again = every_second.due(on_time.cursor, t0 + 1_500_000, CatchUp::Skip);
        assert_eq!(again.fire, None, "a tick is fired once");
        // Down for an hour: skip fires nothing but moves the cursor; once fires the latest.
        let later = t0 + 3_600_000_000 + 400_000;
        let skipped = every_second.due(t0, later, CatchUp::Skip);
        assert_eq!(
            skipped.fire,
            Some(t0 + 3_600_000_000),
            "the current second is on time, not missed"
        );
        let minutely = Schedule::parse("schedule", "0 * * * * *", None).unwrap();
        let missed = minutely.due(t0, t0 + 3_630_000_000, CatchUp::Skip);
        assert_eq!(missed.fire, None);
        assert_eq!(missed.cursor, t0 + 3_600_000_000);
        assert_eq!(missed.next, Some(t0 + 3_660_000_000));
        let caught_up = minutely.due(t0, t0 + 3_630_000_000, CatchUp::Once);
        assert_eq!(caught_up.fire, Some(t0 + 3_600_000_000));
        assert_eq!(
            minutely.due(caught_up.cursor, t0 + 3_640_000_000, CatchUp::Once).fire,
            None
        );
    }

    #[test]
    fn bad_schedules_and_zones_say_what_is_wrong() {
        let err = |s: &str, tz: Option<&str>| Schedule::parse("schedule", s, tz).unwrap_err().to_string();
        assert_eq!(
            err("*/70 * * * * *", None),
            "schedule: invalid cron \"*/70 * * * * *\": second field step \"70\" must be 1-59"
        );
        assert!(err("* * *", None).contains("has 3 fields"));
        assert!(err("* * * * * * * *", None).contains("has 8 fields"));
        assert!(err("", None).contains("has 0 fields"));
        assert!(err("61 * * * *", None).contains("invalid cron"));
        assert!(err("@sometimes", None).contains("invalid cron"));
        assert!(err("0 0 30 2 *", None).contains("never fires"));
        assert!(err("* * * * *", Some("Mars/Olympus")).contains("IANA"));
        assert!(err("CRON_TZ=UTC * * * * *", Some("UTC")).contains("both"));
    }
}
