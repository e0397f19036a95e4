//! The accept loop every listener shares: it only accepts, so one stalled or idle socket never
//! delays another client (every handshake runs in the connection's own task), it closes
//! surplus sockets at once past the listener's connection limit, and it stops at shutdown.

use crate::observe::metrics::{Metrics, RejectReason};
use crate::shutdown::Shutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Accepts sockets on `listener` until shutdown and hands each to `serve` with the permit that
/// counts it against `max_connections`; `serve` spawns the connection's task, which holds the
/// permit for as long as it runs. The listener closes when this returns.
pub async fn accept_loop(
    listener: TcpListener,
    max_connections: usize,
    metrics: &Metrics,
    shutdown: &Shutdown,
    mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics.reject(RejectReason::connection_limit);
            continue;
        };
        let _ = socket.set_nodelay(true);
        serve(socket, peer, permit);
    }
}
