/**
 * Resuming across gateway restarts: the gateway is killed (SIGKILL) and started again on the same
 * data dir and port while messages stream to the client, some stored while the client is down;
 * the client reconnects, syncs from its place, and ends up with every message once, in order.
 * Sends whose answer was lost are sent again with their client message id and stored once.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { gatewayForThisFile } from "./file-gateway.js";
import { RecordingClient } from "./recording-client.js";
import { sleep, withTimeout } from "./wait.js";

const gateway = gatewayForThisFile();

/**
 * Posts message `i` until the gateway took it (it may be restarting); a retry repeats the
 * idempotency key, so it is stored once.
 */
async function postUntilStored(to: string, i: number): Promise<void> {
  for (let attempt = 0; attempt < 300; attempt++) {
    try {
      await gateway().postMessage(to, { i }, `stream-${to}-${i}`);
      return;
    } catch {
      await sleep(50);
    }
  }
  throw new Error(`message ${i} was never stored`);
}

async function postRange(to: string, from: number, through: number): Promise<void> {
  for (let i = from; i <= through; i++) await postUntilStored(to, i);
}

test("restarts mid-stream lose nothing and repeat nothing", { timeout: 90_000 }, async () => {
  const alice = new RecordingClient(gateway(), { token: () => gateway().token("alice", "browser") });
  await alice.live();
  await postRange("alice", 1, 20);

  // The gateway restarts while the client's network is down: 21–40 are stored while it is away.
  alice.network.cut = true;
  await alice.disconnectedBy(() => gateway().restart(), "the client noticing the restart");
  await postRange("alice", 21, 40);
  assert.ok(alice.seqs.every((seq) => seq <= 20), "nothing stored while away arrived live");
  alice.network.cut = false;

  // Back: it syncs while 41–60 stream in, and the gateway restarts once more mid-stream.
  await postRange("alice", 41, 50);
  await gateway().restart();
  await postRange("alice", 51, 60);
  await alice.until(() => alice.messages.length >= 60, "all 60 messages");
  await alice.until(() => alice.client.state === "live", "the client live again");
  await sleep(200); // anything repeated would arrive now

  const oneToSixty = Array.from({ length: 60 }, (_, k) => k + 1);
  assert.deepEqual(alice.seqs, oneToSixty);
  assert.deepEqual(alice.messages.map((m) => (m.body as { i: number }).i), oneToSixty);
  const drops = alice.states.filter((s) => s.state === "disconnected");
  assert.ok(drops.length >= 2, `reconnected after both restarts: ${JSON.stringify(drops)}`);
  assert.ok(drops.every((s) => s.state === "disconnected" && s.willReconnect && s.reason.kind === "network"));
  await alice.close();
});

test("a send whose answer was lost is sent again with its client message id and stored once", { timeout: 60_000 }, async () => {
  const bob = new RecordingClient(gateway(), { token: () => gateway().token("bob", "phone") });
  await bob.live();
  const isSend = (frame: { topic?: string }) => frame.topic === "u/bob/d/phone/send";
  await bob.client.send("carol", { i: 1 }, { clientMsgId: "bob-to-carol-1" });

  // The connection drops right after the second send went out: the gateway stores it, the
  // answer is lost, and the client cannot tell.
  bob.network.dropAfterFrame(isSend);
  let second!: Promise<unknown>;
  await bob.disconnectedBy(() => {
    second = bob.client.send("carol", { i: 2 }, { clientMsgId: "bob-to-carol-2" });
  }, "the drop");
  const stored = async () => (await gateway().wholeLog("carol")).map((m) => m.body.i);
  for (let wait = 0; !(await stored()).includes(2); wait++) {
    assert.ok(wait < 300, "the second message stored before the drop");
    await sleep(50);
  }
  // Made while disconnected: waits in the outbox.
  const third = bob.client.send("carol", { i: 3 }, { clientMsgId: "bob-to-carol-3" });

  bob.network.cut = false;
  await withTimeout(Promise.all([second, third]), 30_000, "both sends answered after the reconnect");
  const sentTwice = bob.network.sent.filter((f) => isSend(f) && f.payload.client_msg_id === "bob-to-carol-2");
  assert.equal(sentTwice.length, 2, "the second message was sent again");
  assert.deepEqual(await stored(), [1, 2, 3], "each message stored once");
  await bob.close();
});
