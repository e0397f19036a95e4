//! The accept loop of the HTTP listener (API, JSON WebSocket, metrics). Like the MQTT listeners
//! it limits connections and gives every socket the handshake timeout to send its request
//! headers, so idle sockets cannot pile up.

use crate::gateway::Gateway;
use crate::metrics::RejectReason;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub async fn run(gw: Arc<Gateway>, listener: TcpListener, router: Router) {
    let limit = Arc::new(Semaphore::new(gw.config.limits.max_connections));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(gw.config.limits.handshake_timeout);
    let builder = Arc::new(builder);
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            gw.metrics.reject(RejectReason::connection_limit);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(socket), service);
            if let Err(e) = connection.await {
                tracing::debug!("HTTP connection ended: {e}");
            }
        });
    }
}
