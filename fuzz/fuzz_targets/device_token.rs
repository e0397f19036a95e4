//! A string given as a device token, and tokens signed for ids taken from it (see
//! `gateway::fuzzing::device_token`).
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| gateway::fuzzing::device_token(text));
