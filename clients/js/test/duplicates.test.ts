/**
 * Nothing reaches the app twice: entries that arrive both live and in the sync that follows a
 * connect are dropped by `seq`, and a message sent twice with one client message id is stored
 * once.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { MemoryCursorStore, WebStorageCursorStore, type CursorStore, type LogPosition } from "../src/index.js";
import { gatewayForThisFile } from "./file-gateway.js";
import { RecordingClient } from "./recording-client.js";
import { sleep } from "./wait.js";

const gateway = gatewayForThisFile();

/**
 * A cursor store that is slow to load, as IndexedDB can be: while it loads, after the client has
 * subscribed and before it syncs, the backend stores messages, which therefore come both live
 * and in the sync.
 */
class SlowStore implements CursorStore {
  constructor(private readonly whileLoading: () => Promise<void>) {}
  private readonly inner = new MemoryCursorStore();
  async load(user: string): Promise<LogPosition | undefined> {
    await this.whileLoading();
    return this.inner.load(user);
  }
  save(user: string, position: LogPosition): void {
    this.inner.save(user, position);
  }
}

test("entries that come live and in the sync are delivered once", { timeout: 60_000 }, async () => {
  for (let i = 1; i <= 3; i++) await gateway().postMessage("frank", { i });
  const store = new SlowStore(async () => {
    for (let i = 4; i <= 8; i++) await gateway().postMessage("frank", { i });
  });
  const frank = new RecordingClient(gateway(), { token: () => gateway().token("frank", "browser"), cursorStore: store });
  await frank.live();
  await gateway().postMessage("frank", { i: 9 });
  await frank.until(() => frank.messages.length >= 9, "nine messages");
  await sleep(200); // a repeat would arrive now

  assert.deepEqual(frank.seqs, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(frank.client.duplicatesDropped, 5, "the five stored between subscribing and syncing came twice");
  await frank.close();
});

test("a place kept in Web Storage resumes a new page where the last one left off", { timeout: 60_000 }, async () => {
  const entries = new Map<string, string>();
  const storage = { getItem: (key: string) => entries.get(key) ?? null, setItem: (key: string, value: string) => void entries.set(key, value) };
  const token = (device: string) => () => gateway().token("gina", device);
  const firstPage = new RecordingClient(gateway(), { token: token("tab-1"), cursorStore: new WebStorageCursorStore(storage) });
  await firstPage.live();
  for (let i = 1; i <= 4; i++) await gateway().postMessage("gina", { i });
  await firstPage.until(() => firstPage.messages.length === 4, "four messages");
  await firstPage.close();
  await gateway().postMessage("gina", { i: 5 });

  // Another device id: the gateway keeps no cursor for it, so only the stored place avoids a repeat.
  const nextPage = new RecordingClient(gateway(), { token: token("tab-2"), cursorStore: new WebStorageCursorStore(storage) });
  await nextPage.live();
  assert.deepEqual(nextPage.seqs, [5]);
  await nextPage.close();
});

test("a send repeated with its client message id is stored once", { timeout: 60_000 }, async () => {
  const hank = new RecordingClient(gateway(), { token: () => gateway().token("hank", "browser") });
  await hank.live();
  const first = await hank.client.send("ivy", { text: "once" }, { clientMsgId: "hank-msg-1" });
  const again = await hank.client.send("ivy", { text: "once" }, { clientMsgId: "hank-msg-1" });
  assert.deepEqual(first, again);
  const generated = await hank.client.send("ivy", { text: "other" });
  assert.match(generated.clientMsgId, /^[0-9a-f-]{36}$/);
  const log = await gateway().wholeLog("ivy");
  assert.deepEqual(log.map((m) => m.body.text), ["once", "other"]);
  await hank.close();
});
