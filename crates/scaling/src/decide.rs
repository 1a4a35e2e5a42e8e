//! The desired instance count of one revision.
//!
//! For now a revision runs zero or one instance: it is woken by a request and stopped
//! once it has been idle for its scale-to-zero period. The caller counts idle time
//! from the later of the last request and the moment an instance became ready. The scaler that applies this
//! already reconciles a count, so request-driven scaling beyond one slots in here.

/// What the gateway and the runtime report about one revision at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RevisionLoad {
    /// Requests being proxied to its instances.
    pub in_flight: u32,
    /// Requests held by the activator for want of a ready instance.
    pub waiting: u32,
    /// Instances running or starting.
    pub instances: u32,
    /// Of those, the ones not ready yet.
    pub starting: u32,
    /// Last time a request arrived or finished, in microseconds.
    pub last_active_us: i64,
    /// Whether any route leads to the revision.
    pub routable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Requests are waiting and nothing serves them yet.
    Activation,
    /// Requests are in flight, or the idle period has not passed.
    Active,
    /// Idle for the whole scale-to-zero period.
    Idle,
    /// No route leads here and nothing is in flight.
    Unrouted,
    /// Already at zero with nothing to serve.
    AtZero,
    /// Idle, but an instance is still starting: stopping it now would waste the start
    /// and leave the next request cold again.
    Starting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub desired: u32,
    pub reason: Reason,
}

pub fn decide(load: RevisionLoad, scale_to_zero_after_us: i64, now_us: i64) -> Decision {
    let busy = load.in_flight > 0 || load.waiting > 0;
    let (desired, reason) = if load.waiting > 0 && load.instances == 0 {
        (1, Reason::Activation)
    } else if busy {
        (load.instances.max(1), Reason::Active)
    } else if !load.routable {
        (0, Reason::Unrouted)
    } else if load.instances == 0 {
        (0, Reason::AtZero)
    } else if now_us.saturating_sub(load.last_active_us) >= scale_to_zero_after_us {
        if load.starting > 0 {
            (load.instances, Reason::Starting)
        } else {
            (0, Reason::Idle)
        }
    } else {
        (load.instances, Reason::Active)
    };
    // One instance per revision until request-driven autoscaling lands.
    Decision {
        desired: desired.min(1),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    fn load() -> RevisionLoad {
        RevisionLoad {
            routable: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_waiting_request_wakes_a_revision_at_zero() {
        let d = decide(RevisionLoad { waiting: 3, ..load() }, 60 * SEC, 0);
        assert_eq!(
            d,
            Decision {
                desired: 1,
                reason: Reason::Activation
            }
        );
    }

    #[test]
    fn idle_for_the_whole_period_goes_to_zero() {
        let running = RevisionLoad {
            instances: 1,
            last_active_us: 10 * SEC,
            ..load()
        };
        assert_eq!(decide(running, 5 * SEC, 14 * SEC).desired, 1);
        assert_eq!(
            decide(running, 5 * SEC, 15 * SEC),
            Decision {
                desired: 0,
                reason: Reason::Idle
            }
        );
    }

    #[test]
    fn a_starting_instance_is_not_stopped_for_idleness() {
        let starting = RevisionLoad {
            instances: 1,
            starting: 1,
            last_active_us: 0,
            ..load()
        };
        assert_eq!(
            decide(starting, SEC, 100 * SEC),
            Decision {
                desired: 1,
                reason: Reason::Starting
            }
        );
        let unrouted = RevisionLoad {
            routable: false,
            ..starting
        };
        assert_eq!(decide(unrouted, SEC, 100 * SEC).desired, 0);
    }

    #[test]
    fn in_flight_requests_keep_an_idle_instance() {
        let busy = RevisionLoad {
            instances: 1,
            in_flight: 1,
            last_active_us: 0,
            ..load()
        };
        assert_eq!(decide(busy, SEC, 100 * SEC).desired, 1);
    }

    #[test]
    fn unrouted_revisions_drain_then_stop() {
        let old = RevisionLoad {
            instances: 1,
            routable: false,
            in_flight: 2,
            ..load()
        };
        assert_eq!(decide(old, 60 * SEC, 0).desired, 1);
        let drained = RevisionLoad { in_flight: 0, ..old };
        assert_eq!(
            decide(drained, 60 * SEC, 0),
            Decision {
                desired: 0,
                reason: Reason::Unrouted
            }
        );
    }

    #[test]
    fn nothing_to_do_at_zero() {
        assert_eq!(
            decide(load(), SEC, 100 * SEC),
            Decision {
                desired: 0,
                reason: Reason::AtZero
            }
        );
    }
}
