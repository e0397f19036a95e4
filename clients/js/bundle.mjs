// The single-file browser bundle the gateway serves at /client/gateway-client.js: built from
// src/ by esbuild into gateway/assets/, which the gateway's build takes in, so that the gateway
// needs no Node to build. `node bundle.mjs` writes it; `node bundle.mjs --check` fails when
// the committed one is not what src/ builds now (the client's tests run the check).

import { build } from "esbuild";
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const served = fileURLToPath(new URL("../../gateway/assets/gateway-client.js", import.meta.url));

const result = await build({
  entryPoints: [fileURLToPath(new URL("./src/index.ts", import.meta.url))],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  write: false,
});
const built = result.outputFiles[0].contents;

if (process.argv.includes("--check")) {
  const committed = await readFile(served).catch(() => Buffer.alloc(0));
  if (!Buffer.from(built).equals(committed)) {
    console.error(`${served} is not what src/ builds now: run \`npm run bundle\` in clients/js and commit it`);
    process.exit(1);
  }
} else {
  await writeFile(served, built);
}
