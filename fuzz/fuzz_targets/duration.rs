#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if let Ok(d) = data.parse::<lethe::api::Duration>() {
        // An accepted duration is positive and usable from now.
        assert!(d.months() > 0 || d.seconds() > 0);
        let now = chrono::Utc::now();
        if let Some(t) = d.before(now) {
            assert!(t < now);
        }
    }
});
