/**
 * The bundle the gateway serves at `/client/gateway-client.js` is what `src/` builds now, and a
 * page that imports it from there gets a client that works: connected, it receives a message.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { promisify } from "node:util";
import WebSocket from "ws";
import { gatewayForThisFile } from "./file-gateway.js";
import { waitFor } from "./wait.js";

const gateway = gatewayForThisFile();
/** This package's directory: the tests run from it (`npm test`). */
const packageDir = process.cwd();

test("the served bundle is this source's, and a page can use it", async () => {
  await promisify(execFile)(process.execPath, ["bundle.mjs", "--check"], { cwd: packageDir });

  const response = await fetch(`http://${gateway().http}/client/gateway-client.js`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/javascript/);
  const served = Buffer.from(await response.arrayBuffer());
  const committed = await readFile(resolve(packageDir, "../../gateway/assets/gateway-client.js"));
  assert.ok(served.equals(committed), "the gateway serves the committed bundle");

  const dir = await mkdtemp(join(tmpdir(), "served-bundle-"));
  const file = join(dir, "gateway-client.js");
  await writeFile(file, served);
  const bundle = await import(pathToFileURL(file).href);
  await rm(dir, { recursive: true, force: true });
  const client = new bundle.GatewayClient({
    url: gateway().wsUrl,
    token: await gateway().token("lena", "browser"),
    WebSocket,
  });
  try {
    const bodies: unknown[] = [];
    client.on("message", (message: { body: unknown }) => bodies.push(message.body));
    client.connect();
    await waitFor(() => client.state === "live", "the client is live");
    await gateway().postMessage("lena", { text: "from the served bundle" });
    await waitFor(() => bodies.length === 1, "the message arrives");
    assert.deepEqual(bodies, [{ text: "from the served bundle" }]);
  } finally {
    await client.close();
  }
});
