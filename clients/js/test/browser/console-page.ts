/**
 * The operations console (`/console`) in a browser page, with the API key typed in.
 */

import type { Browser, Page } from "puppeteer-core";
import type { TestGateway } from "../gateway.js";
import { PATIENCE_MS } from "../wait.js";
import { DESKTOP, waitForText, watchForErrors } from "./browser.js";

export class ConsolePage {
  readonly errors: string[] = [];

  private constructor(readonly page: Page) {
    watchForErrors(page, this.errors);
  }

  static async open(browser: Browser, gateway: TestGateway): Promise<ConsolePage> {
    const opened = new ConsolePage(await browser.newPage());
    await opened.page.setViewport(DESKTOP);
    await opened.page.goto(`http://${gateway.http}/console`);
    await opened.page.type("#key", gateway.apiKey);
    await opened.page.click("#key-form button[type=submit]");
    await opened.page.waitForSelector("#panels:not(.hidden)", { timeout: PATIENCE_MS });
    return opened;
  }

  /** Waits until the tile `stat` (e.g. `connections-mqtt`) shows `value`. */
  async waitForStat(stat: string, value: string): Promise<void> {
    await this.page.waitForFunction(
      (stat, value) => document.querySelector(`[data-stat="${stat}"] b`)?.textContent === value,
      { timeout: PATIENCE_MS },
      stat,
      value,
    );
  }

  async lookUpUser(user: string): Promise<void> {
    await this.replace("#user", user);
    await this.page.click("#user-form button[type=submit]");
    await this.page.waitForSelector("#user-panel:not(.hidden)", { timeout: PATIENCE_MS });
  }

  async sendTestNotification(user: string, kind: string): Promise<void> {
    await this.replace("#notify-user", user);
    await this.page.select("#notify-kind", kind);
    await this.page.click("#notify-form button[type=submit]");
    await this.page.waitForSelector("#notification-panel:not(.hidden)", { timeout: PATIENCE_MS });
  }

  async lookUpNotification(): Promise<void> {
    await this.page.click("#notification-form button[type=submit]");
  }

  /** The text of each cell of the rows in `tbody`. */
  rows(tbody: string): Promise<string[][]> {
    return this.page.$$eval(`${tbody} tr`, (rows) => rows.map((row) => [...row.querySelectorAll("td")].map((td) => td.textContent ?? "")));
  }

  waitForText(selector: string, text: string): Promise<void> {
    return waitForText(this.page, selector, text);
  }

  private async replace(selector: string, value: string): Promise<void> {
    await this.page.$eval(selector, (input) => ((input as HTMLInputElement).value = ""));
    await this.page.type(selector, value);
  }
}
