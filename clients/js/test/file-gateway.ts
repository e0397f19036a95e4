/**
 * One gateway per test file: started before the file's tests, and stopped after them together
 * with every client they left open (a client still reconnecting would keep the process alive).
 */

import { after, before } from "node:test";
import { TestGateway, type StartOptions } from "./gateway.js";
import { RecordingClient } from "./recording-client.js";

/** Registers the file's gateway; the returned function gives it to the tests. */
export function gatewayForThisFile(options: StartOptions = {}): () => TestGateway {
  let gateway: TestGateway | undefined;
  before(async () => {
    gateway = await TestGateway.start(options);
  });
  after(async () => {
    await RecordingClient.closeAll();
    await gateway?.stop();
  });
  return () => {
    if (gateway === undefined) throw new Error("the file's gateway has not started");
    return gateway;
  };
}
