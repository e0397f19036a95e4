/**
 * The client's place in one user's log, and the rule that every entry reaches the app once, in
 * order: an entry at or below the place is a duplicate and dropped.
 *
 * On every (re)connect the client subscribes first and syncs after, so the two overlap: what was
 * appended between the subscription's answer and the sync's start arrives live *and* in a page.
 * Live entries are therefore held while a sync runs and let through after it, by `seq`; a sync
 * page moves the place to its `to_seq`, which also covers entries deleted since.
 */

import type { CursorStore, LogPosition } from "./cursor-store.js";
import type { HistoryReset, InboxMessage, SyncPage } from "./envelopes.js";

export type EntryKind = "message" | "notification";

/** The history the client held is gone: the app decides what to do with what it shows. */
export interface ResetEvent {
  reason: HistoryReset["reason"];
  /** The oldest sequence still available; what follows is delivered from there. */
  availableFrom: number;
  /** The log's epoch now. */
  epoch: string;
  /** Where the client was, when it knew. */
  previous?: LogPosition;
}

export interface UserLogEvents {
  deliver(entry: InboxMessage, kind: EntryKind): void;
  reset(event: ResetEvent): void;
  /** The place moved (after delivering, or over a page): save it, ack it. */
  advanced(position: LogPosition | undefined, seq: number): void;
}

export class UserLog {
  private epoch: string | undefined;
  private seq: number | undefined;
  private loaded = false;
  private holding = true;
  private held: { entry: InboxMessage; kind: EntryKind }[] = [];
  /** Entries dropped because the client held them already. */
  duplicatesDropped = 0;

  constructor(
    readonly user: string,
    private readonly events: UserLogEvents,
  ) {}

  /** The place to sync from: the epoch and highest sequence held, when known. */
  get position(): LogPosition | undefined {
    return this.epoch !== undefined && this.seq !== undefined ? { epoch: this.epoch, seq: this.seq } : undefined;
  }

  /** Reads the place from the store, once per client: afterwards memory is ahead of the store. */
  async load(store: CursorStore | undefined): Promise<void> {
    if (this.loaded) return;
    const stored = await store?.load(this.user);
    this.loaded = true;
    if (stored && this.seq === undefined) {
      this.epoch = stored.epoch;
      this.seq = stored.seq;
    }
  }

  /** A new connection starts: live entries wait until its sync has caught up. */
  hold(): void {
    this.holding = true;
    this.held = [];
  }

  /** An entry that came live on the inbox or notification topic. */
  live(entry: InboxMessage, kind: EntryKind): void {
    if (this.holding) {
      this.held.push({ entry, kind });
    } else {
      this.take(entry, kind);
    }
  }

  /** A page of a sync, in order. */
  page(page: SyncPage): void {
    if (page.reset) {
      const previous = this.position;
      this.epoch = page.epoch;
      this.seq = page.reset.available_from - 1;
      const event: ResetEvent = {
        reason: page.reset.reason,
        availableFrom: page.reset.available_from,
        epoch: page.epoch,
      };
      if (previous) event.previous = previous;
      this.events.reset(event);
    }
    this.epoch = page.epoch;
    const notifications = new Set(page.notifications ?? []);
    for (const entry of page.messages) {
      this.take(entry, notifications.has(entry.seq) ? "notification" : "message");
    }
    if (this.seq === undefined || page.to_seq > this.seq) {
      this.seq = page.to_seq;
      this.events.advanced(this.position, this.seq);
    }
  }

  /** The sync has caught up: what came live meanwhile goes through, without what the pages had. */
  release(): void {
    this.holding = false;
    const held = this.held.sort((a, b) => a.entry.seq - b.entry.seq);
    this.held = [];
    for (const { entry, kind } of held) this.take(entry, kind);
  }

  private take(entry: InboxMessage, kind: EntryKind): void {
    if (this.seq !== undefined && entry.seq <= this.seq) {
      this.duplicatesDropped += 1;
      return;
    }
    this.seq = entry.seq;
    this.events.deliver(entry, kind);
    this.events.advanced(this.position, entry.seq);
  }
}
