//! The parts of `loadtest` other crates use: the test doubles of the push-channel providers.

pub mod mock_channels;
