/**
 * Errors as typed objects. A {@link GatewayError} is the gateway's answer and carries its `code`;
 * a {@link ClientError} is something that happened on this side (the connection went away, an
 * answer did not come in time), so an app can tell "the gateway said no" from "we never heard".
 */

import type { ErrorFrame } from "./frames.js";
import type { ServerErrorCode } from "./error-codes.js";

export class GatewayError extends Error {
  override readonly name = "GatewayError";

  constructor(
    /** The gateway's machine-readable code, e.g. `forbidden`, `rate_limited`. */
    readonly code: ServerErrorCode,
    message: string,
    /** For `rate_limited`: when the request may succeed again, in milliseconds. */
    readonly retryAfterMs?: number,
    /** For an error on the device's reply topic: the request it answers (`send`, `sync`, …). */
    readonly action?: string,
  ) {
    super(message);
  }

  static fromFrame(frame: ErrorFrame): GatewayError {
    return new GatewayError(frame.code, frame.message, frame.retry_after_ms);
  }
}

export type ClientErrorCode =
  /** The connection ended before the answer came. */
  | "disconnected"
  /** No answer within the client's request timeout. */
  | "timeout"
  /** The client was closed by the app. */
  | "closed"
  /** The request needs a connection and there is none (signals are not queued). */
  | "not_connected";

export class ClientError extends Error {
  override readonly name = "ClientError";

  constructor(
    readonly code: ClientErrorCode,
    message: string,
  ) {
    super(message);
  }
}
