/**
 * Debian's chromium, headless, driven over the DevTools protocol by puppeteer-core (which
 * downloads no browser of its own): one browser per test file, a page per device.
 *
 * The browser is `CHROMIUM_BIN`, or `/usr/bin/chromium`.
 */

import { mkdir } from "node:fs/promises";
import { join, resolve } from "node:path";
import { after, before } from "node:test";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { PATIENCE_MS } from "../wait.js";

export function chromiumBinary(): string {
  return process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
}

/** A phone's screen: the pages must work on one. */
export const PHONE = { width: 390, height: 844, deviceScaleFactor: 1, isMobile: true, hasTouch: true };
export const DESKTOP = { width: 1200, height: 820, deviceScaleFactor: 1 };

/** Registers the file's browser; the returned function gives it to the tests. */
export function browserForThisFile(): () => Browser {
  let browser: Browser | undefined;
  before(async () => {
    browser = await puppeteer.launch({
      executablePath: chromiumBinary(),
      headless: true,
      // Root in a container has no user namespaces for the sandbox; /dev/shm may be tiny.
      args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    });
  });
  after(async () => {
    await browser?.close();
  });
  return () => {
    if (browser === undefined) throw new Error("the file's browser has not started");
    return browser;
  };
}

/** Waits until the element at `selector` holds `text`. */
export async function waitForText(page: Page, selector: string, text: string): Promise<void> {
  await page.waitForFunction(
    (selector, text) => document.querySelector(selector)?.textContent?.includes(text) ?? false,
    { timeout: PATIENCE_MS },
    selector,
    text,
  );
}

/** Fails the test on anything the page throws or logs as an error. */
export function watchForErrors(page: Page, errors: string[]): void {
  page.on("pageerror", (error) => errors.push(`page error: ${(error as Error).message}`));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(`console error: ${message.text()}`);
  });
}

/**
 * Writes `page` as `name`.png into `SCREENSHOTS_DIR` (the README's are `docs/screenshots`,
 * taken with `SCREENSHOTS_DIR=$PWD/../../docs/screenshots`), else into `build/screenshots`.
 */
export async function screenshot(page: Page, name: string): Promise<void> {
  const dir = resolve(process.env.SCREENSHOTS_DIR ?? "build/screenshots");
  await mkdir(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`) as `${string}.png`, fullPage: true });
}
