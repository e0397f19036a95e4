/**
 * Writes the client's place to its cursor store without letting writes pile up: one write at a
 * time, and while one runs only the newest place waits for the next, since it supersedes every
 * place before it.
 */

import type { CursorStore, LogPosition } from "./cursor-store.js";

export class PositionSaver {
  private writing: Promise<void> | undefined;
  private waiting: { user: string; position: LogPosition } | undefined;

  constructor(
    private readonly store: CursorStore | undefined,
    private readonly onError: (error: unknown) => void,
  ) {}

  save(user: string, position: LogPosition): void {
    if (!this.store) return;
    this.waiting = { user, position: { ...position } };
    if (!this.writing) this.writing = this.drain();
  }

  /** Resolves once every place asked to be saved is written. */
  async settled(): Promise<void> {
    while (this.writing) await this.writing;
  }

  private async drain(): Promise<void> {
    while (this.waiting) {
      const { user, position } = this.waiting;
      this.waiting = undefined;
      try {
        await this.store!.save(user, position);
      } catch (error) {
        this.onError(error);
      }
    }
    this.writing = undefined;
  }
}
