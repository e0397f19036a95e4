/**
 * The token callback is called again when the token held has expired or the gateway refuses it
 * (revoked by a logout), and a logout is reported with the text the gateway gave.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { expiryOf, isExpired, type TokenRequest } from "../src/index.js";
import { gatewayForThisFile } from "./file-gateway.js";
import { RecordingClient } from "./recording-client.js";
import { waitFor } from "./wait.js";

const gateway = gatewayForThisFile();

test("a token that expired while connected is replaced at the next reconnect", { timeout: 60_000 }, async () => {
  const requests: TokenRequest[] = [];
  const tokens: string[] = [];
  const jack = new RecordingClient(gateway(), {
    token: async (request) => {
      requests.push(request);
      // The first token lives seven seconds: good for connecting, stale (within the client's
      // margin for clock skew) two seconds later.
      const token = await gateway().token("jack", "browser", requests.length === 1 ? "7s" : "1h");
      tokens.push(token);
      return token;
    },
  });
  await jack.live();
  await waitFor(() => isExpired(tokens[0]!), "the first token to go stale");
  await gateway().restart();
  await jack.until(() => jack.client.state === "live" && requests.length === 2, "the reconnect with a new token");
  assert.deepEqual(requests.map((r) => r.reason), ["initial", "expired"]);
  assert.equal(jack.lastDisconnect?.reason.kind, "network");
});

test("a logout is reported with its reason, and a new token is asked for when the old one is refused", { timeout: 60_000 }, async () => {
  const requests: TokenRequest[] = [];
  const kim = new RecordingClient(gateway(), {
    token: (request) => {
      requests.push(request);
      return gateway().token("kim", "browser");
    },
  });
  await kim.live();

  const logout = await gateway().api("POST", "/v1/users/kim/logout?reason=password%20changed");
  assert.equal(logout.status, 200);
  await kim.until(() => kim.client.state === "disconnected", "the logout");
  assert.deepEqual(kim.lastDisconnect?.reason, { kind: "logged_out", message: "password changed", code: 4001 });
  assert.equal(kim.lastDisconnect?.willReconnect, false);
  assert.ok(kim.presence.some((e) => e.type === "kicked" && e.device === "browser" && e.reason === "password changed"));

  // Signing in again: the old token is refused as revoked, the callback gives one signed since.
  await gateway().postMessage("kim", { text: "while signed out" });
  await kim.live();
  assert.deepEqual(requests.map((r) => r.reason), ["initial", "refused"]);
  assert.match(requests[1]!.refusal ?? "", /revoked/);
  assert.ok(kim.messages.some((m) => (m.body as { text?: string }).text === "while signed out"));
  await kim.close();
});

test("a fixed token the gateway refuses stops the client", { timeout: 60_000 }, async () => {
  const client = new RecordingClient(gateway(), { token: "v1.0.bm90IGEgdG9rZW4.c2lnbmF0dXJl" });
  client.client.connect();
  await client.until(() => client.lastDisconnect !== undefined, "the refusal");
  assert.equal(client.lastDisconnect?.reason.kind, "unauthorized");
  assert.equal(client.lastDisconnect?.willReconnect, false);
});

test("token expiry is read from the gateway's tokens", { timeout: 60_000 }, async () => {
  const token = await gateway().token("lee", "browser", "1h");
  const exp = expiryOf(token)!;
  assert.ok(Math.abs(exp - (Date.now() / 1000 + 3600)) < 120, `exp ${exp}`);
});
