//! The parts of `loadtest` other crates use: the test doubles of the push-channel providers,
//! and the gateway binary started as a child process (which the end-to-end tests share with
//! `loadtest notify --start-gateway`).

pub mod gateway_process;
pub mod mock_channels;
