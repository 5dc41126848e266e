#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if lethe::api::validate_identifier(data).is_ok() {
        // Nothing that could change a statement's shape is ever accepted.
        assert!(data.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        assert!(!data.is_empty() && data.len() <= 63);
    }
});
