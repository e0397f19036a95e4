//! The accept loop of the HTTP listener (API, JSON WebSocket, metrics). Like the MQTT listeners
//! it limits connections and gives every socket the handshake timeout to send its request
//! headers, so idle sockets cannot pile up.

use crate::gateway::Gateway;
use crate::metrics::RejectReason;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub async fn run(gw: Arc<Gateway>, listener: TcpListener, router: Router) {
    let limit = Arc::new(Semaphore::new(gw.config.limits.max_connections));
    // HTTP/1.1 only: an auto-detecting (h1/h2) server would wait for the first bytes without
    // any timeout, letting idle sockets pile up.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(gw.config.limits.handshake_timeout);
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
        let connection = builder
            .serve_connection(TokioIo::new(socket), service)
            .with_upgrades();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = connection.await {
                tracing::debug!("HTTP connection ended: {e}");
            }
        });
    }
}
