/**
 * Acknowledges the highest sequence held in batches rather than per entry: the gateway stores
 * the cursor on every ack (and rate-limits them), while an ack only matters when the client
 * comes back without a place of its own. An ack goes out once `maxPending` entries wait for
 * one, or `delayMs` after the first of them, or at once when a sync has caught up.
 */

export interface AckOptions {
  /** Entries held before an ack goes out at once (default 50). */
  maxPending?: number;
  /** The longest an entry waits to be acknowledged while connected, ms (default 1,000). */
  delayMs?: number;
}

export type AckSender = (seq: number) => Promise<unknown>;

export class AckBatcher {
  private highest = 0;
  private acked = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private sender: AckSender | undefined;
  private readonly maxPending: number;
  private readonly delayMs: number;

  constructor(options: AckOptions = {}) {
    this.maxPending = options.maxPending ?? 50;
    this.delayMs = options.delayMs ?? 1_000;
  }

  /** Where acks go now: the live connection's, or nowhere while disconnected. */
  connect(sender: AckSender | undefined): void {
    this.sender = sender;
    if (!sender) this.stopTimer();
  }

  /** The client holds everything up to `seq`. */
  held(seq: number): void {
    this.highest = seq;
    if (this.highest - this.acked >= this.maxPending) {
      this.flush();
    } else if (this.timer === undefined && this.highest !== this.acked) {
      this.timer = setTimeout(() => this.flush(), this.delayMs);
    }
  }

  /** The log was recreated: acks of the old one mean nothing in the new one. */
  restart(seq: number): void {
    this.acked = 0;
    this.highest = seq;
  }

  flush(): void {
    this.stopTimer();
    if (!this.sender || this.highest === this.acked) return;
    const seq = this.highest;
    this.acked = seq;
    this.sender(seq).catch(() => {
      // Not stored (the connection ended, a rate limit): the next ack carries it.
      if (this.acked === seq) this.acked = 0;
    });
  }

  stop(): void {
    this.stopTimer();
    this.sender = undefined;
  }

  private stopTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
