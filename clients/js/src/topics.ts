/**
 * The topic contract (`protocol/src/topics.rs`): the server → device topics a device subscribes
 * to, and the device → server topics it publishes its requests on.
 */

export const topics = {
  inbox: (user: string) => `u/${user}/inbox`,
  notify: (user: string) => `u/${user}/notify`,
  presence: (user: string) => `u/${user}/presence`,
  signal: (user: string) => `u/${user}/signal`,
  reply: (user: string, device: string) => `u/${user}/d/${device}/reply`,
  /** A device's request topic: `send`, `signal`, `approve`, `quiet-hours` (ack and sync are ops). */
  request: (user: string, device: string, action: DeviceAction) => `u/${user}/d/${device}/${action}`,
} as const;

export type DeviceAction = "send" | "signal" | "approve" | "quiet-hours";

/** True for ids the gateway accepts: 1–64 letters, digits, `_`, `-` and `.`. */
export function isValidId(id: string): boolean {
  return /^[A-Za-z0-9_.-]{1,64}$/.test(id);
}
