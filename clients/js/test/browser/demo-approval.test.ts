/**
 * The demo chat with new-device approval on (`sessions.new_device_approval`): a page of a device
 * the user never used waits, and a page of the user's trusted device approves it.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { gatewayForThisFile } from "../file-gateway.js";
import { browserForThisFile } from "./browser.js";
import { DemoPage } from "./demo-page.js";

const gateway = gatewayForThisFile({ env: { WEB__DEV_MODE: "true", SESSIONS__NEW_DEVICE_APPROVAL: "true" } });
const browser = browserForThisFile();

test("a new device's page waits until another page of the user approves it", { timeout: 60_000 }, async () => {
  // The user's first device is trusted.
  const laptop = await DemoPage.signIn(browser(), gateway(), "erin", "laptop");
  const tablet = await DemoPage.startSignIn(browser(), gateway(), "erin", "tablet");
  await tablet.waitForText("#notice", "waits for one of your other devices to approve it");
  await laptop.waitForText("#approval", "tablet (web) wants to sign in as erin");

  await laptop.page.click("#approve");
  await tablet.waitForState("live");
  await laptop.waitForText("#notice", "tablet was approved by laptop");
  await tablet.waitForText("#notice", "This device was approved.");
  await tablet.send("erin", "approved and here");
  await laptop.waitForMessages(["approved and here"]);
  assert.deepEqual([...laptop.errors, ...tablet.errors], []);
  await laptop.close();
  await tablet.close();
});
