/**
 * Client message ids: the sender's own id for a message, so that sending it again after a lost
 * answer is stored once. A UUID (36 visible ASCII characters) fits the gateway's rule of 1–128.
 * `crypto.randomUUID` exists only in secure contexts in browsers; `getRandomValues` everywhere.
 */
export function newClientMsgId(): string {
  const crypto = globalThis.crypto;
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x40;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The gateway's rule for a client message id: 1–128 visible ASCII characters, no spaces. */
export function isValidClientMsgId(id: string): boolean {
  return /^[\x21-\x7e]{1,128}$/.test(id);
}
