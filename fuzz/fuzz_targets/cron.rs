//! Cron schedules with seconds and time zones, and the firing decision over them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use updraft_events::cron::{CatchUp, Schedule};

fuzz_target!(|input: (String, Option<String>, i64, i64)| {
    let (expression, timezone, cursor_us, now_us) = input;
    let Ok(schedule) = Schedule::parse("schedule", &expression, timezone.as_deref()) else {
        return;
    };
    // Times within a few centuries of now, as a cursor and a clock are.
    let bounded = |us: i64| 1_600_000_000_000_000 + us.rem_euclid(1 << 52);
    let (cursor_us, now_us) = (bounded(cursor_us), bounded(now_us));
    for catch_up in [CatchUp::Skip, CatchUp::Once] {
        let due = schedule.due(cursor_us.min(now_us), now_us, catch_up);
        if let Some(fired) = due.fire {
            assert!(fired <= now_us && fired > cursor_us.min(now_us), "fired outside its window");
        }
    }
});
