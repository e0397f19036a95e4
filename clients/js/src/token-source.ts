/**
 * Where the client's device token comes from: a fixed string, or a callback the client calls
 * again whenever the token it holds can no longer work — it has expired, or the gateway refused
 * it (revoked by a logout, signed with a retired key).
 *
 * The gateway checks a token when a connection starts and not afterwards, so a token that
 * expires while connected needs nothing until the next reconnect; the client then asks for a
 * fresh one instead of offering the gateway one it knows is stale.
 */

/** Why the client asks for a token. */
export type TokenRequestReason =
  /** The first connection, or the app called `connect()` again after a stop. */
  | "initial"
  /** The token held has expired (by its `exp` claim). */
  | "expired"
  /** The gateway refused the token held; `refusal` says why (e.g. "token revoked"). */
  | "refused";

export interface TokenRequest {
  reason: TokenRequestReason;
  refusal?: string;
}

export type TokenProvider = (request: TokenRequest) => string | Promise<string>;
export type TokenSource = string | TokenProvider;

/** Tokens within this much of their expiry count as expired: clocks differ. */
const EXPIRY_MARGIN_MS = 5_000;

export class TokenKeeper {
  private token: string | undefined;
  private nextReason: TokenRequestReason = "initial";
  private refusal: string | undefined;

  constructor(private readonly source: TokenSource) {}

  /** Whether a refused token can be replaced (only a callback can give another). */
  get canRefresh(): boolean {
    return typeof this.source === "function";
  }

  /** The token to connect with: the one held while it is still good, else a fresh one. */
  async current(now = Date.now()): Promise<string> {
    if (typeof this.source === "string") {
      return this.source;
    }
    if (this.token !== undefined && isExpired(this.token, now)) {
      this.token = undefined;
      this.nextReason = "expired";
    }
    if (this.token === undefined) {
      const request: TokenRequest = { reason: this.nextReason };
      if (this.refusal !== undefined) request.refusal = this.refusal;
      this.token = await this.source(request);
      this.refusal = undefined;
    }
    return this.token;
  }

  /** The gateway refused the token held: the next {@link current} asks for another. */
  refused(reason: string): void {
    this.token = undefined;
    this.nextReason = "refused";
    this.refusal = reason;
  }

  /** The app starts over: the next token asked for is an initial one. */
  restart(): void {
    this.nextReason = "initial";
  }
}

/**
 * Whether a token's `exp` claim has passed. Reads the gateway's own tokens
 * (`v1.<key id>.<claims>.<signature>`, older ones `v1.<claims>.<signature>`, `exp` in seconds) and
 * JWTs (`<header>.<claims>.<signature>`); a token it cannot read is taken as still good and
 * left for the gateway to judge.
 */
export function isExpired(token: string, now = Date.now()): boolean {
  const exp = expiryOf(token);
  return exp !== undefined && exp * 1000 - EXPIRY_MARGIN_MS <= now;
}

export function expiryOf(token: string): number | undefined {
  const parts = token.split(".");
  const claims = parts.length >= 3 ? parts[parts.length - 2] : undefined;
  if (claims === undefined) return undefined;
  try {
    const exp = (JSON.parse(decodeBase64Url(claims)) as { exp?: unknown }).exp;
    return typeof exp === "number" ? exp : undefined;
  } catch {
    return undefined;
  }
}

function decodeBase64Url(text: string): string {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}
