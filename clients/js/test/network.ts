/**
 * The client's network, under the test's control, on real sockets: it can be cut (new
 * connections go to a loopback port nothing listens on, and are refused as on a dead network),
 * and it can drop a connection right after a chosen frame went out, so that the gateway acts on
 * the frame and its answer is lost.
 */

import WebSocket from "ws";
import type { WebSocketConstructor } from "../src/index.js";

/** Nothing listens on port 1 of the loopback: connecting is refused at once. */
const UNREACHABLE = "ws://127.0.0.1:1/ws";

export class Network {
  /** While true, connections fail as on a dead network. */
  cut = false;
  /** Every frame the client sent, parsed, in order. */
  readonly sent: { op: string; topic?: string; payload?: any }[] = [];
  readonly WebSocket: WebSocketConstructor;
  private dropAfter: ((frame: Network["sent"][number]) => boolean) | undefined;

  constructor() {
    const network = this;
    this.WebSocket = class extends WebSocket {
      constructor(url: string) {
        super(network.cut ? UNREACHABLE : url);
      }

      override send(data: string): void {
        const frame = JSON.parse(data) as Network["sent"][number];
        network.sent.push(frame);
        super.send(data);
        if (network.dropAfter?.(frame)) {
          network.dropAfter = undefined;
          // The close frame goes out behind the frame, so the gateway reads the frame and acts
          // on it; whatever it answers is never heard.
          this.removeAllListeners("message");
          this.close(4000, "network dropped");
        }
      }
    } as unknown as WebSocketConstructor;
  }

  /** Drops the connection and cuts the network right after the first frame `which` accepts. */
  dropAfterFrame(which: (frame: Network["sent"][number]) => boolean): void {
    this.dropAfter = (frame) => {
      if (!which(frame)) return false;
      this.cut = true;
      return true;
    };
  }
}
