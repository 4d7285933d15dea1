// Drives the hub's /dashboard in Debian's headless Chromium (playwright-core, no browser
// download). Run by crates/m2m-cli/tests/dashboard_browser.rs, which starts the hub and
// the agents and answers this script's requests on stdin:
//
//   this script → stdout: {"need":"join"} | {"need":"status"} | {"need":"leave"}
//   the test    → stdin:  {"done":"join","id":…} | {"done":"status"} | {"done":"leave"}
//
// Last line on stdout: {"result":"ok",…figures} or {"result":"fail","error":…}; exit 0
// only on ok. Waits are web-first (waitForFunction on the page's state); the timeouts
// only keep a broken page from hanging the test.
//
// Environment: HUB (http://127.0.0.1:PORT), OUT_DIR (screenshot), EXPECT (JSON: total
// agents, the XSS agent's id, a capability and how many have it, a name to search for).
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const HUB = process.env.HUB;
const OUT_DIR = process.env.OUT_DIR;
const EXPECT = JSON.parse(process.env.EXPECT || '{}');
const WAIT = { timeout: 30000, polling: 'raf' };

const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const lines = createInterface({ input: process.stdin });
const replies = [];
let waiting = null;
lines.on('line', (l) => {
  if (waiting) {
    const w = waiting;
    waiting = null;
    w(JSON.parse(l));
  } else replies.push(JSON.parse(l));
});
const ask = (need) =>
  new Promise((resolve) => {
    say({ need });
    if (replies.length) resolve(replies.shift());
    else waiting = resolve;
  });

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

/** Waits until the table has the row of `id`, with `status` if given. */
function rowShows(page, id, status) {
  return page.waitForFunction(
    ([id, status]) => {
      const tr = document.querySelector(`#rows tr[data-id="${id}"]`);
      return !!tr && (!status || tr.dataset.status === status);
    },
    [id, status],
    WAIT,
  );
}

const profile = mkdtempSync(join(tmpdir(), 'm2m-dashboard-chromium-'));
let browser;
const figures = {};
try {
  try {
    // A fresh profile directory of our own (playwright's way of passing --user-data-dir).
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1400, height: 900 },
    });
  } catch (e) {
    throw new Error('could not launch /usr/bin/chromium: ' + e.message);
  }
  const page = browser.pages()[0] || (await browser.newPage());
  const dialogs = [];
  const pageErrors = [];
  const cspViolations = [];
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  // Any payload that ran would set this flag (the XSS agent's metadata tries to).
  await page.addInitScript(() => {
    window.__pwned = false;
  });

  const t0 = Date.now();
  const resp = await page.goto(HUB + '/dashboard', { waitUntil: 'domcontentloaded' });
  check(resp && resp.status() === 200, 'GET /dashboard: ' + (resp && resp.status()));
  const csp = resp.headers()['content-security-policy'] || '';
  check(csp.includes("default-src 'self'") && csp.includes("frame-ancestors 'none'"), 'CSP: ' + csp);
  check(!csp.includes('unsafe-inline'), 'CSP allows inline code');

  // Lists the agents.
  await page.waitForFunction(
    (n) => document.querySelector('#count') && document.querySelector('#count').textContent === n.toLocaleString('en') + ' agents',
    EXPECT.total,
    WAIT,
  );
  figures.interactiveMs = Date.now() - t0;
  figures.firstRenderMs = Math.round(await page.evaluate(() => window.__m2mDashboard.firstRenderMs));
  const rows = await page.locator('#rows tr').count();
  check(rows === Math.min(50, EXPECT.total), 'rows on the first page: ' + rows);
  await page.waitForFunction(() => window.__m2mDashboard.streamOpen, null, WAIT);
  // The header shows the figures the hub pushes.
  await page.waitForFunction(
    () => !document.querySelector('[data-figure="online"]').hidden,
    null,
    WAIT,
  );
  check(
    await page.locator('[data-figure="mailboxDepth"]').isHidden(),
    'a figure the hub does not send is hidden',
  );
  await page.waitForFunction(
    () => !document.querySelector('[data-figure="relayBytesPerSec"]').hidden,
    null,
    WAIT,
  );

  // Again in the running browser (a person's browser is already open): the first load
  // above includes starting Chromium's renderer.
  const t1 = Date.now();
  await page.reload({ waitUntil: 'domcontentloaded' });
  await page.waitForFunction(
    (n) => document.querySelector('#count') && document.querySelector('#count').textContent === n.toLocaleString('en') + ' agents',
    EXPECT.total,
    WAIT,
  );
  figures.reloadInteractiveMs = Date.now() - t1;
  await page.waitForFunction(() => window.__m2mDashboard.streamOpen, null, WAIT);

  // Updates when an agent joins (the page is on the first page, filtered to the
  // joiner's capability so that it is on screen whatever the total).
  await page.fill('#capability', 'joiner');
  await page.waitForFunction(() => document.querySelector('#count').textContent === '0 agents', null, WAIT);
  let done = await ask('join');
  let asked = Date.now();
  const joiner = done.id;
  await rowShows(page, joiner);
  figures.joinSeenMs = Date.now() - asked;

  // … changes status …
  done = await ask('status');
  asked = Date.now();
  await rowShows(page, joiner, 'busy');
  figures.statusSeenMs = Date.now() - asked;

  // Status filter.
  await page.fill('#capability', '');
  await page.selectOption('#status', 'busy');
  await page.waitForFunction(
    (id) => {
      const trs = document.querySelectorAll('#rows tr');
      return trs.length === 1 && trs[0].dataset.id === id;
    },
    joiner,
    WAIT,
  );

  // … and leaves (shown offline; gone under an "online" filter).
  await page.selectOption('#status', '');
  await page.fill('#capability', 'joiner');
  done = await ask('leave');
  asked = Date.now();
  await rowShows(page, joiner, 'offline');
  figures.leaveSeenMs = Date.now() - asked;
  await page.selectOption('#status', 'online');
  await page.waitForFunction(() => document.querySelector('#count').textContent === '0 agents', null, WAIT);
  await page.selectOption('#status', '');

  // Search: a capability, and free text over metadata.
  await page.fill('#capability', EXPECT.capability);
  await page.waitForFunction(
    (n) => document.querySelector('#count').textContent === n + ' agents',
    EXPECT.capabilityCount,
    WAIT,
  );
  const tagged = await page.$$eval('#rows tr', (trs) =>
    trs.every((tr) => [...tr.querySelectorAll('.tag')].some((t) => t.textContent === 'translate')),
  );
  check(tagged, 'the capability filter let through an agent without it');
  await page.fill('#capability', '');
  await page.fill('#q', EXPECT.name);
  await page.waitForFunction(() => document.querySelector('#count').textContent === '1 agents', null, WAIT);

  // The XSS agent: its payloads show as text, run nowhere, and create no elements.
  await page.fill('#q', '');
  await page.fill('#q', EXPECT.xssId);
  await rowShows(page, EXPECT.xssId);
  const rowText = await page.locator(`#rows tr[data-id="${EXPECT.xssId}"]`).innerText();
  check(rowText.includes('<img src=x onerror='), 'the payload is not shown as text: ' + rowText);
  check(rowText.includes('<script>'), 'the script payload is not shown as text');
  await page.click(`#rows tr[data-id="${EXPECT.xssId}"]`);
  await page.waitForFunction(() => !document.querySelector('#detail').hidden, null, WAIT);
  const record = await page.locator('#detail-json').innerText();
  check(record.includes('javascript:'), 'the record JSON is not shown');
  const fp = await page.locator('#detail-facts').innerText();
  check(/fingerprint\s+[0-9a-f]{4}( [0-9a-f]{4}){15}/.test(fp), 'no identity fingerprint: ' + fp);
  check(fp.includes('verified 2.1 identity'), 'the identity is not shown as verified');
  const injected = await page.evaluate(() => ({
    pwned: window.__pwned,
    imgs: document.querySelectorAll('body img').length,
    scripts: document.querySelectorAll('body script').length,
    links: document.querySelectorAll('a[href]').length,
    handlers: [...document.querySelectorAll('body *')].filter((e) =>
      [...e.attributes].some((a) => a.name.startsWith('on')),
    ).length,
  }));
  check(injected.pwned === false, 'a payload ran');
  check(dialogs.length === 0, 'a dialog opened: ' + dialogs.join(' | '));
  check(
    injected.imgs === 0 && injected.scripts === 0 && injected.links === 0 && injected.handlers === 0,
    'metadata became markup: ' + JSON.stringify(injected),
  );
  check(pageErrors.length === 0, 'page errors: ' + pageErrors.join(' | '));
  check(cspViolations.length === 0, 'CSP violations: ' + cspViolations.join(' | '));

  // A screenshot of the full table (filters cleared).
  await page.click('#detail-close');
  await page.fill('#q', '');
  await page.waitForFunction(
    (n) => document.querySelector('#count').textContent === n.toLocaleString('en') + ' agents',
    EXPECT.total + 1,
    WAIT,
  );
  const shot = join(OUT_DIR, 'dashboard.png');
  await page.screenshot({ path: shot });
  figures.screenshot = shot;
  say({ result: 'ok', ...figures });
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
  process.exit(0);
} catch (e) {
  say({ result: 'fail', error: String(e && e.stack ? e.stack : e), ...figures });
  if (browser) await browser.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  process.exit(1);
}
