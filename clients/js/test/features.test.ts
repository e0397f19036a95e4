/**
 * The rest of what the protocol has, through the client's typed API: approval of a new device,
 * signals, presence of the user's own devices, in-app notifications, quiet hours, and errors
 * carrying the gateway's code.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { ClientError, GatewayError } from "../src/index.js";
import { gatewayForThisFile } from "./file-gateway.js";
import { RecordingClient } from "./recording-client.js";

const gateway = gatewayForThisFile({ env: { SESSIONS__NEW_DEVICE_APPROVAL: "true" } });

test("a new device waits for approval, then catches up and hears its user's other devices", { timeout: 60_000 }, async () => {
  // The user's first device is trusted.
  const phone = new RecordingClient(gateway(), { token: () => gateway().token("mia", "phone") });
  await phone.live();
  await gateway().notify({ user: "mia", kind: "social_interaction", title: "nora liked your photo", body: "tap to see" });
  await phone.until(() => phone.notifications.length === 1, "the notification, live");
  assert.equal(phone.notifications[0]!.title, "nora liked your photo");

  const laptop = new RecordingClient(gateway(), { token: () => gateway().token("mia", "laptop") });
  laptop.client.connect();
  await laptop.until(() => laptop.approvals.includes("pending"), "approval pending");
  await phone.until(
    () => phone.presence.some((e) => e.type === "approval_request" && e.device === "laptop"),
    "the approval request",
  );
  await gateway().postMessage("mia", { text: "while the laptop waited" });
  assert.equal(laptop.messages.length, 0, "nothing reaches a device waiting for approval");

  await phone.client.approveDevice("laptop", true);
  await laptop.until(() => laptop.client.state === "live", "the laptop going live");
  assert.deepEqual(laptop.approvals, ["pending", "approved"]);
  // What the log held came in the sync: the notification (told apart from messages) and the message.
  assert.deepEqual(laptop.notifications.map((n) => n.kind), ["social_interaction"]);
  assert.deepEqual(laptop.messages.map((m) => m.body), [{ text: "while the laptop waited" }]);
  await phone.until(
    () => phone.presence.some((e) => e.type === "online" && e.device.device === "laptop"),
    "the laptop online",
  );

  await phone.client.signal("mia", { typing: true });
  await laptop.until(() => laptop.signals.length === 1, "the signal");
  assert.deepEqual(laptop.signals[0], { from: "mia", from_device: "phone", body: { typing: true } });

  // A third device is denied: it is told, and does not come back by itself.
  const tv = new RecordingClient(gateway(), { token: () => gateway().token("mia", "tv") });
  tv.client.connect();
  await tv.until(() => tv.approvals.includes("pending"), "the tv waiting");
  await laptop.client.approveDevice("tv", false);
  await tv.until(() => tv.lastDisconnect !== undefined, "the denial");
  assert.equal(tv.lastDisconnect?.reason.kind, "approval_denied");
  assert.equal(tv.lastDisconnect?.reason.message, "login denied from another device");
  assert.equal(tv.lastDisconnect?.willReconnect, false);

  await Promise.all([phone.close(), laptop.close()]);
});

test("quiet hours, and errors carrying the gateway's code", { timeout: 60_000 }, async () => {
  const owen = new RecordingClient(gateway(), { token: () => gateway().token("owen", "browser") });
  await assert.rejects(owen.client.signal("owen", {}), (e) => e instanceof ClientError && e.code === "not_connected");
  await owen.live();
  await owen.client.setQuietHours({ time_zone: "Asia/Shanghai", windows: [{ start: "22:00", end: "07:00" }] });
  await assert.rejects(
    owen.client.setQuietHours({ time_zone: "Mars/Olympus_Mons", windows: [] }),
    (e) => e instanceof GatewayError && e.code === "invalid_request",
  );
  await assert.rejects(
    owen.client.send("not a user", { text: "hi" }),
    (e) => e instanceof GatewayError && e.code === "invalid_request",
  );
  await assert.rejects(
    owen.client.subscribe("u/someone-else/inbox"),
    (e) => e instanceof GatewayError && e.code === "forbidden",
  );
  await owen.client.subscribe("pub/news/#");
  // Back after a restart, with the public subscription and without the refused one.
  await owen.disconnectedBy(() => gateway().restart(), "the client noticing the restart");
  await owen.until(() => owen.client.state === "live", "the client live again");
  const subscriptionsTo = (topic: string) => owen.network.sent.filter((f) => f.op === "sub" && f.topic === topic).length;
  assert.equal(subscriptionsTo("pub/news/#"), 2);
  assert.equal(subscriptionsTo("u/someone-else/inbox"), 1);
  await owen.close();
  await assert.rejects(owen.client.send("pat", {}), (e) => e instanceof ClientError && e.code === "closed");
});
