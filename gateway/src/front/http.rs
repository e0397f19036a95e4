//! The HTTP listener (API, JSON WebSocket, metrics): HTTP/1.1 connections served by the API's
//! router, each with the handshake timeout to send its request headers, so idle sockets cannot
//! pile up. At shutdown a connection finishes the request in flight and closes.

use super::accept::accept_loop;
use super::Front;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn run(front: Arc<Front>, listener: TcpListener, router: Router) {
    // HTTP/1.1 only: an auto-detecting (h1/h2) server would wait for the first bytes without
    // any timeout, letting idle sockets pile up.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(front.limits.handshake_timeout);
    let shutdown = &front.shutdown;
    accept_loop(
        listener,
        front.limits.max_connections,
        &front.metrics,
        shutdown,
        |socket, _peer, permit| {
            let service = TowerToHyperService::new(router.clone());
            let connection = builder
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            let stopping = shutdown.clone();
            shutdown.spawn(async move {
                let _permit = permit;
                tokio::pin!(connection);
                let ended = tokio::select! {
                    ended = connection.as_mut() => ended,
                    () = stopping.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(e) = ended {
                    tracing::debug!("HTTP connection ended: {e}");
                }
            });
        },
    )
    .await;
}
