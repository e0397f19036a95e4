/**
 * The real gateway binary, started for a test as the Rust end-to-end tests start it
 * (`tests/src/gateway.rs`): `gateway serve` on a temporary data dir, every listener on a free
 * loopback port, rate limits off, the bound addresses read from the one JSON line it prints.
 *
 * The binary is `GATEWAY_BIN`, or `../../target/debug/gateway` from this package.
 */

import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { withTimeout } from "./wait.js";

const run = promisify(execFile);

/** Bounds a start that hangs (a debug build on a busy machine is slow); it measures nothing. */
const START_TIMEOUT_MS = 30_000;

export function gatewayBinary(): string {
  return process.env.GATEWAY_BIN ?? resolve(process.cwd(), "../../target/debug/gateway");
}

export interface StartOptions {
  /** `GATEWAY__SECTION__KEY` overrides without the prefix, e.g. `{ ROAMING__RETENTION_COUNT: "20" }`. */
  env?: Record<string, string>;
}

export class TestGateway {
  private constructor(
    private child: ChildProcess,
    readonly dataDir: string,
    /** `host:port` of the HTTP listener (API and `/ws`). */
    readonly http: string,
    /** `host:port` of the MQTT listener (TCP), as first bound: a restart may move it. */
    readonly mqtt: string,
    readonly apiKey: string,
    private readonly env: Record<string, string>,
  ) {}

  static async start(options: StartOptions = {}): Promise<TestGateway> {
    const dataDir = await mkdtemp(join(tmpdir(), "gateway-client-test-"));
    return TestGateway.startOn(dataDir, options.env ?? {}, "127.0.0.1:0");
  }

  private static async startOn(dataDir: string, env: Record<string, string>, http: string): Promise<TestGateway> {
    const childEnv: NodeJS.ProcessEnv = {
      ...process.env,
      RUST_LOG: "warn",
      GATEWAY__LISTENERS__MQTT: "127.0.0.1:0",
      GATEWAY__LISTENERS__MQTT_WS: "127.0.0.1:0",
      GATEWAY__LISTENERS__HTTP: http,
      GATEWAY__RATE_LIMITS__ENABLED: "false",
    };
    for (const [key, value] of Object.entries(env)) childEnv[`GATEWAY__${key}`] = value;
    const child = spawn(gatewayBinary(), ["serve", "--data-dir", dataDir], {
      env: childEnv,
      stdio: ["ignore", "pipe", "inherit"],
    });
    const lines = createInterface({ input: child.stdout! });
    const exited = new Promise<never>((_, reject) => {
      child.once("error", (error) => reject(new Error(`starting ${gatewayBinary()}: ${error.message}`)));
      child.once("exit", (code) => reject(new Error(`the gateway exited (${code}) before listening`)));
    });
    const first = new Promise<string>((resolve) => lines.once("line", resolve));
    const line = await withTimeout(Promise.race([first, exited]), START_TIMEOUT_MS, "the gateway printing its listeners");
    // Keep reading, so the gateway never blocks on a full pipe.
    lines.on("line", () => {});
    const listening = (JSON.parse(line) as { listening: { http: string; mqtt: string } }).listening;
    const apiKey = await cli(dataDir, ["api-key"]);
    return new TestGateway(child, dataDir, listening.http, listening.mqtt, apiKey, env);
  }

  get wsUrl(): string {
    return `ws://${this.http}/ws`;
  }

  /** A device token from `gateway token`, as an operator would make one. */
  token(user: string, device: string, ttl?: string, platform = "web"): Promise<string> {
    const args = ["token", "--user", user, "--device", device, "--platform", platform];
    if (ttl) args.push("--ttl", ttl);
    return cli(this.dataDir, args);
  }

  /** A request to the HTTP API with the API key; the status and the JSON body (or null). */
  async api(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
    const init: RequestInit = {
      method,
      headers: { authorization: `Bearer ${this.apiKey}`, "content-type": "application/json", ...headers },
      signal: AbortSignal.timeout(10_000),
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await fetch(`http://${this.http}${path}`, init);
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  /** `POST /v1/messages` from the backend; the stored message's `{id, seq, ts}`. */
  async postMessage(to: string, body: unknown, idempotencyKey?: string): Promise<{ seq: number }> {
    const headers: Record<string, string> = idempotencyKey ? { "idempotency-key": idempotencyKey } : {};
    const answer = await this.api("POST", "/v1/messages", { to, from: "backend", body }, headers);
    if (answer.status !== 202) throw new Error(`POST /v1/messages: ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  }

  /** `POST /v1/notifications` from the backend; the notification's `{id, routes}`. */
  async notify(notification: { user: string; kind: string; title: string; body: string }): Promise<{ id: string; routes: Record<string, { status: string }> }> {
    const answer = await this.api("POST", "/v1/notifications", notification);
    if (answer.status !== 202) throw new Error(`POST /v1/notifications: ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  }

  /** Every entry of `user`'s log, through the API. */
  async wholeLog(user: string): Promise<{ seq: number; body: any; from?: string; from_device?: string }[]> {
    const entries = [];
    let after = 0;
    for (;;) {
      const page = await this.api("GET", `/v1/users/${user}/messages?after=${after}&limit=500`);
      if (page.status !== 200) throw new Error(`history: ${page.status} ${JSON.stringify(page.body)}`);
      entries.push(...page.body.messages);
      after = page.body.to_seq;
      if (!page.body.more) return entries;
    }
  }

  /**
   * Kills the gateway (SIGKILL: nothing flushed or said) and starts it again on the same data
   * dir and HTTP port, as a crash and a supervisor's restart would.
   */
  async restart(): Promise<void> {
    await this.kill();
    this.child = (await TestGateway.startOn(this.dataDir, this.env, this.http)).child;
  }

  /** Kills the gateway (SIGKILL) and waits for it to exit, keeping its data dir. */
  async kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGKILL");
    await withTimeout(exited, 10_000, "the gateway exiting");
  }

  /** Kills the gateway and removes its data dir. */
  async stop(): Promise<void> {
    await this.kill();
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

async function cli(dataDir: string, args: string[]): Promise<string> {
  const { stdout } = await run(gatewayBinary(), [...args, "--data-dir", dataDir], { timeout: 30_000 });
  return stdout.trim();
}
