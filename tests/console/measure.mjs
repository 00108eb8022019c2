// Measures the console in Chromium against a running doppeld (doppel-bench's `console` scenario
// runs it; figures, never assertions): the time from opening the fleet page to its first table
// and to its counts, the bytes on the wire of a first load (compressed), and, with devices
// reporting, the time from a report (the event's ts, the gateway's clock) to the frame that shows
// it in the fleet table (the browser's clock: the same machine).
//   node tests/console/measure.mjs --url http://127.0.0.1:8080 [--live-query "id LIKE 'live-%'"]
//        [--live-seconds 20] [--loads 5]
// Prints one JSON object on stdout; progress on stderr.
import puppeteer from 'puppeteer-core';
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({
  options: {
    url: { type: 'string' },
    'live-query': { type: 'string', default: "id LIKE 'live-%'" },
    'live-seconds': { type: 'string', default: '20' },
    loads: { type: 'string', default: '5' },
    chromium: { type: 'string', default: process.env.CHROMIUM_PATH || '/usr/bin/chromium' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (o.help || !o.url) {
  process.stderr.write('usage: node measure.mjs --url http://127.0.0.1:PORT [--live-query Q] [--live-seconds S] [--loads N]\n');
  process.exit(o.help ? 0 : 2);
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const browser = await puppeteer.launch({
  executablePath: o.chromium,
  args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-dev-shm-usage'],
});
const out = {};
try {
  // First loads: a fresh profile each time (nothing cached), the fleet page with no query.
  const loads = [];
  for (let i = 0; i < Number(o.loads); i++) {
    const context = await browser.createBrowserContext();
    const page = await context.newPage();
    await page.setViewport({ width: 1280, height: 900 });
    const cdp = await page.createCDPSession();
    await cdp.send('Network.enable');
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    const urls = new Map();
    let consoleBytes = 0;
    let dataBytes = 0;
    cdp.on('Network.responseReceived', (e) => urls.set(e.requestId, e.response.url));
    cdp.on('Network.loadingFinished', (e) => {
      const path = new URL(urls.get(e.requestId) || o.url).pathname;
      if (path === '/' || path.startsWith('/console')) consoleBytes += e.encodedDataLength;
      else if (!path.startsWith('/v1/events')) dataBytes += e.encodedDataLength;
    });
    await page.goto(`${o.url}/`, { waitUntil: 'domcontentloaded' });
    const table = await page.waitForFunction(() => document.querySelector('table.fleet tbody tr') && performance.now(),
      { polling: 'raf', timeout: 120000 });
    const counts = await page.waitForFunction(() => document.querySelectorAll('.count-group .total').length === 3 && performance.now(),
      { polling: 'raf', timeout: 120000 });
    await page.waitForNetworkIdle({ idleTime: 300, timeout: 30000 }).catch(() => {});
    loads.push({ table_ms: await table.jsonValue(), counts_ms: await counts.jsonValue(), console_bytes: consoleBytes, data_bytes: dataBytes });
    process.stderr.write(`  load ${i + 1}: table ${Math.round(loads[i].table_ms)} ms, counts ${Math.round(loads[i].counts_ms)} ms, ${consoleBytes} console bytes\n`);
    await context.close();
  }
  const sortedBy = (k) => loads.map((l) => l[k]).sort((a, b) => a - b);
  out.first_table_ms = { first: loads[0].table_ms, median: percentile(sortedBy('table_ms'), 50) };
  out.first_counts_ms = { first: loads[0].counts_ms, median: percentile(sortedBy('counts_ms'), 50) };
  out.first_load_console_bytes = loads[0].console_bytes;
  out.first_load_data_bytes = loads[0].data_bytes;

  // Report -> DOM with the live twins on screen.
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 900 });
  await page.goto(`${o.url}/console/fleet?q=${encodeURIComponent(o['live-query'])}&fields=reported.temperature`, { waitUntil: 'load' });
  await page.waitForSelector('[data-feed="live"]', { timeout: 30000 });
  await page.waitForSelector('table.fleet tbody tr', { timeout: 30000 });
  const rows = await page.$$eval('table.fleet tbody tr', (r) => r.length);
  await page.evaluate(() => { window.doppelLatency = []; });
  await new Promise((r) => setTimeout(r, Number(o['live-seconds']) * 1000));
  const samples = (await page.evaluate(() => window.doppelLatency)).sort((a, b) => a - b);
  out.report_to_dom = {
    twins_on_screen: rows,
    updates: samples.length,
    updates_per_s: samples.length / Number(o['live-seconds']),
    p50_ms: percentile(samples, 50),
    p99_ms: percentile(samples, 99),
    max_ms: samples.length ? samples[samples.length - 1] : null,
  };
  process.stderr.write(`  report -> DOM: ${samples.length} updates, p50 ${out.report_to_dom.p50_ms} ms, p99 ${out.report_to_dom.p99_ms} ms\n`);
  out.ok = samples.length > 0;
} catch (e) {
  out.ok = false;
  out.error = String(e && e.stack ? e.stack : e);
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(out)}\n`);
