//! A WeChat callback: its query string, then a NUL character, then its XML body (see
//! `gateway::fuzzing::wechat_callback`).
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| gateway::fuzzing::wechat_callback(text));
