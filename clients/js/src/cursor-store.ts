/**
 * Where the client keeps its place in each user's log between connections, and, with a lasting
 * store, between page loads: on every reconnect it syncs from there.
 *
 * The interface may answer synchronously or with a promise, so `localStorage`, IndexedDB, a file
 * or an app's own database all fit. Without a store the place lives in memory only; a fresh
 * client then falls back on the cursor the gateway keeps for the device (moved by the client's
 * acks).
 */

/** A place in a user's log: the log's epoch and the highest sequence held. */
export interface LogPosition {
  epoch: string;
  seq: number;
}

export interface CursorStore {
  load(user: string): LogPosition | undefined | Promise<LogPosition | undefined>;
  save(user: string, position: LogPosition): void | Promise<void>;
}

/** Keeps positions in memory: as long as the client object, or shared by clients given the same. */
export class MemoryCursorStore implements CursorStore {
  private readonly positions = new Map<string, LogPosition>();

  load(user: string): LogPosition | undefined {
    const position = this.positions.get(user);
    return position && { ...position };
  }

  save(user: string, position: LogPosition): void {
    this.positions.set(user, { ...position });
  }
}

/** The part of the Web Storage API (`localStorage`, `sessionStorage`) the store uses. */
export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/**
 * Keeps positions in Web Storage (`localStorage` in a browser), one key per user, so a page
 * reload resumes where the last page left off.
 */
export class WebStorageCursorStore implements CursorStore {
  constructor(
    private readonly storage: KeyValueStorage,
    /** Prefix of the keys, to keep apart several gateways or apps on one origin. */
    private readonly prefix = "gateway-client:log:",
  ) {}

  load(user: string): LogPosition | undefined {
    const text = this.storage.getItem(this.prefix + user);
    if (text === null) return undefined;
    try {
      const value = JSON.parse(text) as Partial<LogPosition>;
      if (typeof value.epoch === "string" && typeof value.seq === "number") {
        return { epoch: value.epoch, seq: value.seq };
      }
    } catch {
      // A damaged entry is as good as none: the gateway's cursor takes over.
    }
    return undefined;
  }

  save(user: string, position: LogPosition): void {
    this.storage.setItem(this.prefix + user, JSON.stringify(position));
  }
}
