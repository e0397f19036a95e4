/**
 * A client for the gateway's JSON WebSocket protocol (`/ws`). See README.md for the API and an
 * example.
 */

export {
  GatewayClient,
  type GatewayClientOptions,
  type GatewayClientEvents,
  type ConnectionState,
  type StateChange,
  type DisconnectKind,
  type DisconnectReason,
  type ApprovalStatus,
  type SendOptions,
  type SentMessage,
} from "./client.js";
export type { AckOptions } from "./ack-batcher.js";
export type { BackoffOptions } from "./backoff.js";
export { MemoryCursorStore, WebStorageCursorStore, type CursorStore, type KeyValueStorage, type LogPosition } from "./cursor-store.js";
export {
  type DeviceInfo,
  type HistoryLoss,
  type HistoryReset,
  type InboxMessage,
  type Notification,
  type NotificationEntry,
  type Platform,
  type PresenceEvent,
  type Priority,
  type QuietHours,
  type Reply,
  type SignalMessage,
  type SyncPage,
  type Transport,
} from "./envelopes.js";
export { SERVER_ERROR_CODES, type ServerErrorCode } from "./error-codes.js";
export { ClientError, GatewayError, type ClientErrorCode } from "./errors.js";
export { CloseCode, type ClientFrame, type ServerFrame, type RequestId } from "./frames.js";
export { expiryOf, isExpired, type TokenProvider, type TokenRequest, type TokenRequestReason, type TokenSource } from "./token-source.js";
export { isValidId, topics } from "./topics.js";
export type { ResetEvent } from "./user-log.js";
export type { WebSocketConstructor, WebSocketLike } from "./web-socket.js";
