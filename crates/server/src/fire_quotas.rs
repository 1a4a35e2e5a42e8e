//! Each namespace's bucket for `quota.fires_per_minute`, which broker ingress takes
//! events from.

use std::sync::Mutex;

use axum::http::StatusCode;
use updraft_gateway::{Limiters, Rate};

use crate::ApiError;

#[derive(Default)]
pub struct FireQuotas(Mutex<Limiters>);

impl FireQuotas {
    /// Takes `count` events from the namespace's minute, or refuses them all with 429.
    pub fn take(&self, namespace: &str, per_minute: u32, count: usize) -> Result<(), ApiError> {
        let bucket = self.0.lock().unwrap_or_else(|p| p.into_inner()).get(
            format!("namespace {namespace}'s quota of events (quota.fires_per_minute)"),
            Rate::PerMinute(per_minute),
        );
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        bucket.check_n(count).map_err(|wait| {
            let when = match wait {
                Some(wait) => format!("; retry in {} s", wait.as_secs_f64().ceil().max(1.0)),
                None => format!("; a batch of {count} is more than a whole minute's"),
            };
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("{}{when}", bucket.refusal()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minute_holds_its_quota_and_a_batch_counts_each_event() {
        let quotas = FireQuotas::default();
        quotas.take("t", 3, 2).unwrap();
        quotas.take("t", 3, 1).unwrap();
        let refused = quotas.take("t", 3, 1).unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.message.contains("quota.fires_per_minute") && refused.message.contains("retry in"));
        assert!(quotas
            .take("t", 3, 4)
            .unwrap_err()
            .message
            .contains("more than a whole minute"));
        quotas.take("other", 3, 3).unwrap();
        // A raised quota is a new bucket.
        quotas.take("t", 10, 5).unwrap();
    }
}
