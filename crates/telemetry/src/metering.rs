//! What an instance costs: its size (CPU and memory limits) times the time it was
//! alive, and the CPU it really used, counted from where the last count stopped so a
//! stretch is never counted twice. Pure: the caller gives the time and the CPU counter.

use updraft_model::Usage;

/// The size an instance without a limit is metered at.
pub const UNLIMITED_VCPU: f64 = 1.0;
pub const UNLIMITED_GIB: f64 = 0.5;
const HOUR_US: i64 = 3_600_000_000;
const GIB: f64 = (1u64 << 30) as f64;

/// Where an instance's metering stands: the time and CPU counted so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metered {
    pub until_us: i64,
    pub cpu_ns: u64,
}

impl Metered {
    /// Nothing counted yet, from `now_us` on.
    pub fn from(now_us: i64) -> Self {
        Metered {
            until_us: now_us,
            cpu_ns: 0,
        }
    }
}

/// vCPUs and GiB an instance is metered at, from its limits.
pub fn size(cpu_millis: Option<u32>, memory_bytes: Option<u64>) -> (f64, f64) {
    (
        cpu_millis.map_or(UNLIMITED_VCPU, |m| f64::from(m) / 1000.0),
        memory_bytes.map_or(UNLIMITED_GIB, |b| b as f64 / GIB),
    )
}

/// The start of the hour `now_us` falls in: usage is kept per hour.
pub fn hour_of(now_us: i64) -> i64 {
    now_us - now_us.rem_euclid(HOUR_US)
}

/// Adds an instance's time and CPU since `metered` to `usage`, and moves `metered` on.
/// `cpu_ns` is its cgroup's counter now, when it has one; a counter that went back
/// (a new cgroup) counts nothing rather than a negative.
pub fn accrue(metered: &mut Metered, (vcpu, gib): (f64, f64), cpu_ns: Option<u64>, now_us: i64, usage: &mut Usage) {
    let seconds = (now_us - metered.until_us).max(0) as f64 / 1e6;
    usage.vcpu_seconds += vcpu * seconds;
    usage.gib_seconds += gib * seconds;
    metered.until_us = metered.until_us.max(now_us);
    let cpu_ns = cpu_ns.unwrap_or(metered.cpu_ns);
    usage.cpu_seconds += cpu_ns.saturating_sub(metered.cpu_ns) as f64 / 1e9;
    metered.cpu_ns = metered.cpu_ns.max(cpu_ns);
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn time_and_cpu_are_counted_once_from_where_the_last_count_stopped() {
        let size = size(Some(500), Some(256 << 20));
        assert_eq!(size, (0.5, 0.25));
        let mut metered = Metered::from(10 * S);
        let mut usage = Usage::default();
        accrue(&mut metered, size, Some(2_000_000_000), 14 * S, &mut usage);
        assert_eq!(
            (usage.vcpu_seconds, usage.gib_seconds, usage.cpu_seconds),
            (2.0, 1.0, 2.0)
        );
        // The same moment again adds nothing; a clock or counter that went back neither.
        accrue(&mut metered, size, Some(2_000_000_000), 14 * S, &mut usage);
        accrue(&mut metered, size, Some(1_000_000_000), 13 * S, &mut usage);
        assert_eq!((usage.vcpu_seconds, usage.cpu_seconds), (2.0, 2.0));
        assert_eq!(
            metered,
            Metered {
                until_us: 14 * S,
                cpu_ns: 2_000_000_000
            }
        );
        // Without a cgroup the CPU stays where it was; the time still counts.
        accrue(&mut metered, size, None, 16 * S, &mut usage);
        assert_eq!((usage.vcpu_seconds, usage.cpu_seconds), (3.0, 2.0));
    }

    #[test]
    fn no_limit_is_metered_at_the_default_size() {
        assert_eq!(size(None, None), (UNLIMITED_VCPU, UNLIMITED_GIB));
    }

    #[test]
    fn usage_is_kept_by_the_hour() {
        let hour = 3_600 * S;
        assert_eq!(hour_of(5 * hour + 17), 5 * hour);
        assert_eq!(hour_of(5 * hour), 5 * hour);
    }
}
