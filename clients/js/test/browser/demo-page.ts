/**
 * The demo chat (`/`) in a browser page, signed in as one device of one user, driven the way a
 * person would: typing into its fields and pressing its buttons.
 */

import type { Browser, Page } from "puppeteer-core";
import type { TestGateway } from "../gateway.js";
import { PATIENCE_MS } from "../wait.js";
import { DESKTOP, waitForText, watchForErrors } from "./browser.js";

export interface ShownMessage {
  seq: number | undefined;
  text: string;
  meta: string;
}

export class DemoPage {
  readonly errors: string[] = [];

  private constructor(readonly page: Page) {
    watchForErrors(page, this.errors);
  }

  /** Opens the demo and signs in through dev mode's token route; resolves once live. */
  static async signIn(browser: Browser, gateway: TestGateway, user: string, device: string, viewport = DESKTOP): Promise<DemoPage> {
    const demo = await DemoPage.startSignIn(browser, gateway, user, device, viewport);
    await demo.waitForState("live");
    return demo;
  }

  /** Opens the demo and presses "Sign in", without waiting for the connection to go live. */
  static async startSignIn(browser: Browser, gateway: TestGateway, user: string, device: string, viewport = DESKTOP): Promise<DemoPage> {
    // A context of its own: two pages of one browser are two devices, as two tabs would be.
    const context = await browser.createBrowserContext();
    const demo = new DemoPage(await context.newPage());
    await demo.page.setViewport(viewport);
    await demo.page.goto(`http://${gateway.http}/`);
    await demo.fill("#user", user);
    await demo.fill("#device", device);
    await demo.page.click("#sign-in button[type=submit]");
    return demo;
  }

  async send(to: string, text: string): Promise<void> {
    await this.fill("#to", to);
    await this.page.type("#text", text);
    await this.page.click("#composer button[type=submit]");
    await this.page.waitForFunction(
      (text) => [...document.querySelectorAll("#messages li.mine")].some((li) => li.querySelector(".text")?.textContent === text && li.querySelector(".meta")?.textContent?.endsWith("sent")),
      { timeout: PATIENCE_MS },
      text,
    );
  }

  messages(): Promise<ShownMessage[]> {
    return this.page.$$eval("#messages li", (items) =>
      items.map((li) => ({
        seq: (li as HTMLElement).dataset.seq === undefined ? undefined : Number((li as HTMLElement).dataset.seq),
        text: li.querySelector(".text")?.textContent ?? "",
        meta: li.querySelector(".meta")?.textContent ?? "",
      })),
    );
  }

  async waitForMessages(texts: string[]): Promise<void> {
    await this.page.waitForFunction(
      (texts) => {
        const shown = [...document.querySelectorAll("#messages li .text")].map((t) => t.textContent);
        return texts.every((text) => shown.includes(text));
      },
      { timeout: PATIENCE_MS },
      texts,
    );
  }

  async waitForState(state: string): Promise<void> {
    await this.page.waitForFunction((state) => document.getElementById("state")?.textContent === state, { timeout: PATIENCE_MS }, state);
  }

  /** Waits until `device` shows among the user's other devices, online or not. */
  async waitForDevice(device: string, online: boolean): Promise<void> {
    await this.page.waitForFunction(
      (device, online) =>
        [...document.querySelectorAll<HTMLElement>("#devices li")].some(
          (chip) => chip.dataset.device === device && chip.classList.contains("offline") !== online,
        ),
      { timeout: PATIENCE_MS },
      device,
      online,
    );
  }

  waitForText(selector: string, text: string): Promise<void> {
    return waitForText(this.page, selector, text);
  }

  /** The "Go offline" button: the socket is closed; pressed again, it reconnects and syncs. */
  async toggleOffline(): Promise<void> {
    await this.page.click("#offline");
  }

  async close(): Promise<void> {
    await this.page.browserContext().close();
  }

  private async fill(selector: string, value: string): Promise<void> {
    await this.page.$eval(selector, (input, value) => ((input as HTMLInputElement).value = value), value);
  }
}
