/**
 * One authenticated WebSocket to `/ws`: sends requests with ids and matches the gateway's
 * answers to them, hands on everything else, and ends with the close code and reason the
 * gateway gave (or 1006 when the socket simply broke).
 *
 * A connection lives once; the client opens a new one for every reconnect, so no state of a
 * dead socket (pending answers, timers) can leak into the next.
 */

import { ClientError, GatewayError } from "./errors.js";
import type { ClientFrame, MsgFrame, OkFrame, ServerFrame, ErrorFrame } from "./frames.js";
import { OPEN, type WebSocketConstructor, type WebSocketLike } from "./web-socket.js";

/** How a connection ended. */
export interface ConnectionEnd {
  /** The WebSocket close code: the gateway's (4001 logged out, 1001 shutting down, …) or 1006. */
  code: number;
  reason: string;
  /** The client closed it itself (the app's `close()`, a request that timed out). */
  byClient: boolean;
}

export interface ConnectionOptions {
  url: string;
  WebSocket: WebSocketConstructor;
  token: string;
  /** How long the socket's opening and the `auth` answer, and every later answer, may take. */
  requestTimeoutMs: number;
  /** How often an idle connection asks the gateway for a `pong`, so a dead socket is noticed. */
  heartbeatIntervalMs: number;
  /** Every `msg` frame, in the order the gateway sent them. */
  onMessage: (frame: MsgFrame) => void;
  /** An `error` frame answering no request of ours. */
  onStrayError: (error: GatewayError) => void;
}

interface Pending {
  resolve: (frame: OkFrame) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Why opening a connection failed before it was authenticated. */
export class ConnectionFailed extends Error {
  override readonly name = "ConnectionFailed";

  constructor(
    readonly end: ConnectionEnd,
    /** The gateway's refusal of the token, when that is what ended it. */
    readonly refusal?: GatewayError,
  ) {
    super(refusal?.message ?? `connection closed (${end.code}${end.reason ? `: ${end.reason}` : ""})`);
  }
}

export class Connection {
  readonly user: string;
  readonly device: string;
  /** Resolves once, when the connection has ended. */
  readonly ended: Promise<ConnectionEnd>;

  private readonly pending = new Map<string, Pending>();
  private nextId = 1;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private lastReceived = Date.now();
  private finish!: (end: ConnectionEnd) => void;
  private isOver = false;

  private constructor(
    private readonly socket: WebSocketLike,
    private readonly options: ConnectionOptions,
    hello: OkFrame,
  ) {
    this.user = hello.user ?? "";
    this.device = hello.device ?? "";
    this.ended = new Promise((resolve) => (this.finish = resolve));
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => this.end({ code: event.code, reason: event.reason, byClient: false });
    socket.onerror = () => {};
    this.heartbeat = setInterval(() => this.beat(), options.heartbeatIntervalMs);
  }

  /** Opens a socket and authenticates with an `auth` frame (keeping the token out of URLs and logs). */
  static open(options: ConnectionOptions): Promise<Connection> {
    return new Promise((resolve, reject) => {
      let socket: WebSocketLike;
      try {
        socket = new options.WebSocket(options.url);
      } catch (error) {
        reject(new ConnectionFailed({ code: 1006, reason: String(error), byClient: false }));
        return;
      }
      let refusal: GatewayError | undefined;
      let settled = false;
      const fail = (end: ConnectionEnd) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(new ConnectionFailed(end, refusal));
      };
      const timer = setTimeout(() => {
        socket.onclose = null;
        socket.close();
        fail({ code: 1006, reason: "no answer to auth in time", byClient: true });
      }, options.requestTimeoutMs);
      socket.onerror = () => {};
      socket.onclose = (event) => fail({ code: event.code, reason: event.reason, byClient: false });
      socket.onopen = () => {
        const auth: ClientFrame = { op: "auth", id: "auth", token: options.token };
        socket.send(JSON.stringify(auth));
      };
      socket.onmessage = (event) => {
        const frame = parse(event.data);
        if (frame?.op === "ok" && frame.id === "auth") {
          settled = true;
          clearTimeout(timer);
          resolve(new Connection(socket, options, frame));
        } else if (frame?.op === "error") {
          // The gateway closes the socket after a refusal; the close settles the promise.
          refusal = GatewayError.fromFrame(frame);
        }
      };
    });
  }

  get isOpen(): boolean {
    return !this.isOver && this.socket.readyState === OPEN;
  }

  /**
   * Sends a request and resolves with its `ok`; rejects with the gateway's {@link GatewayError},
   * or a {@link ClientError} when the connection ends first. An answer that does not come in time
   * means the connection is stuck: it is closed, and the client reconnects.
   */
  request(frame: ClientFrame): Promise<OkFrame> {
    if (!this.isOpen) {
      return Promise.reject(new ClientError("disconnected", "the connection has ended"));
    }
    const id = `c${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.close(4000, `no answer to ${frame.op} in time`);
      }, this.options.requestTimeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ ...frame, id }));
    });
  }

  /** Ends the connection from this side; `ended` resolves at once. */
  close(code = 1000, reason = "client closed"): void {
    try {
      this.socket.close(code === 1000 || (code >= 3000 && code <= 4999) ? code : 1000, reason);
    } catch {
      // Closing a socket that is not open yet throws in some implementations; it is over anyway.
    }
    this.end({ code, reason, byClient: true });
  }

  private receive(data: unknown): void {
    this.lastReceived = Date.now();
    const frame = parse(data);
    if (frame === undefined) return;
    switch (frame.op) {
      case "msg":
        this.options.onMessage(frame);
        return;
      case "ok":
        this.settle(frame.id, (pending) => pending.resolve(frame));
        return;
      case "pong":
        this.settle(frame.id, (pending) => pending.resolve({ op: "ok" }));
        return;
      case "error":
        this.answerError(frame);
        return;
      case "ping":
        this.send(frame.id === undefined ? { op: "pong" } : { op: "pong", id: frame.id });
        return;
    }
  }

  private answerError(frame: ErrorFrame): void {
    const error = GatewayError.fromFrame(frame);
    const answered = this.settle(frame.id, (pending) => pending.reject(error));
    if (!answered) this.options.onStrayError(error);
  }

  private settle(id: unknown, then: (pending: Pending) => void): boolean {
    if (typeof id !== "string") return false;
    const pending = this.pending.get(id);
    if (!pending) return false;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    then(pending);
    return true;
  }

  private send(frame: ClientFrame): void {
    if (this.isOpen) this.socket.send(JSON.stringify(frame));
  }

  /** Asks for a `pong` when nothing arrived for a heartbeat interval; its timeout closes a dead socket. */
  private beat(): void {
    if (Date.now() - this.lastReceived >= this.options.heartbeatIntervalMs) {
      this.request({ op: "ping" }).catch(() => {});
    }
  }

  private end(end: ConnectionEnd): void {
    if (this.isOver) return;
    this.isOver = true;
    clearInterval(this.heartbeat);
    this.socket.onmessage = null;
    this.socket.onclose = null;
    for (const pending of this.pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new ClientError("disconnected", `the connection ended (${end.code}) before the answer`));
    }
    this.pending.clear();
    this.finish(end);
  }
}

function parse(data: unknown): ServerFrame | undefined {
  if (typeof data !== "string") return undefined;
  try {
    return JSON.parse(data) as ServerFrame;
  } catch {
    return undefined;
  }
}
