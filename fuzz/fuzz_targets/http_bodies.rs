//! A body for one of the HTTP API's calls: the first byte picks the call, the second the
//! content type, the rest is the body (see `gateway::fuzzing::http_bodies`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| gateway::fuzzing::http_bodies(data));
