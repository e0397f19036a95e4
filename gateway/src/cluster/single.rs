//! A node alone: no device is ever elsewhere.

use super::{Membership, NodeHealth};
use crate::live::hub::Hub;
use crate::live::message::Published;
use crate::live::nodes::OtherNodes;
use crate::live::registry::Registry;
use crate::live::sessions::Sessions;
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use async_trait::async_trait;
use protocol::envelope::DeviceInfo;
use std::sync::Arc;

pub struct SingleNode {
    /// `store.node_id`, else `local`: what the console calls it.
    pub name: String,
}

#[async_trait]
impl OtherNodes for SingleNode {
    fn publish_to_user(&self, _: &str, _: &Published) {}

    fn device_online(&self, _: &str, _: DeviceInfo) {}

    fn device_offline(&self, _: &str, _: &str) {}

    async fn devices(&self, _: &str) -> Result<Vec<DeviceInfo>, StoreError> {
        Ok(Vec::new())
    }

    async fn kick(&self, _: &str, _: &str, _: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn decide(&self, _: &str, _: &str, _: bool, _: Option<&str>) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn forget_user(&self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl Membership for SingleNode {
    fn start(self: Arc<Self>, _: Arc<Registry>, _: Arc<Hub>, _: Arc<Sessions>, _: &Shutdown) {}

    async fn leave(&self) {}

    async fn nodes(&self) -> Result<Vec<NodeHealth>, StoreError> {
        Ok(vec![NodeHealth {
            node: self.name.clone(),
            this: true,
            alive: true,
        }])
    }
}
