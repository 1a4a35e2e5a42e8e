//! Triggers: cron schedules, CloudEvents, broker filters and delivery policies, and the
//! loops that act on them.
//!
//! The decisions (what is due, what matches, when to try again) are pure and take the
//! time as a parameter. The loops (`scheduler`, `dispatch`, `sources`) and the durable
//! queue (`queue`) do the I/O over the store's `EventStore`; how an event reaches its
//! target is the platform's, behind `dispatch::Transport`.

pub mod announce;
pub mod cloudevent;
pub mod cron;
pub mod delivery;
pub mod dispatch;
pub mod filter;
pub mod manifest;
pub mod queue;
pub mod routing;
pub mod scheduler;
pub mod sources;
pub mod trigger;
pub mod webhook;
