/**
 * Reconnect delays: exponential, capped, with full jitter (a random delay between zero and the
 * exponential bound), so that thousands of clients dropped by one gateway restart do not all
 * come back in the same instant.
 */

export interface BackoffOptions {
  /** The bound of the first retry's delay, ms (default 500). */
  initialDelayMs?: number;
  /** The largest bound, ms (default 30,000). */
  maxDelayMs?: number;
}

export class Backoff {
  private attempt = 0;
  private readonly initial: number;
  private readonly max: number;

  constructor(options: BackoffOptions = {}, private readonly random: () => number = Math.random) {
    this.initial = options.initialDelayMs ?? 500;
    this.max = options.maxDelayMs ?? 30_000;
  }

  /** The delay before the next attempt; each call doubles the bound up to the cap. */
  next(): number {
    const bound = Math.min(this.max, this.initial * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    return Math.round(this.random() * bound);
  }

  /** Called once a connection got as far as live: the next drop starts from the first delay. */
  reset(): void {
    this.attempt = 0;
  }
}
