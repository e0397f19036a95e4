/**
 * The gateway client: one device of one user on the gateway's JSON WebSocket (`/ws`).
 *
 * It keeps a connection up for as long as the app wants one, and on every (re)connect resumes
 * where it was: subscribes to the user's topics, syncs the user's log from the last sequence it
 * holds, and only then lets live entries through, so the app sees every message once and in
 * order across restarts of the gateway, network drops and page reloads (with a lasting
 * {@link CursorStore}).
 */

import { AckBatcher, type AckOptions } from "./ack-batcher.js";
import { Backoff, type BackoffOptions } from "./backoff.js";
import { isValidClientMsgId, newClientMsgId } from "./client-msg-id.js";
import { Connection, ConnectionFailed, type ConnectionEnd } from "./connection.js";
import type { CursorStore, LogPosition } from "./cursor-store.js";
import { Emitter } from "./emitter.js";
import type {
  InboxMessage,
  Notification,
  NotificationEntry,
  PresenceEvent,
  QuietHours,
  Reply,
  SignalMessage,
  SyncPage,
} from "./envelopes.js";
import { ClientError, GatewayError } from "./errors.js";
import { CloseCode, type MsgFrame } from "./frames.js";
import { Outbox } from "./outbox.js";
import { PositionSaver } from "./position-saver.js";
import { TokenKeeper, type TokenSource } from "./token-source.js";
import { topics } from "./topics.js";
import { UserLog, type EntryKind, type ResetEvent } from "./user-log.js";
import { globalWebSocket, type WebSocketConstructor } from "./web-socket.js";

export interface GatewayClientOptions {
  /** The gateway's JSON WebSocket, e.g. `wss://chat.example.com/ws`. */
  url: string;
  /** A device token, or a callback giving one (called again when it expires or is refused). */
  token: TokenSource;
  /** The WebSocket implementation; defaults to the global `WebSocket` (browsers, Node ≥ 22). */
  WebSocket?: WebSocketConstructor;
  /** Where the place in the user's log is kept between connections; memory when absent. */
  cursorStore?: CursorStore;
  /** Reconnect delays: exponential with full jitter between these bounds. */
  reconnect?: BackoffOptions;
  /** How acks are batched. */
  ack?: AckOptions;
  /** How long an answer (the `auth`, a send, a sync page) may take before the connection counts as stuck, ms (default 15,000). */
  requestTimeoutMs?: number;
  /** How long a connection may stay silent before the client checks it with a ping, ms (default 20,000). */
  heartbeatIntervalMs?: number;
}

export type ConnectionState = "idle" | "connecting" | "connected" | "syncing" | "live" | "disconnected";

/** Why the client is disconnected. */
export type DisconnectKind =
  /** Logged out by the gateway (kicked by the device policy or the backend, taken over by a newer connection of this device, account deleted): `message` is text to show. No reconnect. */
  | "logged_out"
  /** The gateway refused the token and no other could be had. No reconnect. */
  | "unauthorized"
  /** Another device of the user denied this login, or nobody approved it in time. No reconnect. */
  | "approval_denied"
  /** The gateway is shutting down; the client reconnects. */
  | "server_shutdown"
  /** The socket broke, could not be opened, or the gateway asked to try later; the client reconnects. */
  | "network"
  /** The app called `close()`. */
  | "closed";

export interface DisconnectReason {
  kind: DisconnectKind;
  message: string;
  /** The WebSocket close code, when the socket was closed with one. */
  code?: number;
}

export type StateChange =
  | { state: Exclude<ConnectionState, "disconnected"> }
  | { state: "disconnected"; reason: DisconnectReason; willReconnect: boolean; retryInMs?: number };

export type ApprovalStatus = "pending" | "approved" | "denied";

export interface GatewayClientEvents {
  state: StateChange;
  /** A message of the user's log, live or from a sync: each once, in `seq` order. */
  message: InboxMessage;
  /** An in-app notification of the user's log, live or from a sync: each once, in `seq` order. */
  notification: { entry: NotificationEntry; notification: Notification };
  /** History the client held is gone (retention trimmed it, or the log was recreated). */
  reset: ResetEvent;
  /** A live signal (typing, a game move): never stored, never synced. */
  signal: SignalMessage;
  /** The user's own devices: online, offline, kicked, approval requests and their outcome. */
  presence: PresenceEvent;
  /** This device's own login approval, when `sessions.new_device_approval` holds it. */
  approval: ApprovalStatus;
  /** A message on a topic the app subscribed to with {@link GatewayClient.subscribe} (`pub/…`). */
  publication: { topic: string; payload: unknown; payloadBase64?: string };
  /** A failure tied to no call of the app's (a sync that failed, a store that could not save). */
  error: Error;
}

export interface SendOptions {
  /** The app's own id for the message (1–128 visible ASCII characters); a UUID is made when absent. */
  clientMsgId?: string;
}

export interface SentMessage {
  clientMsgId: string;
}

const DEFAULT_REQUEST_TIMEOUT_MS = 15_000;
const DEFAULT_HEARTBEAT_INTERVAL_MS = 20_000;
/** How long a refused or failed sync waits before it is asked again, when the gateway says nothing. */
const SYNC_RETRY_MS = 500;

export class GatewayClient extends Emitter<GatewayClientEvents> {
  private currentState: ConnectionState = "idle";
  private readonly tokens: TokenKeeper;
  private readonly WebSocket: WebSocketConstructor;
  private readonly outbox = new Outbox();
  private readonly acks: AckBatcher;
  private readonly saver: PositionSaver;
  private readonly publicTopics = new Set<string>();
  private connection: Connection | undefined;
  private log: UserLog | undefined;
  /** Bumped by `connect()` and `close()`: a run whose number is old stops at its next step. */
  private run = 0;
  private wakeFromSleep: (() => void) | undefined;
  private sync: { done: () => void; fail: (error: Error) => void; touch: () => void } | undefined;
  private approval: { pending: boolean; approved: (() => void) | undefined } = { pending: false, approved: undefined };
  /** Set by `close()` until the next `connect()`: sends are refused rather than queued for ever. */
  private closedByApp = false;

  constructor(private readonly options: GatewayClientOptions) {
    super();
    this.tokens = new TokenKeeper(options.token);
    const WebSocket = options.WebSocket ?? globalWebSocket();
    if (!WebSocket) {
      throw new TypeError("no global WebSocket on this platform: pass one as the `WebSocket` option (e.g. from the `ws` package)");
    }
    this.WebSocket = WebSocket;
    this.acks = new AckBatcher(options.ack);
    this.saver = new PositionSaver(options.cursorStore, (error) => this.emit("error", asError(error)));
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** The user and device of the current (or last) connection. */
  get user(): string | undefined {
    return this.connection?.user ?? this.log?.user;
  }

  get device(): string | undefined {
    return this.connection?.device;
  }

  /** The place in the user's log: its epoch and the highest sequence the app was given. */
  get position(): LogPosition | undefined {
    return this.log?.position;
  }

  /** Entries dropped because the app had them already (live and sync overlapping). */
  get duplicatesDropped(): number {
    return this.log?.duplicatesDropped ?? 0;
  }

  /** Starts connecting, and keeps reconnecting until `close()` or a logout. */
  connect(): void {
    if (this.currentState !== "idle" && this.currentState !== "disconnected") return;
    if (this.currentState === "disconnected") this.tokens.restart();
    const run = ++this.run;
    this.closedByApp = false;
    this.wakeFromSleep?.();
    void this.keepConnected(run);
  }

  /** Closes the connection and stops reconnecting; sends still waiting fail with `closed`. */
  async close(): Promise<void> {
    this.run += 1;
    this.closedByApp = true;
    this.wakeFromSleep?.();
    this.acks.flush();
    this.acks.stop();
    this.connection?.close(1000, "client closed");
    this.outbox.failAll(new ClientError("closed", "the client was closed"));
    if (this.currentState !== "disconnected" && this.currentState !== "idle") {
      this.setState({ state: "disconnected", reason: { kind: "closed", message: "closed by the app" }, willReconnect: false });
    }
    await this.saver.settled();
  }

  /**
   * Sends a message to user `to`; resolves once the gateway has stored it. Made while
   * disconnected, or cut off by a disconnect, it is sent (again) on the next connection with the
   * same client message id, so it is stored once. Rejects with the gateway's {@link GatewayError}
   * (e.g. `invalid_request`, `rate_limited` with `retryAfterMs`).
   */
  async send(to: string, body: unknown, options: SendOptions = {}): Promise<SentMessage> {
    const clientMsgId = options.clientMsgId ?? newClientMsgId();
    if (!isValidClientMsgId(clientMsgId)) {
      throw new TypeError("a client message id is 1-128 visible ASCII characters, without spaces");
    }
    if (this.closedByApp) throw new ClientError("closed", "the client was closed");
    await this.outbox.add({ to, body, client_msg_id: clientMsgId });
    return { clientMsgId };
  }

  /** Relays a live signal to user `to`'s devices online now; never stored, so never queued either. */
  async signal(to: string, body: unknown): Promise<void> {
    await this.deviceRequest("signal", { to, body });
  }

  /** Approves or denies the login of another device of the user that waits for approval. */
  async approveDevice(device: string, approve: boolean): Promise<void> {
    await this.deviceRequest("approve", { device, approve });
  }

  /** Sets the user's quiet hours (pushes inside them are held or dropped by the gateway). */
  async setQuietHours(hours: QuietHours): Promise<void> {
    await this.deviceRequest("quiet-hours", hours);
  }

  /**
   * Subscribes to a public topic or filter under `pub/`; kept across reconnects. One the gateway
   * refuses is not kept: asked again on every reconnect, it would be refused every time.
   */
  async subscribe(topic: string): Promise<void> {
    if (this.connection?.isOpen) await this.connection.request({ op: "sub", topic });
    this.publicTopics.add(topic);
  }

  async unsubscribe(topic: string): Promise<void> {
    this.publicTopics.delete(topic);
    if (this.connection?.isOpen) await this.connection.request({ op: "unsub", topic });
  }

  private async deviceRequest(action: "signal" | "approve" | "quiet-hours", payload: unknown): Promise<void> {
    const connection = this.connection;
    if (!connection?.isOpen) throw new ClientError("not_connected", `${action} needs a connection`);
    await connection.request({ op: "pub", topic: topics.request(connection.user, connection.device, action), payload });
  }

  private isCurrent(run: number): boolean {
    return run === this.run;
  }

  private setState(change: StateChange): void {
    this.currentState = change.state;
    this.emit("state", change);
  }

  /** Connects, and after every end decides whether and when to try again. */
  private async keepConnected(run: number): Promise<void> {
    const backoff = new Backoff(this.options.reconnect);
    let refusedInARow = 0;
    while (this.isCurrent(run)) {
      const outcome = await this.session(run);
      if (!this.isCurrent(run)) return;
      if (outcome.reachedLive) backoff.reset();
      refusedInARow = outcome.reason.kind === "unauthorized" ? refusedInARow + 1 : 0;
      const refusedForGood =
        outcome.reason.kind === "unauthorized" && (!this.tokens.canRefresh || refusedInARow > 1);
      const final = ["logged_out", "approval_denied"].includes(outcome.reason.kind) || refusedForGood;
      if (final) {
        this.run += 1;
        this.setState({ state: "disconnected", reason: outcome.reason, willReconnect: false });
        return;
      }
      // A refused token is replaced at once: waiting would not make the old one good.
      const delay = outcome.reason.kind === "unauthorized" ? 0 : backoff.next();
      this.setState({ state: "disconnected", reason: outcome.reason, willReconnect: true, retryInMs: delay });
      await this.sleep(delay);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wakeFromSleep = done;
    });
  }

  /** One connection, from opening to its end. */
  private async session(run: number): Promise<{ reason: DisconnectReason; reachedLive: boolean }> {
    this.setState({ state: "connecting" });
    let connection: Connection;
    try {
      connection = await Connection.open({
        url: this.options.url,
        WebSocket: this.WebSocket,
        token: await this.tokens.current(),
        requestTimeoutMs: this.options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
        heartbeatIntervalMs: this.options.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS,
        onMessage: (frame) => this.onMessage(frame),
        onStrayError: (error) => this.emit("error", error),
      });
    } catch (error) {
      return { reason: this.openingFailed(error), reachedLive: false };
    }
    if (!this.isCurrent(run)) {
      connection.close(1000, "client closed");
      return { reason: { kind: "closed", message: "closed by the app" }, reachedLive: false };
    }
    this.connection = connection;
    this.approval = { pending: false, approved: undefined };
    const log = this.logOf(connection.user);
    log.hold();
    this.setState({ state: "connected" });
    let reachedLive = false;
    const resumed = this.resume(connection, log).then(
      () => {
        if (!connection.isOpen || !this.isCurrent(run)) return;
        reachedLive = true;
        this.setState({ state: "live" });
      },
      (error: unknown) => {
        if (!connection.isOpen) return;
        this.emit("error", asError(error));
        connection.close(4000, "resuming failed");
      },
    );
    const end = await connection.ended;
    // Whatever the resume waits for will not come on this connection any more.
    this.sync?.fail(new ClientError("disconnected", "the connection ended during a sync"));
    this.approval.approved?.();
    await resumed;
    this.acks.connect(undefined);
    this.outbox.connect(undefined);
    if (this.connection === connection) this.connection = undefined;
    return { reason: this.endedBecause(end), reachedLive };
  }

  /**
   * Subscribes, then syncs from the place held, then lets live entries through. Subscribing
   * first means nothing appended after the subscription's answer is missed; the sync covers
   * everything before.
   */
  private async resume(connection: Connection, log: UserLog): Promise<void> {
    const { user, device } = connection;
    await connection.request({ op: "sub", topic: topics.reply(user, device) });
    const userTopics = [topics.inbox(user), topics.notify(user), topics.presence(user), topics.signal(user)];
    await Promise.all([
      ...userTopics.map((topic) => connection.request({ op: "sub", topic })),
      ...[...this.publicTopics].map((topic) => this.resubscribe(connection, topic)),
    ]);
    this.outbox.connect((request) =>
      connection.request({ op: "pub", topic: topics.request(user, device, "send"), payload: request }),
    );
    await log.load(this.options.cursorStore);
    await this.catchUp(connection, log);
  }

  /**
   * Subscribes again to a public topic the app asked for, perhaps while disconnected: one the
   * gateway refuses is dropped and reported, rather than failing every connection.
   */
  private async resubscribe(connection: Connection, topic: string): Promise<void> {
    try {
      await connection.request({ op: "sub", topic });
    } catch (error) {
      if (!(error instanceof GatewayError)) throw error;
      this.publicTopics.delete(topic);
      this.emit("error", error);
    }
  }

  /** Syncs until the last page (`more: false`), then releases what came live meanwhile and acks. */
  private async catchUp(connection: Connection, log: UserLog): Promise<void> {
    if (this.approval.pending) {
      // A login waiting for approval gets none of the user's traffic: sync once let in.
      await new Promise<void>((resolve) => (this.approval.approved = resolve));
      if (!connection.isOpen) return;
    }
    this.setState({ state: "syncing" });
    for (;;) {
      if (!connection.isOpen) return;
      try {
        await this.syncOnce(connection, log.position);
        break;
      } catch (error) {
        if (!(error instanceof GatewayError)) throw error;
        // `busy`, `rate_limited`, or a sync the store could not answer: ask again.
        this.emit("error", error);
        await this.sleep(error.retryAfterMs ?? SYNC_RETRY_MS);
      }
    }
    log.release();
    this.acks.connect((seq) => connection.request({ op: "ack", seq }));
    this.acks.flush();
  }

  private syncOnce(connection: Connection, position: LogPosition | undefined): Promise<void> {
    const timeoutMs = this.options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    return new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const touch = () => {
        clearTimeout(timer);
        timer = setTimeout(() => connection.close(4000, "no sync page in time"), timeoutMs);
      };
      const finish = (then: () => void) => {
        clearTimeout(timer);
        this.sync = undefined;
        then();
      };
      this.sync = { done: () => finish(resolve), fail: (error) => finish(() => reject(error)), touch };
      touch();
      const request = position ? { op: "sync" as const, after: position.seq, epoch: position.epoch } : { op: "sync" as const };
      connection.request(request).catch((error: unknown) => this.sync?.fail(asError(error)));
    });
  }

  private logOf(user: string): UserLog {
    if (this.log?.user === user) return this.log;
    this.log = new UserLog(user, {
      deliver: (entry, kind) => this.deliver(entry, kind),
      reset: (event) => {
        if (event.reason === "epoch_changed") this.acks.restart(event.availableFrom - 1);
        this.emit("reset", event);
      },
      advanced: (position, seq) => {
        if (position) this.saver.save(user, position);
        this.acks.held(seq);
      },
    });
    return this.log;
  }

  private deliver(entry: InboxMessage, kind: EntryKind): void {
    if (kind === "notification") {
      const notificationEntry = entry as NotificationEntry;
      this.emit("notification", { entry: notificationEntry, notification: notificationEntry.body.notification });
    } else {
      this.emit("message", entry);
    }
  }

  private onMessage(frame: MsgFrame): void {
    const connection = this.connection;
    const user = connection?.user;
    if (!connection || user === undefined) return;
    const payload = frame.payload;
    switch (frame.topic) {
      case topics.inbox(user):
        this.log?.live(payload as InboxMessage, "message");
        return;
      case topics.notify(user):
        this.log?.live(payload as InboxMessage, "notification");
        return;
      case topics.reply(user, connection.device):
        this.onReply(payload as Reply);
        return;
      case topics.presence(user):
        this.emit("presence", payload as PresenceEvent);
        return;
      case topics.signal(user):
        this.emit("signal", payload as SignalMessage);
        return;
      default: {
        const publication: GatewayClientEvents["publication"] = { topic: frame.topic, payload };
        if (frame.payload_base64 !== undefined) publication.payloadBase64 = frame.payload_base64;
        this.emit("publication", publication);
      }
    }
  }

  private onReply(reply: Reply): void {
    switch (reply.type) {
      case "sync":
        this.onPage(reply);
        return;
      case "error": {
        const error = new GatewayError(reply.code, reply.message, reply.retry_after_ms, reply.action);
        if (reply.action === "sync" && this.sync) this.sync.fail(error);
        else this.emit("error", error);
        return;
      }
      case "approval_pending":
        this.approval.pending = true;
        this.emit("approval", "pending");
        return;
      case "approved":
        this.onApproved();
        return;
      case "denied":
        this.emit("approval", "denied");
        return;
      case "ok":
        return;
    }
  }

  private onPage(page: SyncPage): void {
    this.sync?.touch();
    this.log?.page(page);
    if (!page.more) this.sync?.done();
  }

  /**
   * Let in: what the user's log got while this login waited never reached it live, so the
   * client syncs again (or for the first time) before going live.
   */
  private onApproved(): void {
    this.emit("approval", "approved");
    const wasPending = this.approval.pending;
    this.approval.pending = false;
    const waiting = this.approval.approved;
    this.approval.approved = undefined;
    if (waiting) {
      waiting();
      return;
    }
    const connection = this.connection;
    const log = this.log;
    if (wasPending && connection && log && this.currentState === "live") {
      log.hold();
      this.catchUp(connection, log).then(
        () => connection.isOpen && this.setState({ state: "live" }),
        (error: unknown) => this.emit("error", asError(error)),
      );
    }
  }

  private openingFailed(error: unknown): DisconnectReason {
    if (error instanceof ConnectionFailed) {
      if (error.refusal?.code === "unauthorized") {
        this.tokens.refused(error.refusal.message);
        return { kind: "unauthorized", message: error.refusal.message, code: error.end.code };
      }
      return this.endedBecause(error.end, error.refusal?.message);
    }
    // The token provider threw: tried again after a delay, like a network failure.
    return { kind: "network", message: `no token: ${asError(error).message}` };
  }

  private endedBecause(end: ConnectionEnd, message?: string): DisconnectReason {
    const reason = message ?? end.reason;
    if (end.byClient && end.code === 1000) return { kind: "closed", message: reason, code: end.code };
    switch (end.code) {
      case CloseCode.LoggedOut:
        return { kind: "logged_out", message: reason, code: end.code };
      case CloseCode.Unauthorized:
        // Once authenticated, a 4003 is the login denied or not approved in time.
        return { kind: "approval_denied", message: reason, code: end.code };
      case CloseCode.GoingAway:
        return { kind: "server_shutdown", message: reason || "server shutting down", code: end.code };
      default:
        return { kind: "network", message: reason || "connection lost", code: end.code };
    }
  }
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
