/**
 * The push providers' test doubles — the same ones the Rust end-to-end tests use — as a process:
 * `loadtest mock-channels` serves the WeChat and 球球 push APIs on free local ports and prints
 * their addresses and credentials. The binary is `LOADTEST_BIN`, or `../../target/debug/loadtest`.
 */

import { spawn, type ChildProcess } from "node:child_process";
import { resolve } from "node:path";
import { createInterface } from "node:readline";
import { withTimeout } from "../wait.js";

export interface QiuQiuAccount {
  base_url: string;
  app_id: string;
  app_key: string;
  master_secret: string;
}

export class ChannelDoubles {
  private constructor(
    private readonly child: ChildProcess,
    readonly qiuqiu: QiuQiuAccount,
  ) {}

  static async start(): Promise<ChannelDoubles> {
    const binary = process.env.LOADTEST_BIN ?? resolve(process.cwd(), "../../target/debug/loadtest");
    const child = spawn(binary, ["mock-channels"], { stdio: ["ignore", "pipe", "inherit"] });
    const lines = createInterface({ input: child.stdout! });
    const exited = new Promise<never>((_, reject) => {
      child.once("error", (error) => reject(new Error(`starting ${binary}: ${error.message}`)));
      child.once("exit", (code) => reject(new Error(`the channel doubles exited (${code}) before listening`)));
    });
    const first = new Promise<string>((resolve) => lines.once("line", resolve));
    const line = await withTimeout(Promise.race([first, exited]), 30_000, "the channel doubles printing their addresses");
    lines.on("line", () => {});
    return new ChannelDoubles(child, (JSON.parse(line) as { qiuqiu: QiuQiuAccount }).qiuqiu);
  }

  /** `[channels.qiuqiu]` pointing at the double, as a `GATEWAY__CHANNELS__QIUQIU` value. */
  qiuqiuConfig(): string {
    const q = this.qiuqiu;
    return `{enabled = true, base_url = "${q.base_url}", app_id = "${q.app_id}", app_key = "${q.app_key}", master_secret = "${q.master_secret}"}`;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGKILL");
    await withTimeout(exited, 10_000, "the channel doubles exiting");
  }
}
