//! The other gateway nodes, as the live layer sees them: where else a user's devices may be
//! online, and how to reach them there. One node alone has none (`cluster::single`);
//! nodes sharing a Redis reach each other through it (`cluster::redis`).

use super::message::Published;
use crate::store::StoreError;
use async_trait::async_trait;
use protocol::envelope::DeviceInfo;

#[async_trait]
pub trait OtherNodes: Send + Sync + 'static {
    /// Publishes a message on one of `user`'s topics on the other nodes that hold devices of
    /// the user. Best effort: a device that misses it live catches up from the log.
    fn publish_to_user(&self, user: &str, message: &Published);

    /// A device of `user` came online on this node: the others learn it, and a node that held
    /// the same device closes its session there (takeover across nodes).
    fn device_online(&self, user: &str, info: DeviceInfo);

    /// A device of `user` on this node went offline.
    fn device_offline(&self, user: &str, device: &str);

    /// The user's devices online on the other nodes.
    async fn devices(&self, user: &str) -> Result<Vec<DeviceInfo>, StoreError>;

    /// Logs out a device held by another node; false when no other node holds it.
    async fn kick(&self, user: &str, device: &str, reason: &str) -> Result<bool, StoreError>;

    /// Hands an approval decision (`by` the deciding device, or `None` for the backend) to the
    /// node where the device waits for it; false when it waits on no other node.
    async fn decide(
        &self,
        user: &str,
        device: &str,
        approve: bool,
        by: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// Has the other nodes holding devices of a deleted user close their connections (as
    /// [`super::registry::Registry::forget_user_here`] does here), and forgets what is kept of
    /// the user's presence.
    async fn forget_user(&self, user: &str) -> Result<(), StoreError>;
}
