//! Memory and CPU quantities, durations and ISO-8601 durations, as flags, manifests
//! and delivery specs give them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use updraft_events::delivery::parse_iso8601;
use updraft_model::quantity::{format_cpu, format_memory, parse_cpu, parse_memory};
use updraft_model::resources::parse_duration;

fuzz_target!(|text: &str| {
    if let Ok(bytes) = parse_memory("memory", text) {
        assert_eq!(parse_memory("memory", &format_memory(bytes)).ok(), Some(bytes), "{text:?}");
    }
    if let Ok(millis) = parse_cpu("cpu", text) {
        assert_eq!(parse_cpu("cpu", &format_cpu(millis)).ok(), Some(millis), "{text:?}");
    }
    let _ = parse_duration("timeout", text);
    let _ = parse_iso8601("backoffDelay", text);
});
