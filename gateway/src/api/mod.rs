//! The HTTP listener: the backend API under `/v1` (bearer API key), the JSON WebSocket on `/ws`,
//! the web pages and the JavaScript client (`pages`), `/dev/tokens` in dev mode, and `/metrics`
//! and `/healthz` for operations.

// The modules with request bodies are `pub(crate)` for `crate::fuzzing`, which parses bodies
// as their handlers do.
mod bearer;
mod deadline;
mod dev_tokens;
pub(crate) mod devices;
pub mod error;
pub(crate) mod json;
pub mod key_rates;
pub(crate) mod messages;
pub(crate) mod notifications;
pub mod pages;
mod recording;
pub mod state;
mod stats;
pub mod tokens;
mod users;

use crate::front::json_ws::{self, JsonWsState};
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{middleware, Json, Router};
use error::ApiError;
use state::{Api, ApiState};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub fn router(api: Arc<ApiState>) -> Router {
    // The calls that carry traffic, which the traffic recording keeps.
    let recorded = Router::new()
        .route("/messages", post(messages::post))
        .route("/signals", post(messages::post_signal))
        .route("/notifications", post(notifications::post))
        .route("/notifications/batch", post(notifications::post_batch))
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            recording::record_call,
        ));
    let v1 = Router::new()
        .merge(recorded)
        .route("/tokens", post(tokens::issue))
        .route("/stats", get(stats::stats))
        .route("/nodes", get(stats::nodes))
        .route("/notifications/{id}", get(notifications::get))
        .route(
            "/users/{user}/quiet-hours",
            put(notifications::put_quiet_hours),
        )
        .route("/users/{user}/consent", put(notifications::put_consent))
        .route(
            "/users/{user}/preferences",
            get(notifications::get_preferences),
        )
        .route("/users/{user}/bindings", put(notifications::put_bindings))
        .route("/users/{user}", delete(users::delete_user))
        .route("/users/{user}/logout", post(users::logout))
        .route("/users/{user}/messages", get(users::history))
        .route("/users/{user}/recent", get(users::recent))
        .route(
            "/users/{user}/contacts/{other}",
            delete(users::delete_contact),
        )
        .route("/users/{user}/devices", get(devices::list))
        .route("/users/{user}/devices/{device}", delete(devices::kick))
        .route(
            "/users/{user}/devices/{device}/approval",
            post(devices::approve),
        )
        .layer(middleware::from_fn_with_state(
            api.clone(),
            bearer::require_api_key,
        ))
        .with_state(api.clone());
    let ws_state = JsonWsState {
        limit: Arc::new(Semaphore::new(api.config.limits.max_connections)),
        front: api.front.clone(),
    };
    let callbacks = Router::new()
        .route(
            &api.config.channels.wechat.callback_path,
            post(notifications::wechat_callback),
        )
        .with_state(api.clone());
    Router::new()
        .merge(callbacks)
        .nest("/v1", v1)
        .route("/ws", get(json_ws::upgrade).with_state(ws_state))
        .route(
            "/dev/tokens",
            post(dev_tokens::issue).with_state(api.clone()),
        )
        .route("/healthz", get(healthz))
        .merge(pages::routes(&api.config.web))
        .route("/metrics", get(metrics).with_state(api.clone()))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(api.config.limits.http_max_body))
        .layer(middleware::from_fn_with_state(
            api.config.limits.http_request_timeout,
            deadline::within,
        ))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn metrics(State(api): State<Api>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.metrics.render(),
    )
}
