//! cargo fuzz target `webhook_request`: the checks are in src/lib.rs (`cryptobot_fuzz::webhook_request`), so that
//! `cargo test` replays the corpus and the saved crashes without libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cryptobot_fuzz::webhook_request(data));
