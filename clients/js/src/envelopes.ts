/**
 * The JSON the gateway carries on a user's topics (`protocol/src/envelope.rs`,
 * `protocol/src/notification.rs`). Field names are the gateway's, as on the wire, so what an app
 * logs or stores is what the gateway documents.
 */

/** A message as stored in the user's log and delivered on `u/{user}/inbox` or in a sync page. */
export interface InboxMessage<Body = unknown> {
  /** Place in the user's log: numbers from 1 without gaps, except entries deleted since. */
  seq: number;
  /** Server time of acceptance, milliseconds since the Unix epoch; never goes backwards along a log. */
  ts: number;
  /** The gateway's id for the message. */
  id: string;
  /** The sending user, or the backend's `from`. */
  from?: string;
  /** The sending device; absent for the backend's messages. */
  from_device?: string;
  to: string;
  body: Body;
}

export type Priority = "normal" | "high" | "urgent";

/** A notification as the backend handed it in (the body of an in-app entry carries it). */
export interface Notification {
  id: string;
  user: string;
  kind: string;
  title: string;
  body: string;
  data?: unknown;
  priority?: Priority;
  dedup_key?: string;
  link?: string;
  wechat_tag?: number;
  /** Milliseconds since the Unix epoch. */
  created_at: number;
}

/** An in-app notification: an entry of the user's log whose body carries the notification. */
export type NotificationEntry = InboxMessage<{ notification: Notification }>;

/** A live signal as delivered on `u/{user}/signal`: never stored, no `seq`. */
export interface SignalMessage<Body = unknown> {
  from?: string;
  from_device?: string;
  body: Body;
}

export type Platform = "ios" | "android" | "web" | "desktop";
export type Transport = "mqtt" | "mqtt_tls" | "mqtt_ws" | "mqtt_wss" | "json_ws";

/** One online device of the user. */
export interface DeviceInfo {
  device: string;
  platform: Platform;
  transport: Transport;
  /** Milliseconds since the Unix epoch. */
  connected_at: number;
  last_seen: number;
  /** False while the device waits for approval from another of the user's devices. */
  approved: boolean;
}

/** What goes out on `u/{user}/presence`: the user's own devices. */
export type PresenceEvent =
  | { type: "online"; device: DeviceInfo }
  | { type: "offline"; device: string; reason: string }
  | { type: "kicked"; device: string; reason: string }
  | { type: "approval_request"; device: string; platform: Platform }
  | { type: "approval_resolved"; device: string; approved: boolean; by: string | null };

/** Why history a device asked for is gone. */
export type HistoryLoss = "trimmed" | "epoch_changed";

export interface HistoryReset {
  reason: HistoryLoss;
  /** The oldest sequence still available; the sync goes on from there. */
  available_from: number;
}

/** A page of the user's log, in answer to a sync. */
export interface SyncPage {
  type: "sync";
  epoch: string;
  messages: InboxMessage[];
  /** The `seq`s of the entries among `messages` that are in-app notifications; absent when none. */
  notifications?: number[];
  /** The highest sequence this page covers: the device's place once it holds the page. */
  to_seq: number;
  more: boolean;
  reset?: HistoryReset;
}

/** What the gateway says on `u/{user}/d/{device}/reply`. */
export type Reply =
  | { type: "ok"; action: string; id?: string }
  | {
      type: "error";
      action: string;
      code: import("./error-codes.js").ServerErrorCode;
      message: string;
      retry_after_ms?: number;
    }
  | { type: "approval_pending" }
  | { type: "approved" }
  | { type: "denied" }
  | SyncPage;

/** The user's quiet hours, in the user's IANA time zone; a window may cross midnight. */
export interface QuietHours {
  time_zone: string;
  windows: { start: string; end: string }[];
}
