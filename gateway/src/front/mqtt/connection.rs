//! One established MQTT connection: the packet loop between the socket, the client's outbox
//! and the work its publishes start. It reads while fewer than the Receive Maximum of the
//! client's publishes are being handled, answers them in order, sends the outbox no faster than
//! the client acknowledges, follows the user's log where the live path cannot keep up, and
//! keeps the session's state as it changes.

use super::codec::{
    self, AckCode, Codec, ConnectRequest, DecodeError, DisconnectCode, FilterRequest, Inbound,
    SubscribeRefusal, Version,
};
use super::inbound::{self, Admission, InboundState, Violation};
use super::outbound::{Outbound, Written};
use crate::auth::identity::Identity;
use crate::front::client::{Client, Handled, Publication, RetainHandling, SubscribeRequest};
use crate::front::goodbye;
use crate::front::log_follower::{self, LogFollower, Readout, Start};
use crate::front::refusal::Refusal;
use crate::front::stream::{MqttStream, READ_CHUNK};
use crate::front::write_deadline::{watched, Watched, CLOSING_WRITE};
use crate::live::hub::SubscriptionOptions;
use crate::live::link::{CloseReason, Delivery, Qos};
use crate::live::outbox::Outbox;
use crate::live::sessions::{Claim, SessionState, TakenUp};
use crate::observe::metrics::TransportLabel;
use crate::shutdown::Shutdown;
use bytes::BytesMut;
use futures_util::stream::{FuturesOrdered, Stream, StreamExt};
use protocol::envelope::DisconnectReason;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, Instant};

/// Write buffer size above which the connection flushes before taking more to send.
const WRITE_BATCH: usize = 64 * 1024;

/// How long a leaving connection waits for its work in progress: publishes being stored, and
/// learning where its session began to follow the log.
const FINISHING: Duration = Duration::from_secs(5);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pub struct Connection {
    client: Client,
    codec: Codec,
    stream: MqttStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    outbound: Outbound,
    inbound: InboundState,
    /// What goes out before the outbox: the retained messages of a new subscription, what was
    /// queued for the session while its client was away, pages of the user's log.
    backlog: VecDeque<Delivery>,
    /// A device's inbox and notifications, followed from the store where needed.
    follower: Option<LogFollower>,
    reading: Option<BoxFuture<Readout>>,
    /// SUBACKs held while the follower learns where the log is now: once a client has its
    /// SUBACK, every entry appended after it reaches the client (MQTT 3.8.4 lets the matching
    /// PUBLISHes come before the SUBACK, never the other way round). The socket is not read
    /// while any is held, which bounds them.
    held_subacks: BytesMut,
    cursor_write: Background,
    /// The session, held until the connection ends.
    claim: Claim,
    /// Seconds the session is kept once the client leaves; 0: it ends with the connection.
    expiry: u32,
    /// The session's subscriptions changed since it was last kept in the store.
    session_changed: bool,
    session_write: Background,
    keep_alive: Duration,
    /// Whether the will is published when the connection ends (not after a normal DISCONNECT).
    with_will: bool,
    /// Answers to publishes still being handled, in the order the publishes came.
    answers: FuturesOrdered<PendingAnswer>,
    /// A write was cut off (its deadline passed, or the link closed meanwhile): the stream may
    /// hold part of a packet, so nothing more is written to it.
    interrupted: bool,
}

/// How a connection ended, for the handshake to hand the session back and send the will.
pub struct Ending {
    pub client: Client,
    pub claim: Claim,
    /// The session's state to keep; `None` when it ends with the connection.
    pub state: Option<SessionState>,
    /// The client came back on another node, which holds the session now.
    pub moved: bool,
    pub with_will: bool,
    /// Seconds the session is kept (the client may have changed it as it left).
    pub expiry: u32,
    /// The client's outbox, for a parked session to empty.
    pub outbox: Outbox,
}

/// Which publish an answer is for.
struct Answer {
    pkid: u16,
    qos: u8,
    topic: String,
    /// For QoS 1: what tells it from another publish under the same packet id.
    fingerprint: u64,
}

/// A publish whose answer waits for work still running (a durable append).
type PendingAnswer = BoxFuture<(Answer, Result<(), Refusal>)>;

/// What handling a packet asks of the loop.
enum Flow {
    Continue,
    End {
        reason: DisconnectReason,
        notice: Option<Violation>,
    },
}

impl Flow {
    fn violation((code, text): Violation) -> Self {
        let reason = match code {
            DisconnectCode::PacketTooLarge => DisconnectReason::PacketTooLarge,
            _ => DisconnectReason::ProtocolError,
        };
        Self::End {
            reason,
            notice: Some((code, text)),
        }
    }
}

/// Work the connection starts beside its loop, one at a time (a write of its cursor or of its
/// session). Holds only a signal of its end, not the task: an idle connection keeps no finished
/// task's memory.
#[derive(Default)]
struct Background(Option<oneshot::Receiver<()>>);

impl Background {
    fn start(&mut self, shutdown: &Shutdown, work: impl Future<Output = ()> + Send + 'static) {
        let (done, finished) = oneshot::channel();
        shutdown.spawn(async move {
            work.await;
            let _ = done.send(());
        });
        self.0 = Some(finished);
    }

    /// Whether the work started last is still running.
    fn busy(&mut self) -> bool {
        match &mut self.0 {
            Some(finished) => match finished.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => true,
                _ => {
                    self.0 = None;
                    false
                }
            },
            None => false,
        }
    }

    /// Waits for the work started last to end.
    async fn finished(&mut self) {
        if let Some(finished) = self.0.take() {
            let _ = finished.await;
        }
    }
}

/// Resolves with `future`'s output, or never when there is none.
async fn maybe<T>(future: &mut Option<BoxFuture<T>>) -> T {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

impl Connection {
    /// A connection for `client`, whose CONNACK is in `wbuf`, taking up the session `claim`
    /// holds: its subscriptions, what it had in flight and what was queued for it.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        client: Client,
        codec: Codec,
        stream: MqttStream,
        rbuf: BytesMut,
        wbuf: BytesMut,
        connect: &ConnectRequest,
        keep_alive: Duration,
        claim: Claim,
        taken_up: TakenUp,
        expiry: u32,
    ) -> Self {
        let front = client.front().clone();
        let limits = &front.limits;
        let window = usize::from(
            limits
                .max_inflight
                .min(connect.receive_maximum.unwrap_or(u16::MAX)),
        );
        let transport = TransportLabel::from(client.transport());
        let outbound = Outbound::new(
            codec,
            window,
            connect.topic_alias_maximum,
            front.metrics.messages_out.get_or_create(&transport).clone(),
            front.metrics.too_large_for_client.clone(),
            front.metrics.budget.clone(),
        );
        let inbound = InboundState::new(
            codec.version,
            limits.receive_maximum,
            limits.topic_alias_maximum,
        );
        let follower = match client.identity() {
            Identity::Device { user, device, .. } => {
                Some(LogFollower::new(user, device, expiry > 0))
            }
            _ => None,
        };
        let TakenUp {
            state: kept,
            queued,
        } = taken_up;
        let mut connection = Self {
            client,
            codec,
            stream,
            rbuf,
            wbuf,
            outbound,
            inbound,
            backlog: queued
                .into_iter()
                .map(|(message, qos)| Delivery::of(Arc::new(message), qos))
                .collect(),
            follower,
            reading: None,
            held_subacks: BytesMut::new(),
            cursor_write: Background::default(),
            claim,
            expiry,
            session_changed: false,
            session_write: Background::default(),
            keep_alive,
            with_will: true,
            answers: FuturesOrdered::new(),
            interrupted: false,
        };
        if let Some(state) = kept {
            connection.resume(state);
        }
        connection
    }

    /// Takes up a kept session: what was in flight goes again first (MQTT 4.4), then its
    /// subscriptions are made again, the user's log followed from the device's cursor.
    fn resume(&mut self, state: SessionState) {
        let (sent, unsent): (Vec<_>, Vec<_>) =
            state.unacknowledged.into_iter().partition(|k| k.pkid != 0);
        let resent = self.outbound.resend(sent, &mut self.wbuf);
        self.backlog
            .extend(unsent.into_iter().map(|kept| kept.delivery()));
        self.inbound
            .resume(&state.awaiting_release, &state.answered);
        if let Some(follower) = &mut self.follower {
            for &seq in &resent {
                follower.sent(seq, Qos::AtLeastOnce);
            }
        }
        // Entries sent again are past the cursor already.
        let floor = state.log_from.into_iter().chain(resent).max();
        for kept in &state.subscriptions {
            let requested = kept.requested();
            let request = SubscribeRequest {
                filter: &requested,
                options: kept.options(),
                retain_handling: RetainHandling::DoNotSend,
            };
            let start = Start::Cursor {
                floor,
                epoch: state.log_epoch.clone(),
            };
            if let Err(refusal) = self.subscribe(&request, start) {
                tracing::info!(link = self.client.link.id, filter = %requested, "a kept subscription is no longer allowed: {refusal}");
            }
        }
    }

    pub async fn run(mut self, mut outbox: Outbox) -> Ending {
        // Keepalive is enforced at 1.5 times the negotiated interval (MQTT 3.1.1 §3.1.2.10).
        let keep_alive_window = self.keep_alive + self.keep_alive / 2;
        let keep_alive = sleep_until(Instant::now() + keep_alive_window);
        tokio::pin!(keep_alive);
        let link = self.client.link.clone();
        let closed = link.closed();
        tokio::pin!(closed);
        let mut moved = false;

        let (reason, notice) = loop {
            if let (Some(missed), Some(follower)) = (link.take_missed(), &mut self.follower) {
                follower.fell_behind(missed);
            }
            self.write_backlog();
            if !self.held_subacks.is_empty() && !self.follower_is_starting() {
                let held = self.held_subacks.split();
                self.wbuf.unsplit(held);
                // Not reading meanwhile was not the client's silence.
                keep_alive
                    .as_mut()
                    .reset(Instant::now() + keep_alive_window);
            }
            self.start_background_work();
            if !self.wbuf.is_empty() {
                let deadline = Instant::now() + self.client.front().limits.write_timeout;
                let write = self.stream.write_all(&self.wbuf);
                match watched(write, deadline, closed.as_mut()).await {
                    Watched::Finished(Ok(())) => {}
                    Watched::Finished(Err(_)) => break (DisconnectReason::SocketClosed, None),
                    Watched::TimedOut => {
                        self.interrupted = true;
                        break (DisconnectReason::WriteTimeout, None);
                    }
                    Watched::Closed { reason, started } => {
                        self.interrupted = started;
                        self.closing(&reason, &mut outbox).await;
                        moved = reason.moved_elsewhere;
                        break (reason.kind, None);
                    }
                }
                self.recycle_buffers();
                if self.backlog.front().is_some_and(|d| self.outbound.takes(d)) {
                    continue;
                }
            }
            let takes_outbox = self.backlog.is_empty() && self.outbound.has_room();
            // Nothing more is read while a SUBACK is held: what is held stays within one read.
            let reads = !self.inbound.is_full() && self.held_subacks.is_empty();
            tokio::select! {
                biased;
                reason = &mut closed => {
                    self.closing(&reason, &mut outbox).await;
                    moved = reason.moved_elsewhere;
                    break (reason.kind, None);
                }
                read = self.stream.read_into(&mut self.rbuf), if reads => {
                    match read {
                        Ok(0) | Err(_) => break (DisconnectReason::SocketClosed, None),
                        Ok(_) => {
                            keep_alive.as_mut().reset(Instant::now() + keep_alive_window);
                            link.touch();
                            // Packets that reach two connections at once are handled in the
                            // order they came: the runtime runs the task it woke last first, so
                            // a PUBLISH would be routed before a SUBSCRIBE another client sent
                            // just before it (as Paho's test_subscribe_options does). A publisher
                            // lets the tasks woken with it run first.
                            if codec::holds_publish(&self.rbuf) {
                                tokio::task::yield_now().await;
                            }
                            if let Flow::End { reason, notice } = self.handle_input() {
                                break (reason, notice);
                            }
                        }
                    }
                }
                Some(first) = self.answers.next(), if !self.answers.is_empty() => {
                    let was_full = self.inbound.is_full();
                    if let Flow::End { reason, notice } = self.answer_ready(first).await {
                        break (reason, notice);
                    }
                    if was_full {
                        // Not reading was not the client's silence; and what it sent meanwhile
                        // may be waiting in the buffer already.
                        keep_alive.as_mut().reset(Instant::now() + keep_alive_window);
                        if let Flow::End { reason, notice } = self.handle_input() {
                            break (reason, notice);
                        }
                    }
                }
                readout = maybe(&mut self.reading) => {
                    self.reading = None;
                    self.take_readout(readout);
                }
                Some(delivery) = outbox.recv(), if takes_outbox => {
                    self.deliver(delivery);
                    while self.outbound.has_room() && self.wbuf.len() < WRITE_BATCH {
                        match outbox.try_recv() {
                            Some(delivery) => self.deliver(delivery),
                            None => break,
                        }
                    }
                }
                () = &mut keep_alive => {
                    break (
                        DisconnectReason::KeepaliveTimeout,
                        Some((DisconnectCode::KeepAliveTimeout, "no packet within 1.5 times the keepalive")),
                    );
                }
            }
        };
        if let Some((code, text)) = notice {
            self.codec.disconnect(code, text, &mut self.wbuf);
        }
        if !self.interrupted {
            let linger = self.linger(notice.is_some(), reason);
            self.say_goodbye(linger).await;
        }
        // What is still in the outbox stays there: a parked session queues it (entries of the
        // user's log are the cursor's to bring back).
        self.client.set_end_reason(reason);
        self.finish().await;
        self.ending(moved, outbox)
    }

    /// The link was closed by the gateway (a kick, a takeover, shutdown): what is due goes out
    /// with a DISCONNECT that says why (v5).
    async fn closing(&mut self, reason: &CloseReason, outbox: &mut Outbox) {
        if reason.kind == DisconnectReason::Shutdown {
            // Answer the publishes being stored first: the store commits them before it
            // closes, and their senders must not send them again.
            while let Some((answer, result)) = self.answers.next().await {
                let _ = self.answer(answer, result);
            }
        }
        // What was queued before the close (a kick's reason, for instance) goes out; for a
        // kept session it stays in flight and is sent again.
        while let Some(delivery) = outbox.try_recv() {
            self.deliver(delivery);
        }
        let code = match reason.kind {
            DisconnectReason::TakenOver => DisconnectCode::TakenOver,
            DisconnectReason::SlowConsumer => DisconnectCode::QuotaExceeded,
            DisconnectReason::ApprovalDenied | DisconnectReason::ApprovalTimeout => {
                DisconnectCode::NotAuthorized
            }
            DisconnectReason::Shutdown => DisconnectCode::ShuttingDown,
            _ => DisconnectCode::Administrative,
        };
        self.codec.disconnect(code, &reason.message, &mut self.wbuf);
    }

    /// How long to drain the socket after the goodbye (see [`goodbye`]); `notice`: the client
    /// was in breach, and was told so.
    fn linger(&self, notice: bool, reason: DisconnectReason) -> Option<Duration> {
        if notice {
            Some(goodbye::LINGER)
        } else {
            goodbye::linger(reason, self.client.front().limits.shutdown_grace)
        }
    }

    /// Writes what is still due and closes the socket, each within [`CLOSING_WRITE`]. A client
    /// told why it must go may still be sending: its socket is drained for up to `linger`
    /// first (see [`goodbye`]). Closing it with unread data would reset the
    /// connection, and the reset throws away what the client has not read yet: the DISCONNECT
    /// that says why, and the last answers.
    async fn say_goodbye(&mut self, linger: Option<Duration>) {
        if !self.wbuf.is_empty() {
            let write = self.stream.write_all(&self.wbuf);
            if !matches!(tokio::time::timeout(CLOSING_WRITE, write).await, Ok(Ok(()))) {
                return;
            }
        }
        match linger {
            Some(linger) => self.stream.close_gracefully(linger).await,
            None => {
                let _ = tokio::time::timeout(CLOSING_WRITE, self.stream.shutdown()).await;
            }
        }
    }

    /// Stores the cursor where the client left it and waits for the session's last write, so
    /// the state handed back is the newest.
    async fn finish(&mut self) {
        // Publishes still being stored are taken once they are: the client, which had no
        // answer, sends them again, and is answered then without their being taken twice.
        let deadline = Instant::now() + FINISHING;
        while let Ok(Some((answer, result))) =
            tokio::time::timeout_at(deadline, self.answers.next()).await
        {
            (self.inbound).answered(answer.qos, answer.pkid, result.is_ok(), answer.fingerprint);
        }
        let starting = self.follower.as_ref().is_some_and(|f| f.floor().is_none());
        if let (true, Some(reading)) = (starting && self.expiry > 0, self.reading.take()) {
            // A kept session must know where it began to follow the log, or it would start
            // from the device's cursor, which may be far older, when it comes back.
            if let Ok(readout) = tokio::time::timeout(FINISHING, reading).await {
                self.take_readout(readout);
            }
        }
        self.cursor_write.finished().await;
        if let Some(write) = self.store_cursor() {
            write.await;
        }
        self.session_write.finished().await;
    }

    /// How the connection ended, for the handshake.
    fn ending(self, moved: bool, outbox: Outbox) -> Ending {
        // A deleted account keeps no session and sends no will: both would write into what was
        // deleted.
        let deleted = self.client.end_reason() == DisconnectReason::AccountDeleted;
        Ending {
            state: (self.expiry > 0 && !deleted).then(|| self.state(true)),
            moved,
            with_will: self.with_will && !deleted,
            expiry: self.expiry,
            client: self.client,
            claim: self.claim,
            outbox,
        }
    }

    /// The session as it stands; `in_flight` adds what is in flight both ways, which only the
    /// state handed back at the end carries: kept on every change, it would be stale at the
    /// next, and after a crash a stale copy would send again what the client completed.
    fn state(&self, in_flight: bool) -> SessionState {
        let mut state = SessionState {
            expiry_secs: self.expiry,
            subscriptions: self.client.subscriptions(),
            awaiting_release: Vec::new(),
            answered: Vec::new(),
            unacknowledged: Vec::new(),
            log_from: self.follower.as_ref().and_then(LogFollower::floor),
            log_epoch: self
                .follower
                .as_ref()
                .and_then(|f| f.epoch().map(str::to_string)),
        };
        if !in_flight {
            return state;
        }
        state.awaiting_release = self.inbound.awaiting_release();
        state.answered = self.inbound.recently_answered();
        state.unacknowledged = self.outbound.keep();
        state.unacknowledged.extend(
            (self.backlog.iter())
                .filter(|d| d.qos != Qos::AtMostOnce && d.message.seq.is_none())
                .map(|d| crate::live::sessions::KeptDelivery {
                    pkid: 0,
                    qos: d.qos.level(),
                    released: false,
                    message: d.message.keep(None),
                    retain: d.retain,
                    subscription_ids: d.subscription_ids.as_slice().to_vec(),
                }),
        );
        state
    }

    /// Starts what runs beside the loop when it is due: the next read of the user's log once
    /// what the last one gave went out, storing the device's cursor, keeping the session.
    fn start_background_work(&mut self) {
        let front = self.client.front().clone();
        if self.reading.is_none() && self.backlog.is_empty() {
            let user_device = match self.client.identity() {
                Identity::Device { user, device, .. } => Some((user.clone(), device.clone())),
                _ => None,
            };
            if let (Some(follower), Some((user, device))) = (&mut self.follower, user_device) {
                if let Some(read) = follower.next_read() {
                    self.reading = Some(Box::pin(log_follower::perform(
                        front.store.clone(),
                        user,
                        device,
                        read,
                        front.roaming.page_size,
                        front.roaming.new_device_history as u64,
                    )));
                }
            }
        }
        if !self.cursor_write.busy() {
            if let Some(write) = self.store_cursor() {
                self.cursor_write.start(&front.shutdown, write);
            }
        }
        let persistent = self.expiry > 0;
        // A session that began to follow the log is kept once it knows where it began.
        let starting = self.follower_is_starting();
        if persistent && self.session_changed && !starting && !self.session_write.busy() {
            self.session_changed = false;
            self.claim.stored = true;
            let (sessions, key, state) = (
                front.sessions.clone(),
                self.claim.key.clone(),
                self.state(false),
            );
            self.session_write.start(&front.shutdown, async move {
                if let Err(e) = sessions.keep(&key, &state).await {
                    tracing::warn!("a session change is kept in memory only: {e}");
                }
            });
        }
    }

    /// The write of the device's cursor, when acknowledgements moved it.
    fn store_cursor(&mut self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let seq = self.follower.as_mut()?.cursor_to_store()?;
        let Identity::Device { user, device, .. } = self.client.identity() else {
            return None;
        };
        let (store, user, device) = (
            self.client.front().store.clone(),
            user.clone(),
            device.clone(),
        );
        Some(async move {
            if let Err(e) = store.ack(&user, &device, seq).await {
                tracing::warn!(%user, %device, "the device's cursor was not moved: {e}");
            }
        })
    }

    /// Counts and logs an answer that was not `sent` (larger than the client takes, MQTT 5):
    /// the client waits for it in vain, which the operator should learn of.
    fn report_unsent(&self, packet: &str, sent: bool) {
        if !sent {
            let front = self.client.front();
            front.metrics.answers_too_large_for_client.inc();
            tracing::warn!(
                link = self.client.link.id,
                "{packet} not sent: larger than the client's Maximum Packet Size"
            );
        }
    }

    fn follower_is_starting(&self) -> bool {
        self.follower.as_ref().is_some_and(|f| f.is_starting())
    }

    fn take_readout(&mut self, readout: Readout) {
        let Some(follower) = &mut self.follower else {
            return;
        };
        let started = matches!(readout, Readout::Started { .. });
        let (deliveries, reset) = follower.take(readout);
        self.backlog.extend(deliveries);
        if started {
            // Where the session began to follow the log is part of it.
            self.session_changed = true;
        }
        if let (Some(reset), Identity::Device { user, device, .. }) =
            (reset, self.client.identity())
        {
            // A client that knows nothing of sync learns it on its reply topic.
            let reply = follower.reset_reply(reset);
            (self.client.front().registry).reply(user, device, &reply);
        }
    }

    /// Writes what waits in the backlog while the client takes more.
    fn write_backlog(&mut self) {
        while let Some(next) = self.backlog.front() {
            if !self.outbound.takes(next) || self.wbuf.len() >= WRITE_BATCH {
                break;
            }
            let delivery = self.backlog.pop_front().expect("looked at it");
            self.write(delivery);
        }
    }

    /// A delivery from the outbox: entries of the log the follower already gave, or reads from
    /// the store, are left out.
    fn deliver(&mut self, delivery: Delivery) {
        if self.follower.as_mut().is_none_or(|f| f.admit(&delivery)) {
            self.write(delivery);
        }
    }

    fn write(&mut self, delivery: Delivery) {
        let (seq, qos) = (delivery.message.seq, delivery.qos);
        let written = self.outbound.write(delivery, &mut self.wbuf);
        if let (Some(seq), Some(follower)) = (seq, &mut self.follower) {
            match written {
                Written::Sent => follower.sent(seq, qos),
                // A skipped entry is as good as delivered: the cursor passes it.
                Written::Skipped => follower.sent(seq, Qos::AtMostOnce),
            }
        }
    }

    /// Drops buffers grown by a burst, so an idle connection holds little memory.
    fn recycle_buffers(&mut self) {
        if self.wbuf.capacity() > WRITE_BATCH * 2 {
            self.wbuf = BytesMut::new();
        } else {
            self.wbuf.clear();
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > 2 * READ_CHUNK {
            self.rbuf = BytesMut::new();
        }
    }

    fn handle_input(&mut self) -> Flow {
        // Packets past the Receive Maximum wait in the buffer until answers go out.
        while !self.inbound.is_full() {
            match self.codec.read(&mut self.rbuf) {
                Ok(None) => return Flow::Continue,
                Ok(Some(packet)) => {
                    if let flow @ Flow::End { .. } = self.handle_packet(packet) {
                        return flow;
                    }
                }
                Err(DecodeError::TooLarge { size, max }) => {
                    tracing::debug!(link = self.client.link.id, size, max, "packet too large");
                    return Flow::violation((
                        DisconnectCode::PacketTooLarge,
                        "packet exceeds the maximum packet size",
                    ));
                }
                Err(e) => {
                    tracing::debug!(link = self.client.link.id, "protocol error: {e}");
                    return Flow::violation((DisconnectCode::ProtocolError, "malformed packet"));
                }
            }
        }
        Flow::Continue
    }

    fn handle_packet(&mut self, packet: Inbound) -> Flow {
        match packet {
            Inbound::Publish(mut publish) => {
                if publish.has_subscription_ids {
                    return Flow::violation((
                        DisconnectCode::ProtocolError,
                        "a client may not send subscription identifiers",
                    ));
                }
                if let Err(violation) = self.inbound.resolve_topic(&mut publish) {
                    return Flow::violation(violation);
                }
                let (pkid, qos) = (publish.pkid, publish.qos);
                // Only a kept session can see a publish again after a reconnect.
                let fingerprint = match qos {
                    1 if self.expiry > 0 => inbound::fingerprint(&publish.topic, &publish.payload),
                    _ => inbound::NOT_REMEMBERED,
                };
                match self.inbound.admit(qos, pkid, publish.dup, fingerprint) {
                    Err(violation) => return Flow::violation(violation),
                    Ok(Admission::Repeat) if qos == 1 => {
                        self.codec.puback(pkid, AckCode::Success, &mut self.wbuf);
                        return Flow::Continue;
                    }
                    Ok(Admission::Repeat) => {
                        self.codec.pubrec(pkid, AckCode::Success, &mut self.wbuf);
                        return Flow::Continue;
                    }
                    Ok(Admission::Pending) => return Flow::Continue,
                    Ok(Admission::InUse) => {
                        self.codec
                            .puback(pkid, AckCode::PacketIdInUse, &mut self.wbuf);
                        return Flow::Continue;
                    }
                    Ok(Admission::New) => {}
                }
                let topic = publish.topic.clone();
                let handled = self.client.publish(Publication {
                    topic: publish.topic,
                    payload: publish.payload,
                    qos: Qos::from_level(qos).unwrap_or(Qos::ExactlyOnce),
                    retain: publish.retain,
                    properties: publish.properties,
                    expiry: publish.expiry,
                });
                let answer = Answer {
                    pkid,
                    qos,
                    topic,
                    fingerprint,
                };
                match handled {
                    // Answers go out in the order the publishes came (MQTT 4.6), so an immediate
                    // result waits behind earlier ones still being stored.
                    Handled::Done(result) if self.answers.is_empty() => {
                        return self.answer(answer, result)
                    }
                    Handled::Done(result) => self
                        .answers
                        .push_back(Box::pin(std::future::ready((answer, result)))),
                    Handled::Later(work) if qos == 0 => {
                        // Nobody waits for the answer, but the work must still run.
                        self.client.finish_later(work);
                    }
                    Handled::Later(work) => self
                        .answers
                        .push_back(Box::pin(async move { (answer, work.await) })),
                }
            }
            Inbound::PubAck(pkid) => {
                let received = self.outbound.acknowledged(pkid);
                self.received(received);
            }
            Inbound::PubRec(pkid) => {
                let received = self.outbound.received(pkid, false, &mut self.wbuf);
                self.received(received);
            }
            Inbound::PubComp(pkid) => self.outbound.completed(pkid),
            Inbound::PubRel(pkid) => {
                let known = self.inbound.released(pkid);
                self.codec.pubcomp(pkid, known, &mut self.wbuf);
            }
            Inbound::Subscribe { pkid, filters, id } => {
                let results: Vec<_> = filters
                    .iter()
                    .map(|filter| self.subscribe(&subscribe_request(filter, id), Start::Now))
                    .map(|result| result.map_err(subscribe_refusal))
                    .collect();
                // Held behind earlier held ones too, so SUBACKs keep their order.
                let out = match self.follower_is_starting() || !self.held_subacks.is_empty() {
                    true => &mut self.held_subacks,
                    false => &mut self.wbuf,
                };
                let sent = self.codec.suback(pkid, &results, out);
                self.report_unsent("SUBACK", sent);
                self.session_changed = true;
            }
            Inbound::Unsubscribe { pkid, filters } => {
                let existed: Vec<bool> = filters.iter().map(|f| self.unsubscribe(f)).collect();
                let sent = self.codec.unsuback(pkid, &existed, &mut self.wbuf);
                self.report_unsent("UNSUBACK", sent);
                self.session_changed = true;
            }
            Inbound::PingReq => self.codec.pingresp(&mut self.wbuf),
            Inbound::Disconnect {
                with_will,
                session_expiry,
            } => {
                if let Some(expiry) = session_expiry {
                    if self.expiry == 0 && expiry > 0 {
                        // MQTT 5 3.14.2.2.2: a session that was to end cannot be kept now.
                        return Flow::violation((
                            DisconnectCode::ProtocolError,
                            "session expiry set at DISCONNECT after 0 at CONNECT",
                        ));
                    }
                    self.expiry = expiry.min(self.client.front().sessions.max_expiry_secs());
                }
                self.with_will = with_will;
                let reason = match with_will {
                    true => DisconnectReason::SocketClosed,
                    false => DisconnectReason::ClientDisconnect,
                };
                return Flow::End {
                    reason,
                    notice: None,
                };
            }
            Inbound::Unexpected(what) => {
                tracing::debug!(link = self.client.link.id, "protocol error: {what}");
                return Flow::violation((DisconnectCode::ProtocolError, what));
            }
        }
        Flow::Continue
    }

    /// The client holds an entry of its log now: the cursor may move past it.
    fn received(&mut self, entry: Option<u64>) {
        if let (Some(seq), Some(follower)) = (entry, &mut self.follower) {
            follower.acknowledged(seq);
        }
    }

    /// Subscribes; a subscription to the user's inbox or notifications follows the log from
    /// `start`.
    fn subscribe(&mut self, request: &SubscribeRequest<'_>, start: Start) -> Result<Qos, Refusal> {
        let subscribed = self.client.subscribe(request)?;
        self.backlog.extend(subscribed.retained);
        if let (Some(kind), Some(follower)) = (subscribed.logged, &mut self.follower) {
            self.client.link.follow_log();
            follower.subscribed(kind, request.options, start);
        }
        Ok(subscribed.granted)
    }

    fn unsubscribe(&mut self, filter: &str) -> bool {
        let Some(existed) = self.client.unsubscribe(filter) else {
            return false;
        };
        if let Some(follower) = &mut self.follower {
            if let (None, Some(kind)) = (&existed.share, follower.kind_of(&existed.filter)) {
                follower.unsubscribed(kind);
            }
        }
        true
    }

    /// Answers `first` and the answers ready behind it, so that the publishes one commit
    /// stored go out answered in one write, not a send (and a wake-up of the client) each.
    async fn answer_ready(&mut self, first: (Answer, Result<(), Refusal>)) -> Flow {
        let mut next = Some(first);
        while let Some((answer, result)) = next {
            let flow = self.answer(answer, result);
            if matches!(flow, Flow::End { .. }) {
                return flow;
            }
            next = if self.wbuf.len() < WRITE_BATCH {
                ready_now(&mut self.answers).await
            } else {
                None
            };
        }
        Flow::Continue
    }

    /// Answers a publish once it was handled: PUBACK or PUBREC (with the reason for v5), and a
    /// reply on the device's reply topic for a refused device request. A 3.1.1 client cannot be
    /// told that the store is unavailable, so it is disconnected without the answer and sends
    /// the message again after reconnecting.
    fn answer(&mut self, answer: Answer, result: Result<(), Refusal>) -> Flow {
        if let Err(refusal) = &result {
            self.client.reply_refusal(&answer.topic, refusal);
            if matches!(refusal, Refusal::StoreUnavailable(_))
                && self.codec.version == Version::V311
                && answer.qos > 0
            {
                return Flow::End {
                    reason: DisconnectReason::StoreUnavailable,
                    notice: None,
                };
            }
        }
        // A 3.1.1 client cannot be told a QoS 2 publish was refused: it releases it as usual.
        let taken = result.is_ok() || self.codec.version == Version::V311;
        self.inbound
            .answered(answer.qos, answer.pkid, taken, answer.fingerprint);
        let code = ack_code(&result);
        match answer.qos {
            0 => {}
            1 => self.codec.puback(answer.pkid, code, &mut self.wbuf),
            _ => self.codec.pubrec(answer.pkid, code, &mut self.wbuf),
        }
        Flow::Continue
    }
}

/// The next item of `stream` if it is ready now; `None` if it is not (or the stream is done).
/// Polled with the task's own waker, so an item that becomes ready later wakes the task.
async fn ready_now<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| match stream.poll_next_unpin(cx) {
        Poll::Ready(item) => Poll::Ready(item),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

fn subscribe_request(filter: &FilterRequest, id: Option<u32>) -> SubscribeRequest<'_> {
    SubscribeRequest {
        filter: &filter.filter,
        options: SubscriptionOptions {
            qos: filter.qos,
            no_local: filter.no_local,
            retain_as_published: filter.retain_as_published,
            id,
        },
        retain_handling: match filter.retain_handling {
            0 => RetainHandling::Send,
            1 => RetainHandling::SendIfNew,
            _ => RetainHandling::DoNotSend,
        },
    }
}

fn subscribe_refusal(refusal: Refusal) -> SubscribeRefusal {
    match refusal {
        Refusal::InvalidTopic => SubscribeRefusal::FilterInvalid,
        Refusal::TooManySubscriptions => SubscribeRefusal::QuotaExceeded,
        Refusal::Withheld => SubscribeRefusal::Unspecified,
        _ => SubscribeRefusal::NotAuthorized,
    }
}

fn ack_code(result: &Result<(), Refusal>) -> AckCode {
    match result {
        Ok(()) => AckCode::Success,
        Err(Refusal::Forbidden | Refusal::ApprovalPending) => AckCode::NotAuthorized,
        Err(Refusal::InvalidTopic) => AckCode::TopicNameInvalid,
        Err(Refusal::BadPayload(_)) => AckCode::PayloadFormatInvalid,
        // MQTT 5 has "Message rate too high" (0x96) for DISCONNECT only; a PUBACK or PUBREC
        // says a limit was met with "Quota exceeded", and the reply topic says which.
        Err(Refusal::QuotaExceeded(_) | Refusal::RateLimited { .. } | Refusal::SyncInFlight) => {
            AckCode::QuotaExceeded
        }
        Err(Refusal::Withheld) => AckCode::Unspecified,
        Err(Refusal::TooManySubscriptions | Refusal::StoreUnavailable(_)) => AckCode::Unavailable,
    }
}
