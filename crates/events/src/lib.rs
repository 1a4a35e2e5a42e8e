//! Triggers: cron schedules, CloudEvents, broker filters and delivery policies.
//!
//! Pure: no network, clock or disk. The server's dispatcher does the I/O and asks this
//! crate what is due, what matches and when to try again.

pub mod cloudevent;
pub mod cron;
pub mod delivery;
pub mod filter;
pub mod manifest;
pub mod queue;
pub mod routing;
pub mod scheduler;
pub mod trigger;
