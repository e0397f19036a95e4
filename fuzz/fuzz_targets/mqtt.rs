//! An MQTT client's bytes: a CONNECT, 3.1.1 or 5 as its protocol level says, then any packets,
//! through the codec and the connection's protocol state (see `gateway::fuzzing::mqtt`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzzing::mqtt(data));
