/**
 * The operations console in Debian's chromium against the real gateway binary, whose 球球 push
 * channel goes to the provider's test double: it shows a connected device, and a notification's
 * routes with every attempt's provider code and latency.
 */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { TestGateway } from "../gateway.js";
import { PATIENCE_MS, poll, sleep } from "../wait.js";
import { browserForThisFile, screenshot } from "./browser.js";
import { ChannelDoubles } from "./channel-doubles.js";
import { ConsolePage } from "./console-page.js";
import { MqttDevice } from "./mqtt-device.js";

// One hook, in this order: the gateway needs the double's address (the file's hooks run at once).
let doubles: ChannelDoubles | undefined;
let started: TestGateway | undefined;
before(async () => {
  doubles = await ChannelDoubles.start();
  started = await TestGateway.start({ env: { CHANNELS__QIUQIU: doubles.qiuqiuConfig() } });
});
after(async () => {
  await started?.stop();
  await doubles?.stop();
});
const gateway = (): TestGateway => started!;
const browser = browserForThisFile();

test("the console shows a connected device and a notification's attempts", { timeout: 60_000 }, async () => {
  const phone = await MqttDevice.connect(gateway(), "carol", "phone");
  await phone.send("carol", { text: "a note to self" });
  for (const [path, body] of [
    ["consent", { qiuqiu: true }],
    ["bindings", { qiuqiu_devices: ["cid-carol"] }],
    ["quiet-hours", { time_zone: "Asia/Shanghai", windows: [{ start: "23:00", end: "07:00" }] }],
  ] as const) {
    const answer = await gateway().api("PUT", `/v1/users/carol/${path}`, body);
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  }

  const ops = await ConsolePage.open(browser(), gateway());
  await ops.waitForStat("connections-mqtt", "1");
  assert.deepEqual((await ops.rows("#nodes")).map((cells) => cells.slice(1)), [["alive", "this node"]]);

  await ops.lookUpUser("carol");
  const devices = await ops.rows("#devices");
  assert.equal(devices.length, 1);
  assert.deepEqual(devices[0]!.slice(0, 3), ["phone", "ios", "mqtt"]);
  const recent = await ops.rows("#recent");
  assert.equal(recent[0]![2], "message");
  assert.equal(recent[0]![3], "carol · phone");
  assert.match(recent[0]![5]!, /hidden/, "bodies are not shown unless configured");
  await ops.waitForText("#preferences", "23:00–07:00 (Asia/Shanghai)");

  // security_alert goes to 球球 even with a device online; its push is sent by the worker.
  await ops.sendTestNotification("carol", "security_alert");
  const id = await ops.page.$eval("#notification", (input) => (input as HTMLInputElement).value);
  const record = await poll(async () => {
    const { body } = await gateway().api("GET", `/v1/notifications/${id}`);
    return body.routes.qiuqiu?.attempts?.length > 0 ? body : undefined;
  }, "the 球球 push's attempt");
  assert.equal(record.routes.qiuqiu.status, "sent", JSON.stringify(record));
  await ops.lookUpNotification();
  await ops.waitForText('#routes tr[data-route="qiuqiu"]', "code 0");
  const qiuqiu = (await ops.rows("#routes")).find((cells) => cells[0] === "qiuqiu")!;
  assert.equal(qiuqiu[1], "sent");
  assert.match(qiuqiu[2]!, /code 0 · \d+ ms/);
  // A few seconds of traffic, rising and falling, for the chart.
  for (const count of [5, 15, 30, 20, 10, 25]) {
    await Promise.all(Array.from({ length: count }, (_, i) => phone.send("carol", { text: `burst ${i}` })));
    await gateway().notify({ user: "carol", kind: "social_interaction", title: `burst of ${count}`, body: "" });
    await sleep(1000);
  }
  await ops.page.waitForFunction(() => document.querySelectorAll("#chart polyline").length === 4, { timeout: PATIENCE_MS });
  await screenshot(ops.page, "console");

  // Kick from the console: the device is gone from the gateway's presence.
  await ops.page.click('#devices tr[data-device="phone"] button.plain');
  await ops.waitForText("#devices", "no device online");
  assert.deepEqual(ops.errors, []);
  await phone.close();
});
