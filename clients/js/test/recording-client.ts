/**
 * A {@link GatewayClient} on the `ws` package (Node 20 has no global WebSocket) that records
 * everything it tells the app, for the tests to check.
 */

import {
  GatewayClient,
  type GatewayClientOptions,
  type InboxMessage,
  type Notification,
  type PresenceEvent,
  type ResetEvent,
  type SignalMessage,
  type StateChange,
} from "../src/index.js";
import type { TestGateway } from "./gateway.js";
import { Network } from "./network.js";
import { waitFor } from "./wait.js";

/** Every client a test made and has not closed: closed after the test file, whatever failed. */
const open = new Set<RecordingClient>();

export class RecordingClient {
  readonly client: GatewayClient;
  /** The client's network: cut it, or drop a connection after a frame. */
  readonly network = new Network();
  readonly messages: InboxMessage[] = [];
  readonly notifications: Notification[] = [];
  readonly signals: SignalMessage[] = [];
  readonly presence: PresenceEvent[] = [];
  readonly resets: ResetEvent[] = [];
  readonly states: StateChange[] = [];
  readonly approvals: string[] = [];
  readonly errors: Error[] = [];

  constructor(gateway: TestGateway, options: Omit<GatewayClientOptions, "url" | "WebSocket">) {
    this.client = new GatewayClient({
      url: gateway.wsUrl,
      WebSocket: this.network.WebSocket,
      reconnect: { initialDelayMs: 100, maxDelayMs: 1_000 },
      requestTimeoutMs: 10_000,
      ...options,
    });
    this.client.on("message", (message) => this.messages.push(message));
    this.client.on("notification", ({ notification }) => this.notifications.push(notification));
    this.client.on("signal", (signal) => this.signals.push(signal));
    this.client.on("presence", (event) => this.presence.push(event));
    this.client.on("reset", (event) => this.resets.push(event));
    this.client.on("state", (change) => this.states.push(change));
    this.client.on("approval", (status) => this.approvals.push(status));
    this.client.on("error", (error) => this.errors.push(error));
    open.add(this);
  }

  /** Closes the clients a failed test left open, so they stop reconnecting and the test file ends. */
  static async closeAll(): Promise<void> {
    await Promise.all([...open].map((client) => client.close()));
  }

  /** Connects and waits until the client is live (subscribed and caught up). */
  async live(): Promise<this> {
    const before = this.states.length;
    this.client.connect();
    await this.until(() => this.states.slice(before).some((s) => s.state === "live"), "the client going live");
    return this;
  }

  /**
   * Runs `cause` (a restart, a drop) and waits until the client was disconnected by it, however
   * soon it came back: by the time `cause` returns, the client may be live again.
   */
  async disconnectedBy(cause: () => Promise<unknown> | void, what: string): Promise<void> {
    const before = this.states.length;
    await cause();
    await this.until(() => this.states.slice(before).some((s) => s.state === "disconnected"), what);
  }

  get seqs(): number[] {
    return this.messages.map((m) => m.seq);
  }

  /** The last state change into `disconnected`, if any. */
  get lastDisconnect(): Extract<StateChange, { state: "disconnected" }> | undefined {
    return [...this.states].reverse().find((s): s is Extract<StateChange, { state: "disconnected" }> => s.state === "disconnected");
  }

  until(condition: () => boolean, what: string, ms?: number): Promise<void> {
    return waitFor(condition, `${what}; states ${this.states.map((s) => s.state).join(" → ")}`, ms);
  }

  close(): Promise<void> {
    open.delete(this);
    return this.client.close();
  }
}
