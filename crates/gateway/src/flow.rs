//! Rate limits: a token bucket per service and per namespace, checked before a request
//! is routed, so a request over the limit costs no instance anything.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use updraft_model::annotations::RateLimit;

pub struct RateLimiter {
    /// What the limit belongs to, for the refusal's message (`service hello`).
    pub scope: String,
    pub limit: RateLimit,
    bucket: DefaultDirectRateLimiter,
    clock: DefaultClock,
}

impl RateLimiter {
    pub fn new(scope: String, limit: RateLimit) -> Self {
        let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limit.burst).unwrap_or(per_second);
        RateLimiter {
            scope,
            limit,
            bucket: DefaultDirectRateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes a token, or tells how long until one is free.
    pub fn check(&self) -> Result<(), Duration> {
        self.bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = RateLimiter::new(
            "service hello".into(),
            RateLimit {
                per_second: 1,
                burst: 3,
            },
        );
        for _ in 0..3 {
            assert!(limiter.check().is_ok());
        }
        let wait = limiter.check().unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
    }
}
