/**
 * The gateway's machine-readable error codes (`protocol/src/error_code.rs`), the same on every
 * transport. Listed as values too, so an app can check a code it got against the known ones.
 */
export const SERVER_ERROR_CODES = [
  "bad_json",
  "unknown_op",
  "invalid_request",
  "unauthorized",
  "not_authenticated",
  "forbidden",
  "invalid_topic",
  "too_many_subscriptions",
  "not_found",
  "approval_pending",
  "too_large",
  "unavailable",
  "rate_limited",
  "busy",
  "timeout",
  "internal",
] as const;

export type ServerErrorCode = (typeof SERVER_ERROR_CODES)[number];
