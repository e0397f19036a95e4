//! A JSON WebSocket text frame from a client, and the same text delivered to a JSON client
//! as a message's payload (see `gateway::fuzzing::json_frame`).
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| gateway::fuzzing::json_frame(text));
