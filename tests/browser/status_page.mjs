// Loads the status page (`GET /` of the admin API) in headless Chromium through
// puppeteer-core, as an operator would: enters the token when the page asks,
// waits until it shows the pipeline, and prints one JSON object of what it shows
// (tests/tests/status_page.rs checks it). Also takes the docs' screenshot
// (scripts/status-screenshot).
//
//   node tests/browser/status_page.mjs --tools "$(scripts/puppeteer)" --chromium "$(scripts/chromium)" \
//     --url http://127.0.0.1:9464/ [--token T [--wrong-token W]] [--partitions N] [--points P] [--renders R]
//     [--screenshot FILE] [--width 1280] [--height 900] [--timeout-ms 60000]
//
// It waits until the page shows N partitions (each lag chart with P points) and
// has rendered R times (it renders anew at each refresh); with --wrong-token it
// enters that one first and waits to be asked again.
import { createRequire } from 'node:module';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    tools: { type: 'string' },
    chromium: { type: 'string' },
    url: { type: 'string' },
    token: { type: 'string' },
    'wrong-token': { type: 'string' },
    partitions: { type: 'string', default: '1' },
    points: { type: 'string', default: '0' },
    renders: { type: 'string', default: '2' },
    screenshot: { type: 'string' },
    width: { type: 'string', default: '1280' },
    height: { type: 'string', default: '900' },
    'timeout-ms': { type: 'string', default: '60000' },
  },
});
const require = createRequire(path.join(a.tools, 'package.json'));
const puppeteer = require('puppeteer-core');
const timeout = Number(a['timeout-ms']);

const browser = await puppeteer.launch({
  executablePath: a.chromium,
  headless: true,
  // --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-extensions'],
});
const out = { requests: [], authorized: [], console: [], errors: [] };
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(timeout);
  await page.setViewport({ width: Number(a.width), height: Number(a.height) });
  page.on('request', (r) => {
    out.requests.push(r.url());
    if (r.headers().authorization) out.authorized.push(new URL(r.url()).pathname);
  });
  page.on('console', (m) => out.console.push(m.text()));
  page.on('pageerror', (e) => out.errors.push(String(e)));
  const started = Date.now();
  const response = await page.goto(a.url, { waitUntil: 'domcontentloaded' });
  out.pageStatus = response.status();
  out.csp = response.headers()['content-security-policy'] || null;

  const login = async (token) => {
    await page.waitForSelector('#login:not([hidden])');
    await page.type('#token', token);
    await page.click('#login button');
  };
  if (a.token != null) {
    if (a['wrong-token'] != null) {
      await login(a['wrong-token']);
      await page.waitForFunction(() => !document.getElementById('login').hidden && /refused/.test(document.getElementById('login-why').textContent));
      out.refusedShown = await page.$eval('#login-why', (e) => e.textContent);
    } else {
      out.askedFor = await page.$eval('#login-why', (e) => e.textContent).catch(() => null);
    }
    await login(a.token);
  }
  // Shown: the partitions, each with enough points, `renders` times (each refresh renders anew).
  const shown = (n, points, renders) => {
    const rows = document.querySelectorAll('#partitions tbody tr');
    return Number(document.body.dataset.renders || 0) >= renders && rows.length >= n &&
      [...rows].every((tr) => (tr.querySelector('svg.lag path')?.getAttribute('d').match(/[ML]/g) || []).length >= points);
  };
  await page.waitForFunction(shown, {}, Number(a.partitions), Number(a.points), Number(a.renders));
  out.shownAfterMs = Date.now() - started;

  const read = () => page.evaluate(() => {
    const cells = (sel, f) => [...document.querySelectorAll(sel)].map(f);
    const text = (root, sel) => root.querySelector(sel)?.textContent ?? null;
    return {
      href: location.href,
      title: document.title,
      ready: document.getElementById('ready').textContent,
      readyClass: document.getElementById('ready').className,
      generation: document.getElementById('generation').textContent,
      loginHidden: document.getElementById('login').hidden,
      chain: cells('#chain tbody tr', (tr) => ({ name: text(tr, '.plugin'), version: text(tr, '.version') })),
      partitions: cells('#partitions tbody tr', (tr) => ({
        topic: tr.dataset.topic,
        partition: Number(tr.dataset.partition),
        lag: text(tr, '.lag'),
        rate: text(tr, '.rate'),
        charts: tr.querySelectorAll('svg.spark').length,
      })),
      failures: cells('#failures tbody tr', (tr) => ({ kind: tr.dataset.kind, deadLettered: text(tr, '.dead'), skipped: text(tr, '.skipped') })),
      records: Object.fromEntries(cells('#records dd', (dd) => [dd.className.replace('n ', ''), dd.textContent])),
      rollout: document.getElementById('rollout').textContent,
      samples: cells('#rollout table.samples tbody tr', (tr) => ({ live: text(tr, 'pre.live'), candidate: text(tr, 'pre.candidate') })),
      history: cells('#history tbody tr', (tr) => tr.textContent),
      renders: Number(document.body.dataset.renders),
      renderMs: Number(document.body.dataset.renderMs),
      worstRenderMs: Number(document.body.dataset.worstRenderMs),
      statusBytes: Number(document.body.dataset.statusBytes),
      tokenKept: sessionStorage.getItem('sluice.admin.token') != null,
      text: document.body.innerText,
    };
  });
  Object.assign(out, await read());
  if (a.screenshot) await page.screenshot({ path: a.screenshot, fullPage: true });
  if (a.token != null) {
    // A reload keeps the token (session storage): the page shows without asking again.
    await page.reload({ waitUntil: 'domcontentloaded' });
    await page.waitForFunction(shown, {}, Number(a.partitions), 0, 1);
    out.afterReload = await page.evaluate(() => ({ loginHidden: document.getElementById('login').hidden, href: location.href }));
  }
} catch (e) {
  out.failed = String(e.stack || e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
