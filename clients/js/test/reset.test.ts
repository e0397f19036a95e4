/**
 * History the client held is gone: retention trimmed it while the client was away, or the log
 * was recreated (the user deleted). The client says so with a `reset` event before it delivers
 * what is left, and carries on from there.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { MemoryCursorStore } from "../src/index.js";
import { gatewayForThisFile } from "./file-gateway.js";
import { RecordingClient } from "./recording-client.js";

const gateway = gatewayForThisFile({ env: { ROAMING__RETENTION_COUNT: "20" } });

async function post(user: string, from: number, to: number): Promise<void> {
  for (let i = from; i <= to; i++) await gateway().postMessage(user, { i });
}

test("trimmed history and a recreated log are announced, then what is left arrives", { timeout: 60_000 }, async () => {
  const store = new MemoryCursorStore();
  const token = () => gateway().token("erin", "browser");
  const first = new RecordingClient(gateway(), { token, cursorStore: store });
  await first.live();
  await post("erin", 1, 5);
  await first.until(() => first.messages.length === 5, "the first five messages");
  await first.close();
  // The log did not exist at the first sync, so the place held has no epoch yet ("").
  const held = store.load("erin");
  assert.equal(held?.seq, 5);

  // Retention keeps the last 20 of 50: 6..30 are gone while the client is away.
  await post("erin", 6, 50);
  const second = new RecordingClient(gateway(), { token, cursorStore: store });
  await second.live();
  const { epoch } = (await gateway().api("GET", "/v1/users/erin/messages?after=0&limit=1")).body;
  assert.deepEqual(second.resets, [{ reason: "trimmed", availableFrom: 31, epoch, previous: held }]);
  assert.deepEqual(second.seqs, Array.from({ length: 20 }, (_, k) => 31 + k));

  // The user is deleted while the client is connected: it is logged out, with the reason.
  const deleted = await gateway().api("DELETE", "/v1/users/erin");
  assert.equal(deleted.status, 200);
  await second.until(() => second.client.state === "disconnected", "the logout");
  assert.equal(second.lastDisconnect?.reason.kind, "logged_out");
  assert.equal(second.lastDisconnect?.willReconnect, false);

  // Connecting again finds a new log: the old epoch's place means nothing there.
  await gateway().postMessage("erin", { text: "fresh start" });
  await second.live();
  assert.equal(second.resets.length, 2);
  const recreated = second.resets[1]!;
  assert.equal(recreated.reason, "epoch_changed");
  assert.equal(recreated.availableFrom, 1);
  assert.notEqual(recreated.epoch, epoch);
  assert.deepEqual(recreated.previous, { epoch, seq: 50 });
  assert.deepEqual(second.messages.at(-1), { ...second.messages.at(-1), seq: 1, body: { text: "fresh start" } });
  assert.deepEqual(second.client.position, { epoch: recreated.epoch, seq: 1 });
  await second.close();
});
