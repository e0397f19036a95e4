/**
 * The frames of the gateway's JSON WebSocket protocol (`/ws`), as the gateway defines them in
 * `protocol/src/frames.rs`: one JSON object per text message, tagged by `op`.
 *
 * Kept to exactly what the gateway sends and accepts, so a change there shows up here as a type
 * error rather than as a silently ignored field.
 */

import type { ServerErrorCode } from "./error-codes.js";

/** A request's id, of the client's choosing; the gateway echoes it unchanged in its answer. */
export type RequestId = string | number;

/** Frames a client sends. */
export type ClientFrame =
  | { op: "auth"; id?: RequestId; token: string }
  | { op: "sub"; id?: RequestId; topic: string; resume?: boolean }
  | { op: "unsub"; id?: RequestId; topic: string }
  | { op: "pub"; id?: RequestId; topic: string; payload: unknown }
  | { op: "ack"; id?: RequestId; seq: number }
  | { op: "sync"; id?: RequestId; after?: number; epoch?: string }
  | { op: "ping"; id?: RequestId }
  | { op: "pong"; id?: RequestId };

/** The request `id` succeeded; after `auth`, `user` and `device` say who the session is. */
export interface OkFrame {
  op: "ok";
  id?: RequestId;
  user?: string;
  device?: string;
}

/** The request `id` (or a frame without a readable id) failed; the socket lives on. */
export interface ErrorFrame {
  op: "error";
  id?: RequestId;
  code: ServerErrorCode;
  message: string;
  /** For `rate_limited`: when the request may succeed again, in milliseconds. */
  retry_after_ms?: number;
}

/** A message on a subscribed topic: JSON in `payload`, anything else base64 in `payload_base64`. */
export interface MsgFrame {
  op: "msg";
  topic: string;
  payload?: unknown;
  payload_base64?: string;
}

export type ServerFrame =
  | OkFrame
  | ErrorFrame
  | MsgFrame
  | { op: "ping"; id?: RequestId }
  | { op: "pong"; id?: RequestId };

/** WebSocket close codes the gateway uses (`gateway/src/front/json_ws.rs`, `close_code`). */
export const CloseCode = {
  /** The gateway is shutting down. */
  GoingAway: 1001,
  /** Anything else the gateway ended the session for. */
  Policy: 1008,
  /** A frame over `limits.ws_max_message`. */
  TooBig: 1009,
  /** The client read too slowly, or the gateway could not check the token now. */
  TryAgainLater: 1013,
  /** Logged out: kicked, taken over by a newer connection of the device, or account deleted. */
  LoggedOut: 4001,
  /** The token was missing, bad, expired or revoked, or the login was denied. */
  Unauthorized: 4003,
} as const;
