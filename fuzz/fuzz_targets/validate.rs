#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    // Never a panic, and one line per problem.
    for p in lethe::validate::validate_str("fuzz.yaml", data, &lethe::validate::Options::default()) {
        assert!(!p.to_string().contains('\n'));
    }
});
