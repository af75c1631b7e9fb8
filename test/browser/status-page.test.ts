/**
 * The hub's status page in a real browser: Debian's chromium, driven by puppeteer-core (no
 * browser download: `executablePath`), against a real cluster of processes (the tools' hub,
 * a primary n0 and replicas n1, n2). The page must load without an error, show the cluster,
 * follow 2,000 puts and a kill -9 of the primary without a reload, and fetch nothing from
 * outside the hub. Screenshots of each state, at a laptop's and a phone's size, go to
 * test-output/screenshots/ for a person to look at.
 *
 * Without chromium this test fails, unless PBKV_BROWSER_OPTIONAL=1: then it is skipped,
 * saying so. PBKV_CHROMIUM names another chromium binary.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { KvClient } from '../../src/client/client.js';
import { startProcessCluster } from '../cluster/process-cluster.js';
import { Disposer, waitFor, within } from '../helpers.js';

const CHROMIUM = process.env['PBKV_CHROMIUM'] ?? '/usr/bin/chromium';
const BROWSER_OPTIONAL = process.env['PBKV_BROWSER_OPTIONAL'] === '1';
const SCREENSHOT_DIR = fileURLToPath(new URL('../../../test-output/screenshots/', import.meta.url));
/** No isMobile or hasTouch for the phone: puppeteer reloads the page to change them, and no reload is the point. */
const VIEWPORTS = {
  laptop: { width: 1280, height: 800 },
  phone: { width: 390, height: 844, deviceScaleFactor: 2 },
} as const;
const PUTS = 2_000;
const PUTS_AFTER_FAILOVER = 500;
const PUTS_IN_FLIGHT_MAX = 16;
/** The bound from a kill -9 of the primary to the page showing the new view. */
const FAILOVER_SHOWN_DEADLINE_MS = 10_000;
/** How long the page may take to show the cluster, or the puts, on a loaded machine. */
const PAGE_DEADLINE_MS = 20_000;
const LAUNCH_DEADLINE_MS = 30_000;

const disposer = new Disposer();

/** What the page shows, read from its DOM (ids and data attributes, as a script would). */
interface Shown {
  connection: string;
  epoch: string;
  primary: string;
  /** Set by the test after loading: still there means the page was never reloaded. */
  loadMark: string | undefined;
  nodes: Record<string, { role: string; state: string; seq: number | undefined; requests: number | undefined }>;
  /** Each node's puts/s in the chart's legend (the second just ended). */
  putsPerSecond: Record<string, number | undefined>;
}

function readPage(page: Page): Promise<Shown> {
  return page.evaluate(() => {
    const value = (element: Element | null) => {
      const text = element?.getAttribute('data-value');
      return text ? Number(text) : undefined;
    };
    const nodes: Shown['nodes'] = {};
    for (const row of document.querySelectorAll('#node-rows tr[data-node]')) {
      nodes[row.getAttribute('data-node')!] = {
        role: row.getAttribute('data-role') ?? '',
        state: row.getAttribute('data-state') ?? '',
        seq: value(row.querySelector('[data-field="seq"]')),
        requests: value(row.querySelector('[data-field="requests"]')),
      };
    }
    const putsPerSecond: Shown['putsPerSecond'] = {};
    for (const item of document.querySelectorAll('#chart-put .legend [data-node]')) putsPerSecond[item.getAttribute('data-node')!] = value(item);
    return {
      connection: document.getElementById('connection')?.getAttribute('data-state') ?? '',
      epoch: document.getElementById('epoch')?.textContent ?? '',
      primary: document.getElementById('primary')?.textContent ?? '',
      loadMark: document.body.dataset['testLoadMark'],
      nodes,
      putsPerSecond,
    };
  });
}

/** Waits until the page shows what `accept` asks for; a timeout says what it showed last. */
async function pageShows(page: Page, what: string, accept: (shown: Shown) => boolean, deadlineMs = PAGE_DEADLINE_MS): Promise<Shown> {
  let last: Shown | undefined;
  try {
    return await waitFor(`the page to show ${what}`, async () => {
      last = await readPage(page);
      return accept(last) ? last : undefined;
    }, deadlineMs);
  } catch (error) {
    throw new Error(`${(error as Error).message}; it showed: ${JSON.stringify(last)}`);
  }
}

/**
 * Waits until each check has held at some moment, not necessarily the same one: a rate
 * is shown for the second just ended (the legend) or the last 10 s (the table), while a
 * seq stays, and a replica's seq may reach the hub a tick after the primary's puts. A
 * timeout names the checks that never held.
 */
async function pageShowsEach(page: Page, checks: Record<string, (shown: Shown) => boolean>, deadlineMs = PAGE_DEADLINE_MS): Promise<Shown> {
  const pending = new Set(Object.keys(checks));
  let last: Shown | undefined;
  try {
    return await waitFor('the page', async () => {
      last = await readPage(page);
      for (const what of pending) if (checks[what]!(last)) pending.delete(what);
      return pending.size === 0 ? last : undefined;
    }, deadlineMs);
  } catch (error) {
    throw new Error(`${(error as Error).message}: never showed ${[...pending].join('; ')}; it showed last: ${JSON.stringify(last)}`);
  }
}

/** Everything the page reported going wrong, and every request that left the hub's origin. */
function watchPage(page: Page, origin: string): { errors: string[]; foreign: string[] } {
  const errors: string[] = [];
  const foreign: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => errors.push(`page error: ${(error as Error).message}`));
  page.on('requestfailed', (request) => errors.push(`request failed: ${request.url()} (${request.failure()?.errorText})`));
  page.on('request', (request) => {
    if (!request.url().startsWith('data:') && new URL(request.url()).origin !== origin) foreign.push(request.url());
  });
  return { errors, foreign };
}

async function screenshots(page: Page, state: string): Promise<void> {
  for (const [device, viewport] of Object.entries(VIEWPORTS)) {
    await page.setViewport(viewport);
    // The charts are drawn to the width they have: let the page take the resize first.
    await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
    const pageWidth = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(pageWidth <= viewport.width, `${state}, ${device}: the page is ${pageWidth} px wide in a ${viewport.width} px viewport (it scrolls sideways)`);
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${state}-${device}.png`) });
    if (device === 'phone') await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${state}-${device}-full.png`), fullPage: true });
  }
  await page.setViewport(VIEWPORTS.laptop);
}

async function putAll(client: KvClient, prefix: string, count: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      await client.put(`${prefix}${i}`, i);
    }
  };
  await within(`${count} puts`, Promise.all(Array.from({ length: PUTS_IN_FLIGHT_MAX }, worker)), 60_000);
}

async function launch(): Promise<Browser> {
  assert.ok(existsSync(CHROMIUM), `no chromium at ${CHROMIUM}: install it (apt-get install chromium) or name it in PBKV_CHROMIUM; PBKV_BROWSER_OPTIONAL=1 skips this test instead`);
  // CI runs as root, where chromium's sandbox cannot start; /dev/shm is small in containers.
  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, timeout: LAUNCH_DEADLINE_MS, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  return disposer.add(browser, (b) => b.close());
}

const StatusPage = suite('browser: the status page in chromium, over real processes');
StatusPage.after.each(() =>
  disposer.dispose().catch((error: unknown) => {
    console.error(`disposing what the test started failed: ${String(error)}`);
    throw error;
  }));

const name = 'loads without an error, shows three nodes and the primary, follows 2,000 puts and a kill -9 of the primary without a reload, and fetches nothing from outside the hub';
if (!existsSync(CHROMIUM) && BROWSER_OPTIONAL) {
  console.log(`browser: SKIPPED: no chromium at ${CHROMIUM} and PBKV_BROWSER_OPTIONAL=1 (apt-get install chromium runs it)`);
  StatusPage.skip(name, () => undefined);
} else {
  StatusPage(name, async () => {
    await mkdir(SCREENSHOT_DIR, { recursive: true });
    const browser = await launch();
    const cluster = await startProcessCluster(disposer);
    const pageUrl = `${cluster.hubUrl.replace(/^ws/, 'http')}/`;
    const page = await browser.newPage();
    const seen = watchPage(page, new URL(pageUrl).origin);
    const noErrors = (when: string) => {
      assert.equal(seen.errors, [], `errors ${when}`);
      assert.equal(seen.foreign, [], `requests outside the hub ${when}`);
    };

    await page.setViewport(VIEWPORTS.laptop);
    const response = await page.goto(pageUrl, { waitUntil: 'load' });
    assert.is(response?.status(), 200, `GET ${pageUrl}`);
    const loaded = await pageShows(page, 'three nodes in view, n0 primary, the stream live', (shown) =>
      shown.connection === 'live' &&
      shown.primary === 'n0' &&
      ['n0', 'n1', 'n2'].every((node) => shown.nodes[node]?.state === 'in view' && shown.nodes[node]?.seq !== undefined) &&
      Object.keys(shown.nodes).length === 3);
    assert.is(loaded.nodes['n0']!.role, 'primary');
    assert.is(loaded.nodes['n1']!.role, 'replica');
    await page.evaluate(() => {
      document.body.dataset['testLoadMark'] = 'set before the puts';
    });
    noErrors('on loading');
    await screenshots(page, '1-loaded');

    const client = cluster.client();
    await putAll(client, 'k', PUTS);
    const afterPuts = await pageShowsEach(page, {
      [`every node's seq ${PUTS} higher`]: (shown) => ['n0', 'n1', 'n2'].every((node) => (shown.nodes[node]?.seq ?? 0) >= loaded.nodes[node]!.seq! + PUTS),
      "n0's req/s up": (shown) => (shown.nodes['n0']?.requests ?? 0) > (loaded.nodes['n0']!.requests ?? 0),
      "n0's puts/s above 0": (shown) => (shown.putsPerSecond['n0'] ?? 0) > 0,
    });
    assert.is(afterPuts.loadMark, 'set before the puts', 'the page was not reloaded');
    noErrors('after the puts');
    await screenshots(page, '2-after-puts');

    const epochBefore = Number(afterPuts.epoch);
    const killedAt = performance.now();
    await cluster.kill('n0');
    const failedOver = await pageShows(page, 'a new view: a higher epoch, n1 or n2 primary, n0 dead', (shown) =>
      Number(shown.epoch) > epochBefore &&
      (shown.primary === 'n1' || shown.primary === 'n2') &&
      shown.nodes[shown.primary]?.role === 'primary' &&
      shown.nodes['n0']?.state === 'dead', FAILOVER_SHOWN_DEADLINE_MS);
    const shownAfterMs = Math.round(performance.now() - killedAt);
    console.log(`browser: kill -9 of n0 to the page showing epoch ${failedOver.epoch} with ${failedOver.primary} primary and n0 dead: ${shownAfterMs} ms`);
    assert.is(failedOver.loadMark, 'set before the puts', 'the page was not reloaded');

    // The new primary's rate takes over: the client follows it, and the page shows its puts.
    const primary = failedOver.primary;
    await putAll(client, 'after-failover-', PUTS_AFTER_FAILOVER);
    await pageShowsEach(page, {
      [`${primary}'s req/s above 0`]: (shown) => (shown.nodes[primary]?.requests ?? 0) > 0,
      [`${primary}'s puts/s above 0`]: (shown) => (shown.putsPerSecond[primary] ?? 0) > 0,
    });
    noErrors('after the failover');
    await screenshots(page, '3-after-failover');
  });
}

StatusPage.run();
