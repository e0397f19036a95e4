/**
 * Messages the app sent that the gateway has not answered yet. Each carries its client message
 * id, so the outbox can send it again after a reconnect without risk: if the first attempt was
 * stored and only its answer lost, the gateway answers the repeat as it answered the first and
 * stores nothing. Sends made while disconnected wait here for the next connection.
 *
 * The outbox lives in memory: sends still waiting when the page or process goes away are lost
 * to the client (an app that must not lose them keeps its own outbox and sends again with the
 * same ids).
 */

import { ClientError } from "./errors.js";

export interface SendRequest {
  to: string;
  body: unknown;
  client_msg_id: string;
}

/** Sends one request on the current connection; resolves on the gateway's `ok`. */
export type Transmit = (request: SendRequest) => Promise<unknown>;

interface Pending {
  request: SendRequest;
  resolve: () => void;
  reject: (error: Error) => void;
  inFlight: boolean;
}

export class Outbox {
  private readonly pending: Pending[] = [];
  private transmit: Transmit | undefined;

  get size(): number {
    return this.pending.length;
  }

  add(request: SendRequest): Promise<void> {
    return new Promise((resolve, reject) => {
      const entry: Pending = { request, resolve, reject, inFlight: false };
      this.pending.push(entry);
      if (this.transmit) this.attempt(entry, this.transmit);
    });
  }

  /** A connection is ready (or gone: `undefined`); what waits goes out on it, in order. */
  connect(transmit: Transmit | undefined): void {
    this.transmit = transmit;
    if (!transmit) return;
    for (const entry of this.pending) {
      if (!entry.inFlight) this.attempt(entry, transmit);
    }
  }

  /** The client is closed: nothing will be sent any more. */
  failAll(error: Error): void {
    for (const entry of this.pending.splice(0)) entry.reject(error);
  }

  private attempt(entry: Pending, transmit: Transmit): void {
    entry.inFlight = true;
    transmit(entry.request).then(
      () => this.settle(entry, () => entry.resolve()),
      (error: unknown) => {
        entry.inFlight = false;
        if (error instanceof ClientError && (error.code === "disconnected" || error.code === "timeout")) {
          // No answer: it may or may not be stored. The next connection sends it again.
          return;
        }
        this.settle(entry, () => entry.reject(error instanceof Error ? error : new Error(String(error))));
      },
    );
  }

  private settle(entry: Pending, then: () => void): void {
    const index = this.pending.indexOf(entry);
    if (index >= 0) this.pending.splice(index, 1);
    then();
  }
}
