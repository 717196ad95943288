//! cargo fuzz target `update_decode`: the checks are in src/lib.rs (`cryptobot_fuzz::update_decode`), so that
//! `cargo test` replays the corpus and the saved crashes without libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cryptobot_fuzz::update_decode(data));
