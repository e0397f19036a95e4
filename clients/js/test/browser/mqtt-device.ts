/**
 * A phone-like device on the gateway's MQTT listener, through MQTT.js: what a mobile app
 * holds, beside the pages in the browser.
 */

import mqtt, { type MqttClient } from "mqtt";
import type { TestGateway } from "../gateway.js";
import { waitFor } from "../wait.js";

export interface Delivery {
  topic: string;
  payload: any;
}

export class MqttDevice {
  readonly received: Delivery[] = [];

  private constructor(
    private readonly client: MqttClient,
    readonly user: string,
    readonly device: string,
  ) {
    client.on("message", (topic, payload) => this.received.push({ topic, payload: JSON.parse(payload.toString()) }));
  }

  /** Connects as `user`'s `device` (an ios token) and subscribes to the user's inbox and presence. */
  static async connect(gateway: TestGateway, user: string, device: string): Promise<MqttDevice> {
    const token = await gateway.token(user, device, undefined, "ios");
    const client = await mqtt.connectAsync(`mqtt://${gateway.mqtt}`, {
      clientId: `${user}-${device}`,
      username: user,
      password: token,
      protocolVersion: 5,
      reconnectPeriod: 0,
    });
    await client.subscribeAsync([`u/${user}/inbox`, `u/${user}/presence`], { qos: 1 });
    return new MqttDevice(client, user, device);
  }

  /** Sends a message to `to` and waits for the gateway's PUBACK (stored). */
  async send(to: string, body: unknown): Promise<void> {
    await this.client.publishAsync(`u/${this.user}/d/${this.device}/send`, JSON.stringify({ to, body }), { qos: 1 });
  }

  inboxTexts(): string[] {
    return this.received.filter((d) => d.topic.endsWith("/inbox")).map((d) => d.payload.body?.text);
  }

  async until(condition: () => boolean, what: string): Promise<void> {
    await waitFor(condition, `the MQTT device ${this.device}: ${what}`);
  }

  async close(): Promise<void> {
    await this.client.endAsync();
  }
}
