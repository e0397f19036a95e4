//! The JSON WebSocket bridge (`/ws` on the HTTP listener) for web clients: the same topics and
//! authorization as MQTT, in JSON frames (see `protocol::frames` and the README).
//!
//! Bad frames get an `error` frame and the socket lives on; a message over the size limit closes
//! it with 1009. Idle sockets are pinged, and one that does not answer within another interval is
//! dropped as dead.

use super::client::{Client, Publication, RetainHandling, SubscribeRequest};
use super::log_follower::{self, LogFollower, Readout, Start};
use super::Front;
use crate::auth::identity::Identity;
use crate::auth::Refusal;
use crate::front::goodbye;
use crate::front::write_deadline::{watched, Watched, CLOSING_WRITE};
use crate::infra::latency_budget::Stage;
use crate::live::hub::SubscriptionOptions;
use crate::live::link::{CloseReason, Delivery, Qos};
use crate::live::outbox::Outbox;
use crate::live::registry::Admission;
use crate::observe::metrics::{RejectReason, TransportLabel};
use crate::observe::recorder::{json_or_base64, JsonOrBase64};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::envelope::{DisconnectReason, Transport};
use protocol::error_code::ErrorBody;
use protocol::frames::{ClientFrame, RequestId, ServerFrame};
use protocol::ErrorCode;
use serde::Deserialize;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, Instant};

/// WebSocket close codes the bridge uses (RFC 6455 §7.4.1, and 4000+ for the application).
pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Logged out: kicked by the device policy or the backend, or taken over by a newer
    /// connection of the same device. The close reason says which, in words an app can show.
    pub const LOGGED_OUT: u16 = 4001;
    /// The token was missing, bad or expired, or the login was denied.
    pub const UNAUTHORIZED: u16 = 4003;
}

#[derive(Clone)]
pub struct JsonWsState {
    pub front: Arc<Front>,
    /// Counts the bridge's connections against `limits.max_connections`.
    pub limit: Arc<Semaphore>,
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

pub async fn upgrade(
    State(state): State<JsonWsState>,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(permit) = state.limit.clone().try_acquire_owned() else {
        state.front.metrics.reject(RejectReason::connection_limit);
        let refusal = ErrorBody::new(ErrorCode::Unavailable, "connection limit reached");
        return (StatusCode::SERVICE_UNAVAILABLE, Json(refusal)).into_response();
    };
    // Served by a task axum spawns; held as tracked work, so shutdown waits for it.
    let tracked = state.front.shutdown.hold();
    let limits = &state.front.limits;
    ws.max_message_size(limits.ws_max_message)
        .max_frame_size(limits.ws_max_message)
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            serve(state.front, socket, query.token, permit).await;
            drop(tracked);
        })
}

async fn serve(
    front: Arc<Front>,
    mut socket: WebSocket,
    token: Option<String>,
    _permit: OwnedSemaphorePermit,
) {
    let deadline = Instant::now() + front.limits.handshake_timeout;
    let (identity, admission) =
        match tokio::time::timeout_at(deadline, authenticate(&front, &mut socket, token)).await {
            Ok(Some(admitted)) => admitted,
            Ok(None) => return,
            Err(_) => {
                front.metrics.reject(RejectReason::handshake_timeout);
                let frame =
                    ServerFrame::error(None, ErrorCode::NotAuthenticated, "no auth frame in time");
                let _ = tokio::time::timeout(CLOSING_WRITE, async {
                    let _ = send(&mut socket, &frame).await;
                    close(
                        &mut socket,
                        close_code::UNAUTHORIZED,
                        "authentication timed out",
                    )
                    .await;
                })
                .await;
                return;
            }
        };
    let (client, outbox) = Client::open(&front, identity, Transport::JsonWs, admission);
    let out_counter = front
        .metrics
        .messages_out
        .get_or_create(&TransportLabel::from(Transport::JsonWs))
        .clone();
    let follower = match client.identity() {
        Identity::Device { user, device, .. } => Some(LogFollower::new(user, device, false)),
        _ => None,
    };
    Bridge {
        out_counter,
        ping_interval: front.limits.ws_ping_interval,
        client,
        socket,
        backlog: VecDeque::new(),
        follower,
        reading: None,
        held_answer: None,
    }
    .run(outbox)
    .await;
}

/// Takes the token from the URL or from the first `auth` frame. Other frames before it get a
/// `not_authenticated` error; bad tokens get `unauthorized` and the socket closes.
async fn authenticate(
    front: &Front,
    socket: &mut WebSocket,
    url_token: Option<String>,
) -> Option<(Identity, Admission)> {
    let (token, request_id) = match url_token {
        Some(token) => (token, None),
        None => loop {
            match socket.recv().await? {
                Ok(Message::Text(text)) => match read_frame(&text) {
                    Ok(ClientFrame::Auth { id, token }) => break (token, id),
                    Ok(frame) => {
                        let id = frame.id().cloned();
                        let error = ServerFrame::error(
                            id,
                            ErrorCode::NotAuthenticated,
                            "send an auth frame first",
                        );
                        send(socket, &error).await.ok()?;
                    }
                    Err(bad) => send(socket, &bad).await.ok()?,
                },
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        },
    };
    let admitted = match front.auth.device(&token).await {
        Ok(identity) => (front.registry.admission(&identity).await)
            .map(|admission| (identity, admission))
            .map_err(|e| Refusal::Unavailable(e.to_string())),
        Err(refusal) => Err(refusal),
    };
    match admitted {
        Ok((identity, admission)) => {
            let Identity::Device { user, device, .. } = &identity else {
                unreachable!("a token is a device's")
            };
            let ok = ServerFrame::Ok {
                id: request_id,
                user: Some(user.clone()),
                device: Some(device.clone()),
            };
            send(socket, &ok).await.ok()?;
            Some((identity, admission))
        }
        Err(Refusal::NotAuthorized(reason)) => {
            front
                .metrics
                .auth_failures
                .get_or_create(&TransportLabel::from(Transport::JsonWs))
                .inc();
            let error = ServerFrame::error(request_id, ErrorCode::Unauthorized, reason);
            let _ = send(socket, &error).await;
            close(socket, close_code::UNAUTHORIZED, "unauthorized").await;
            None
        }
        Err(refusal @ Refusal::Unavailable(_)) => {
            let error = ServerFrame::error(request_id, ErrorCode::Unavailable, refusal.to_string());
            let _ = send(socket, &error).await;
            close(socket, close_code::TRY_AGAIN_LATER, "unavailable").await;
            None
        }
    }
}

/// A client's text frame, or the error frame that answers it when it is not one we know.
/// `pub(crate)` for [`crate::fuzzing`].
pub(crate) fn read_frame(text: &str) -> Result<ClientFrame, ServerFrame> {
    serde_json::from_str(text).map_err(|e| bad_frame(text, &e))
}

/// The error frame for text that is not a frame we know: unknown `op`, or not JSON at all.
fn bad_frame(text: &str, error: &serde_json::Error) -> ServerFrame {
    let value: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let id = value.as_ref().and_then(RequestId::of);
    let known_op = value
        .as_ref()
        .and_then(|v| v.get("op"))
        .and_then(|op| op.as_str())
        .is_some_and(|op| ClientFrame::OPS.contains(&op));
    match value {
        None => ServerFrame::error(id, ErrorCode::BadJson, format!("not JSON: {error}")),
        Some(_) if known_op => ServerFrame::error(id, ErrorCode::InvalidRequest, error.to_string()),
        Some(_) => ServerFrame::error(id, ErrorCode::UnknownOp, "unknown or missing op"),
    }
}

struct Bridge {
    client: Client,
    socket: WebSocket,
    ping_interval: std::time::Duration,
    out_counter: prometheus_client::metrics::counter::Counter,
    /// What goes out before the outbox: retained messages for a new subscription, pages of
    /// the user's log.
    backlog: VecDeque<Delivery>,
    /// A device's inbox and notifications, followed from the store where needed.
    follower: Option<LogFollower>,
    reading: Option<Pin<Box<dyn Future<Output = Readout> + Send>>>,
    /// The `ok` to a `sub`, held while the follower learns where the log is now: once a client
    /// has its answer, every entry appended after it reaches the client. Nothing more is read
    /// while it is held.
    held_answer: Option<ServerFrame>,
}

/// Resolves with the read's result, or never when none is on its way.
async fn read_done(reading: &mut Option<Pin<Box<dyn Future<Output = Readout> + Send>>>) -> Readout {
    match reading {
        Some(reading) => reading.await,
        None => std::future::pending().await,
    }
}

/// Why the bridge stops: the socket failed, stalled or was closed by the client, or the gateway
/// closed the link.
enum Stop {
    Ended(DisconnectReason),
    Closed(CloseReason),
}

impl Bridge {
    async fn run(mut self, mut outbox: Outbox) {
        let interval = self.ping_interval;
        let handle = self.client.link.clone();
        let closed = handle.closed();
        tokio::pin!(closed);
        // Idle for `interval`: ping. Still silent after another `interval`: dead.
        let idle = sleep_until(Instant::now() + interval);
        tokio::pin!(idle);
        let mut pinged = false;

        let stop = 'session: loop {
            if let (Some(missed), Some(follower)) = (handle.take_missed(), &mut self.follower) {
                follower.fell_behind(missed);
            }
            while let Some(delivery) = self.backlog.pop_front() {
                if let Err(stop) = self.deliver(delivery, closed.as_mut()).await {
                    break 'session stop;
                }
            }
            if self.held_answer.is_some() && !self.follower_is_starting() {
                // Not reading meanwhile was not the client's silence.
                idle.as_mut().reset(Instant::now() + interval);
                pinged = false;
                let answer = self.held_answer.take().expect("checked");
                if let Err(stop) = self.transmit(text_of(&answer), closed.as_mut()).await {
                    break 'session stop;
                }
            }
            self.start_reading();
            tokio::select! {
                biased;
                reason = &mut closed => break Stop::Closed(reason),
                incoming = self.socket.recv(), if self.held_answer.is_none() => {
                    idle.as_mut().reset(Instant::now() + interval);
                    pinged = false;
                    handle.touch();
                    let reply = match incoming {
                        None | Some(Ok(Message::Close(_))) => break Stop::Ended(DisconnectReason::ClientDisconnect),
                        Some(Err(e)) => {
                            if is_too_big(e) {
                                let closing = close(&mut self.socket, close_code::TOO_BIG, "message too big");
                                let _ = tokio::time::timeout(CLOSING_WRITE, closing).await;
                                break Stop::Ended(DisconnectReason::PacketTooLarge);
                            }
                            break Stop::Ended(DisconnectReason::SocketClosed);
                        }
                        Some(Ok(Message::Text(text))) => self.handle_text(&text).await,
                        Some(Ok(Message::Binary(_))) => Some(ServerFrame::error(None, ErrorCode::BadJson, "frames are JSON text messages")),
                        Some(Ok(_)) => None,
                    };
                    if let Some(reply) = reply {
                        if let Err(stop) = self.transmit(text_of(&reply), closed.as_mut()).await {
                            break stop;
                        }
                    }
                }
                readout = read_done(&mut self.reading) => {
                    self.reading = None;
                    self.take_readout(readout);
                }
                Some(delivery) = outbox.recv() => {
                    let admitted = self.follower.as_mut().is_none_or(|f| f.admit(&delivery));
                    if admitted {
                        if let Err(stop) = self.deliver(delivery, closed.as_mut()).await {
                            break stop;
                        }
                    }
                }
                () = &mut idle => {
                    if pinged {
                        break Stop::Ended(DisconnectReason::KeepaliveTimeout);
                    }
                    pinged = true;
                    idle.as_mut().reset(Instant::now() + interval);
                    if let Err(stop) = self.transmit(Message::Ping(Default::default()), closed.as_mut()).await {
                        break stop;
                    }
                }
            }
        };
        let end = match stop {
            Stop::Ended(reason) => reason,
            Stop::Closed(reason) => {
                let closing = self.closing(&reason, &mut outbox);
                if tokio::time::timeout(CLOSING_WRITE, closing).await.is_ok() {
                    let grace = self.client.front().limits.shutdown_grace;
                    if let Some(linger) = goodbye::linger(reason.kind, grace) {
                        self.await_client_close(linger).await;
                    }
                }
                reason.kind
            }
        };
        self.client.set_end_reason(end);
    }

    /// The link was closed by the gateway (a kick, a takeover, shutdown): what was queued
    /// before the close goes out (a kick's reason, for instance), then a close frame that says
    /// why.
    async fn closing(&mut self, reason: &CloseReason, outbox: &mut Outbox) {
        while let Some(delivery) = outbox.try_recv() {
            self.out_counter.inc();
            if send(&mut self.socket, &frame_of(&delivery)).await.is_err() {
                return;
            }
        }
        let code = match reason.kind {
            DisconnectReason::Kicked
            | DisconnectReason::TakenOver
            | DisconnectReason::AccountDeleted => close_code::LOGGED_OUT,
            DisconnectReason::ApprovalDenied | DisconnectReason::ApprovalTimeout => {
                close_code::UNAUTHORIZED
            }
            DisconnectReason::SlowConsumer => close_code::TRY_AGAIN_LATER,
            DisconnectReason::Shutdown => close_code::GOING_AWAY,
            _ => close_code::POLICY,
        };
        close(&mut self.socket, code, &reason.message).await;
    }

    /// After our close frame, reads and drops what the client still sends until its own close
    /// frame (WebSocket's closing handshake), for at most `linger` (see [`goodbye`]).
    async fn await_client_close(&mut self, linger: std::time::Duration) {
        let _ = tokio::time::timeout(linger, async {
            while let Some(Ok(message)) = self.socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// Sends one message within the write timeout, watching the link's close meanwhile. A send
    /// cut off leaves no part of a frame behind: the WebSocket buffers whole frames.
    async fn transmit(
        &mut self,
        message: Message,
        closed: Pin<&mut impl Future<Output = CloseReason>>,
    ) -> Result<(), Stop> {
        let deadline = Instant::now() + self.client.front().limits.write_timeout;
        match watched(self.socket.send(message), deadline, closed).await {
            Watched::Finished(Ok(())) => Ok(()),
            Watched::Finished(Err(_)) => Err(Stop::Ended(DisconnectReason::SocketClosed)),
            Watched::TimedOut => Err(Stop::Ended(DisconnectReason::WriteTimeout)),
            Watched::Closed { reason, .. } => Err(Stop::Closed(reason)),
        }
    }

    fn follower_is_starting(&self) -> bool {
        self.follower.as_ref().is_some_and(|f| f.is_starting())
    }

    /// Starts the next read of the user's log, when one is due.
    fn start_reading(&mut self) {
        if self.reading.is_some() {
            return;
        }
        let (Some(follower), Identity::Device { user, device, .. }) =
            (&mut self.follower, self.client.identity())
        else {
            return;
        };
        if let Some(read) = follower.next_read() {
            let front = self.client.front();
            self.reading = Some(Box::pin(log_follower::perform(
                front.store.clone(),
                user.clone(),
                device.clone(),
                read,
                front.roaming.page_size,
                front.roaming.new_device_history as u64,
            )));
        }
    }

    fn take_readout(&mut self, readout: Readout) {
        let Some(follower) = &mut self.follower else {
            return;
        };
        let (deliveries, reset) = follower.take(readout);
        self.backlog.extend(deliveries);
        if let (Some(reset), Identity::Device { user, device, .. }) =
            (reset, self.client.identity())
        {
            let reply = follower.reset_reply(reset);
            (self.client.front().registry).reply(user, device, &reply);
        }
    }

    async fn deliver(
        &mut self,
        delivery: Delivery,
        closed: Pin<&mut impl Future<Output = CloseReason>>,
    ) -> Result<(), Stop> {
        self.out_counter.inc();
        self.transmit(text_of(&frame_of(&delivery)), closed).await?;
        if let Some(durable_at) = delivery.message.durable_at {
            let budget = &self.client.front().metrics.budget;
            budget.observe(Stage::delivered, durable_at, std::time::Instant::now());
        }
        Ok(())
    }

    /// Answers one text frame; `None` when no answer is due (a `pong`).
    async fn handle_text(&mut self, text: &str) -> Option<ServerFrame> {
        let frame = match read_frame(text) {
            Ok(frame) => frame,
            Err(bad) => return Some(bad),
        };
        let id = frame.id().cloned();
        let result = match frame {
            ClientFrame::Auth { .. } => {
                return Some(ServerFrame::error(
                    id,
                    ErrorCode::InvalidRequest,
                    "already authenticated",
                ))
            }
            ClientFrame::Ping { .. } => return Some(ServerFrame::Pong { id }),
            ClientFrame::Pong { .. } => return None,
            ClientFrame::Sub { topic, resume, .. } => {
                let result = self.subscribe(&topic, resume);
                if result.is_ok() && self.follower_is_starting() {
                    self.held_answer = Some(ServerFrame::ok(id));
                    return None;
                }
                result
            }
            ClientFrame::Unsub { topic, .. } => {
                if let Some(existed) = self.client.unsubscribe(&topic) {
                    if let Some(follower) = &mut self.follower {
                        if let Some(kind) = follower.kind_of(&existed.filter) {
                            follower.unsubscribed(kind);
                        }
                    }
                }
                Ok(())
            }
            ClientFrame::Pub { topic, payload, .. } => {
                let bytes = serde_json::to_vec(&payload).expect("JSON values serialize");
                let publication = Publication::plain(&topic, bytes.into(), Qos::AtLeastOnce);
                self.client.publish(publication).finish().await
            }
            ClientFrame::Ack { seq, .. } => self.client.ack(seq).finish().await,
            ClientFrame::Sync { after, epoch, .. } => self
                .client
                .sync(protocol::envelope::SyncRequest { after, epoch }),
        };
        Some(match result {
            Ok(()) => ServerFrame::ok(id),
            Err(refusal) => ServerFrame::Error {
                id,
                code: refusal.error_code(),
                message: refusal.to_string(),
                retry_after_ms: refusal.retry_after_ms(),
            },
        })
    }

    /// Subscribes at QoS 1 (the socket is the only acknowledgement a JSON client gives); the
    /// user's inbox or notifications are followed from the device's cursor with `resume`.
    fn subscribe(&mut self, topic: &str, resume: bool) -> Result<(), super::refusal::Refusal> {
        let options = SubscriptionOptions::at(Qos::AtLeastOnce);
        let subscribed = self.client.subscribe(&SubscribeRequest {
            filter: topic,
            options,
            retain_handling: RetainHandling::Send,
        })?;
        self.backlog.extend(subscribed.retained);
        if let (Some(kind), Some(follower)) = (subscribed.logged, &mut self.follower) {
            self.client.link.follow_log();
            let start = match resume {
                true => Start::Cursor {
                    floor: None,
                    epoch: None,
                },
                false => Start::Now,
            };
            follower.subscribed(kind, options, start);
        }
        Ok(())
    }
}

fn is_too_big(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    error
        .into_inner()
        .downcast::<Error>()
        .is_ok_and(|e| matches!(*e, Error::Capacity(_)))
}

/// The `msg` frame of a delivery: its payload as JSON where it is JSON, else in base64.
/// `pub(crate)` for [`crate::fuzzing`], with [`text_of`].
pub(crate) fn frame_of(delivery: &Delivery) -> ServerFrame {
    let message = &delivery.message;
    match json_or_base64(&message.payload) {
        JsonOrBase64::Json(json) => ServerFrame::Msg {
            topic: message.topic.clone(),
            payload: Some(json),
            payload_base64: None,
        },
        JsonOrBase64::Base64(text) => ServerFrame::Msg {
            topic: message.topic.clone(),
            payload: None,
            payload_base64: Some(text),
        },
    }
}

pub(crate) fn text_of(frame: &ServerFrame) -> Message {
    Message::Text(
        serde_json::to_string(frame)
            .expect("frames serialize")
            .into(),
    )
}

async fn send(socket: &mut WebSocket, frame: &ServerFrame) -> Result<(), axum::Error> {
    socket.send(text_of(frame)).await
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    // A close reason may hold at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}
