//! Live delivery of committed messages to the devices connected to this node.

use crate::hub::Hub;
use crate::session_handle::Qos;
use crate::store::{Appended, LiveFanout};
use protocol::topics;
use std::sync::Arc;

/// Publishes each committed message on its user's inbox topic, in log order.
pub struct HubFanout {
    hub: Arc<Hub>,
}

impl HubFanout {
    pub fn new(hub: Arc<Hub>) -> Self {
        Self { hub }
    }
}

impl LiveFanout for HubFanout {
    fn committed(&self, messages: &[Appended]) {
        for message in messages {
            self.hub.publish(
                &topics::inbox(&message.log),
                message.payload.clone(),
                Qos::AtLeastOnce,
                message.exclude_session,
            );
        }
    }
}
