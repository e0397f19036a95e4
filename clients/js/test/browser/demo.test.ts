/**
 * The demo chat in Debian's chromium against the real gateway binary in dev mode: pages of one
 * user and an MQTT device exchange messages, and a page that went offline catches up in order.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { gatewayForThisFile } from "../file-gateway.js";
import { browserForThisFile, PHONE, screenshot } from "./browser.js";
import { DemoPage } from "./demo-page.js";
import { MqttDevice } from "./mqtt-device.js";

const gateway = gatewayForThisFile({ env: { WEB__DEV_MODE: "true" } });
const browser = browserForThisFile();

test("two pages of one user and an MQTT device exchange messages", { timeout: 60_000 }, async () => {
  const laptop = await DemoPage.signIn(browser(), gateway(), "alice", "laptop");
  const tablet = await DemoPage.signIn(browser(), gateway(), "alice", "tablet", PHONE);
  await laptop.waitForDevice("tablet", true);
  const phone = await MqttDevice.connect(gateway(), "alice", "phone");
  await laptop.waitForDevice("phone", true);
  await tablet.waitForDevice("phone", true);

  await laptop.send("alice", "hello from the laptop");
  await tablet.waitForMessages(["hello from the laptop"]);
  await phone.until(() => phone.inboxTexts().includes("hello from the laptop"), "the laptop's message");

  await phone.send("alice", { text: "hello from the phone" });
  await laptop.waitForMessages(["hello from the phone"]);
  await tablet.waitForMessages(["hello from the phone"]);
  const onTablet = (await tablet.messages()).find((m) => m.text === "hello from the phone");
  assert.match(onTablet!.meta, /alice · phone/, "the page shows which device sent it");

  await tablet.page.type("#text", "typ");
  await laptop.waitForText("#typing", "alice · tablet is typing");
  await tablet.page.$eval("#text", (input) => ((input as HTMLInputElement).value = ""));
  await tablet.send("alice", "hello from the tablet");
  await laptop.waitForMessages(["hello from the tablet"]);
  await phone.until(() => phone.inboxTexts().includes("hello from the tablet"), "the tablet's message");

  await gateway().notify({ user: "alice", kind: "social_interaction", title: "bob liked your photo", body: "tap to see it" });
  await laptop.waitForText("#notifications", "bob liked your photo");
  await tablet.waitForText("#notifications", "bob liked your photo");

  await phone.close();
  await laptop.waitForDevice("phone", false);
  await screenshot(laptop.page, "demo");
  await screenshot(tablet.page, "demo-phone");
  // Each page shows each message once.
  for (const page of [laptop, tablet]) {
    const texts = (await page.messages()).map((m) => m.text);
    assert.deepEqual(texts, [...new Set(texts)], "no message twice");
    assert.deepEqual(page.errors, []);
  }
  await laptop.close();
  await tablet.close();
});

test("a page that goes offline and back shows the messages it missed, in order", { timeout: 60_000 }, async () => {
  const page = await DemoPage.signIn(browser(), gateway(), "bob", "web");
  await gateway().postMessage("bob", { text: "before" });
  await page.waitForMessages(["before"]);

  await page.toggleOffline();
  await page.waitForState("disconnected");
  const missed = Array.from({ length: 12 }, (_, i) => `missed ${i + 1}`);
  for (const text of missed) await gateway().postMessage("bob", { text });
  assert.equal((await page.messages()).length, 1, "nothing arrives while offline");

  await page.toggleOffline();
  await page.waitForState("live");
  await page.waitForMessages(missed);
  const shown = await page.messages();
  assert.deepEqual(shown.map((m) => m.text), ["before", ...missed], "every message once, in order");
  const seqs = shown.map((m) => m.seq!);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "in the log's order");
  assert.deepEqual(page.errors, []);
  await page.close();
});

test("a page shows why it was logged out", { timeout: 60_000 }, async () => {
  const page = await DemoPage.signIn(browser(), gateway(), "dave", "web");
  const kicked = await gateway().api("DELETE", "/v1/users/dave/devices/web?reason=signed%20in%20elsewhere");
  assert.equal(kicked.status, 204, JSON.stringify(kicked.body));
  await page.waitForText("#notice", "signed in elsewhere");
  await page.waitForState("disconnected");
  assert.deepEqual(page.errors, []);
  await page.close();
});
