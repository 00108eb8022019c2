// The web console in a real browser (Debian's Chromium over the DevTools protocol) against the
// real doppeld, its embedded broker and devices: every page loads clean and passes axe-core; a
// device's report reaches the fleet table and the twin page without a reload; desired edits show
// the delta, then convergence; a 412 is recovered from; each explain code shows on a twin put in
// that state; commands are enqueued and cancelled; the history opens the as-of view; the events
// page pauses; jobs are created from a query, complete and are cancelled; the feed resumes after
// doppeld restarts; the token flow; nothing a device or operator wrote runs as markup; the
// keyboard reaches every control.
// Screenshots of every page go to $DOPPEL_SCREENSHOTS (docs/console/ when regenerating them).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Doppeld, axe, eventually, launchBrowser, openTab, sleep } from './harness.mjs';

const SHOTS = process.env.DOPPEL_SCREENSHOTS || '';
let gw;
let browser;
let stopSim;

before(async () => {
  // Short reconcile timings so `retrying` and `failed` happen within a test.
  gw = await new Doppeld(['--reconcile-timeout-s', '1', '--reconcile-max-attempts', '3']).start();
  // Three well-behaved devices that take 1.5 s to apply a delta (so the delta can be seen).
  stopSim = gw.sim(['--devices', '3', '--id-prefix', 'ok-', '--interval-s', '1', '--delta-delay-s', '1.5']);
  await eventually(async () => (await gw.api('/v1/fleet/count?q=' + encodeURIComponent("id LIKE 'ok-%'"))).body.count === 3,
    'the simulated devices to appear');
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (stopSim) await stopSim();
  if (gw) await gw.close();
});

async function shot(page, name, fullPage = false) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });
}

function clean(page) {
  assert.deepEqual(page.problems, [], 'no console errors, exceptions or failed requests');
}

// A device that only says what the test tells it to.
async function device(id, reported) {
  await gw.publish(id, 'status', { state: 'online', interval_s: 60 });
  await gw.publish(id, 'reported', { state: reported });
  await eventually(async () => (await gw.api(`/v1/twins/${id}`)).status === 200, `twin ${id}`);
}

test('every page loads with no error or failed request, and axe-core finds nothing serious', async () => {
  await device('pump-1', { temp: 20.5, fan: { speed: 1 } });
  for (const t of [21, 22.5, 21.5]) await gw.publish('pump-1', 'reported', { state: { temp: t } });
  await gw.api('/v1/twins/pump-1', { method: 'PATCH', body: { tags: { site: 'berlin' } } });
  await gw.api('/v1/twins/pump-1/desired', { method: 'PATCH', body: { fan: { speed: 2 } } });
  await gw.api('/v1/jobs', { method: 'POST', body: { id: 'demo', target: { query: "id LIKE 'ok-%'" }, action: { desired: { led: 'on' } } } });
  const pages = [
    ['fleet', '/console/fleet', 'table.fleet tbody tr'],
    ['twin', '/console/twins/pump-1', '.explain[data-converged]'],
    ['jobs', '/console/jobs?job=demo', 'li[data-job="demo"]'],
    ['events', '/console/events', 'table.events'],
    ['system', '/console/system', '[data-ready]'],
  ];
  for (const width of [1280, 375]) {
    for (const [name, path, ready] of pages) {
      const page = await openTab(browser, { width, height: width === 375 ? 812 : 900 });
      await page.goto(gw.base + path, { waitUntil: 'load' });
      await page.waitForSelector(ready, { timeout: 20000 });
      if (name === 'events') {
        await gw.publish('pump-1', 'reported', { state: { temp: 23 } });
        await page.waitForSelector('table.events tbody tr', { timeout: 20000 });
      }
      if (name === 'system') {
        // A few samples of /metrics, so that the plots have lines.
        await page.waitForFunction(() => document.querySelectorAll('.u-wrap').length >= 5 &&
          [...document.querySelectorAll('[data-metric]')].every((e) => e.textContent !== '…'), { timeout: 20000 });
        if (width === 1280) await sleep(5000);
      }
      await sleep(300);
      const violations = await axe(page);
      assert.deepEqual(violations, [], `${name} at ${width} px: axe-core violations`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.ok(overflow <= 1, `${name} at ${width} px is wider than the screen by ${overflow} px`);
      if (width === 1280 || name === 'fleet' || name === 'twin') {
        if (name === 'twin') await page.waitForSelector('.plots figure', { timeout: 20000 });
        await shot(page, `${name}-${width}`, name === 'twin' && width === 1280);
      }
      clean(page);
      await page.close();
    }
  }
});

// The element focused after each Tab, as "tag#id" or "tag:text".
// Empties a text field as a person would (select all, delete), so that the page hears it: a
// value set from outside fires no input event, and the next render of a controlled field would
// put the old text back under what is typed next (a device's report re-renders the twin page).
async function clearField(page, selector) {
  await page.focus(selector);
  await page.keyboard.down('Control');
  await page.keyboard.press('KeyA');
  await page.keyboard.up('Control');
  await page.keyboard.press('Backspace');
  assert.equal(await page.$eval(selector, (e) => e.value), '');
}

async function tabStops(page, count) {
  const stops = [];
  for (let i = 0; i < count; i++) {
    await page.keyboard.press('Tab');
    stops.push(await page.evaluate(() => {
      const e = document.activeElement;
      return `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : `:${(e.textContent || '').trim().slice(0, 40)}`}`;
    }));
  }
  return stops;
}

test('the keyboard reaches the query, the counts, the twins and the desired editor', async () => {
  const page = await openTab(browser);
  await page.goto(`${gw.base}/console/fleet?q=${encodeURIComponent("id = 'pump-1'")}`, { waitUntil: 'load' });
  await page.waitForSelector('tr[data-twin="pump-1"]', { timeout: 20000 });
  await page.waitForSelector('.count-group .total', { timeout: 20000 });
  const stops = await tabStops(page, 30);
  for (const want of ['a:Skip to content', 'a:Fleet', 'a:Jobs', 'input#q', 'button:Run', 'input#fields', 'a:pump-1']) {
    assert.ok(stops.includes(want), `Tab reaches ${want} (stops: ${stops.join(', ')})`);
  }
  assert.ok(stops.some((s) => /^a:1\s*fresh/.test(s)), `Tab reaches a count (stops: ${stops.join(', ')})`);
  // Enter on the twin's link opens its page; Tab then reaches the editor and its button.
  while (await page.evaluate(() => document.activeElement.textContent.trim()) !== 'pump-1') await page.keyboard.press('Tab');
  await page.keyboard.press('Enter');
  await page.waitForSelector('#desired-patch', { timeout: 20000 });
  const twinStops = await tabStops(page, 40);
  for (const want of ['textarea#desired-patch', 'button:Send patch', 'input#tags-patch', 'input#cmd-name']) {
    assert.ok(twinStops.includes(want), `Tab reaches ${want} (stops: ${twinStops.join(', ')})`);
  }
  clean(page);
  await page.close();
});

test('the console is served compressed, with an ETag and a strict security policy', async () => {
  const res = await fetch(gw.base + '/', { headers: { 'Accept-Encoding': 'gzip' } });
  assert.equal(res.status, 200);
  const csp = res.headers.get('content-security-policy');
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /connect-src 'self'/);
  assert.match(csp, /frame-ancestors 'none'/);
  assert.doesNotMatch(csp, /unsafe-inline/);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  const etag = res.headers.get('etag');
  assert.ok(etag);
  const again = await fetch(gw.base + '/console/twins/x', { headers: { 'If-None-Match': etag } });
  assert.equal(again.status, 304);
  const app = await fetch(gw.base + '/console/assets/app.js', { headers: { 'Accept-Encoding': 'gzip' } });
  assert.equal(app.headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.equal(app.headers.get('content-encoding'), 'gzip');
  assert.equal((await fetch(gw.base + '/console/nowhere')).status, 404);
});

test('a device report appears in the fleet table and on the twin page without a reload', async () => {
  await device('live-1', { temp: 10 });
  const page = await openTab(browser);
  await page.goto(`${gw.base}/console/fleet?q=${encodeURIComponent("id = 'live-1'")}&fields=reported.temp`, { waitUntil: 'load' });
  const cell = 'tr[data-twin="live-1"] td[data-field="reported.temp"]';
  await page.waitForSelector(cell, { timeout: 20000 });
  assert.equal(await page.$eval(cell, (e) => e.textContent), '10');
  await page.evaluate(() => { window.notReloaded = true; });
  await page.waitForSelector('[data-feed="live"]', { timeout: 20000 });
  await gw.publish('live-1', 'reported', { state: { temp: 11.25 } });
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === '11.25', { timeout: 20000 }, cell);
  assert.equal(await page.evaluate(() => window.notReloaded), true, 'the page was not reloaded');

  await page.click('tr[data-twin="live-1"] th a');
  await page.waitForSelector('tr[data-path="temp"]', { timeout: 20000 });
  await page.waitForSelector('[data-feed="live"]', { timeout: 20000 });
  await gw.publish('live-1', 'reported', { state: { temp: 12.5 } });
  await page.waitForFunction(() => document.querySelector('tr[data-path="temp"] td:nth-of-type(2)')?.textContent === '12.5', { timeout: 20000 });
  assert.equal(await page.evaluate(() => window.notReloaded), true, 'navigating to the twin did not reload');
  // The history and its plot follow too.
  await page.waitForFunction(() => [...document.querySelectorAll('.plots figcaption')].some((f) => f.textContent.startsWith('reported.temp')), { timeout: 20000 });
  clean(page);
  await page.close();
});

test('commands are enqueued and cancelled, the history opens the twin as of a version, the feed pauses', async () => {
  await gw.api('/v1/twins/ghost-2', { method: 'PUT', body: {} });
  const page = await openTab(browser);
  await page.goto(`${gw.base}/console/twins/ghost-2`, { waitUntil: 'load' });
  await page.waitForSelector('#cmd-name', { timeout: 20000 });
  await page.type('#cmd-name', 'reboot');
  await page.click('#commands-h ~ form button[type="submit"]');
  await page.waitForSelector('[data-command] [data-status="queued"]', { timeout: 20000 });
  await page.click('[data-command] button');
  await page.waitForSelector('[data-command] [data-status="cancelled"]', { timeout: 20000 });
  const cmds = (await gw.api('/v1/twins/ghost-2/commands')).body.items;
  assert.equal(cmds.length, 1);
  assert.equal(cmds[0].status, 'cancelled');

  // live-1 reported temp 10, then 11.25, then 12.5: the version of the 11.25 report, as of then.
  await page.goto(`${gw.base}/console/twins/live-1`, { waitUntil: 'load' });
  await page.waitForSelector('table.history tbody tr', { timeout: 20000 });
  const link = await page.$$eval('table.history tbody tr', (rows) => {
    const row = rows.find((r) => r.textContent.includes('"temp":11.25'));
    return row ? row.querySelector('a').getAttribute('href') : null;
  });
  assert.ok(link, 'the history lists the 11.25 report');
  await page.click(`a[href="${link}"]`);
  await page.waitForSelector('.banner', { timeout: 20000 });
  await page.waitForFunction(() => document.querySelector('tr[data-path="temp"] td:nth-of-type(2)')?.textContent === '11.25', { timeout: 20000 });
  assert.equal(await page.$('#desired-patch'), null, 'no editing as of a past version');

  // Paused, the events page holds new events back and says how many.
  await page.goto(`${gw.base}/console/events?twin=live-1`, { waitUntil: 'load' });
  await page.waitForSelector('[data-feed="live"]', { timeout: 20000 });
  await page.click('button[aria-pressed]');
  await gw.publish('live-1', 'reported', { state: { temp: 13.75 } });
  await page.waitForFunction(() => /Paused: 1 new event/.test(document.querySelector('main').textContent), { timeout: 20000 });
  assert.ok(!(await page.evaluate(() => document.querySelector('main').textContent.includes('13.75'))));
  await page.click('button[aria-pressed]');
  await gw.publish('live-1', 'reported', { state: { temp: 14.5 } });
  await page.waitForFunction(() => document.querySelector('main').textContent.includes('14.5'), { timeout: 20000 });
  clean(page);
  await page.close();
});

test('editing desired shows the delta, then the device converging', async () => {
  const page = await openTab(browser);
  await page.goto(`${gw.base}/console/twins/ok-000000`, { waitUntil: 'load' });
  await page.waitForSelector('#desired-patch', { timeout: 20000 });
  await page.waitForSelector('[data-feed="live"]', { timeout: 20000 });
  await clearField(page, '#desired-patch');
  await page.type('#desired-patch', '{"mode": "eco"}');
  await page.click('#edit-h ~ .actions button');
  await page.waitForSelector('tr.in-delta[data-path="mode"]', { timeout: 20000 });
  await page.waitForSelector('.explain[data-converged="false"]', { timeout: 20000 });
  // The simulated device applies it 1.5 s later and reports it back.
  await page.waitForSelector('tr[data-path="mode"]:not(.in-delta)', { timeout: 20000 });
  await page.waitForSelector('.explain[data-converged="true"]', { timeout: 20000 });
  assert.equal(await page.$eval('tr[data-path="mode"] td:nth-of-type(2)', (e) => e.textContent), 'eco');
  clean(page);
  await page.close();
});

test('a 412 from a concurrent change shows the newer desired and reapplies the edit on it', async () => {
  await device('race-1', { a: 0 });
  await gw.api('/v1/twins/race-1/desired', { method: 'PATCH', body: { a: 1 } });
  const page = await openTab(browser);
  await page.goto(`${gw.base}/console/twins/race-1`, { waitUntil: 'load' });
  await page.waitForSelector('#desired-patch', { timeout: 20000 });
  // Another operator changes desired just before this page's patch reaches the server.
  await page.setRequestInterception(true);
  let raced = false;
  page.on('request', async (r) => {
    if (r.method() === 'PATCH' && r.url().endsWith('/v1/twins/race-1/desired') && !raced) {
      raced = true;
      await gw.api('/v1/twins/race-1/desired', { method: 'PATCH', body: { b: 2 } });
    }
    r.continue();
  });
  page.expect(412, '/v1/twins/race-1/desired');
  await clearField(page, '#desired-patch');
  await page.type('#desired-patch', '{"c": 3}');
  await page.click('#edit-h ~ .actions button');
  await page.waitForSelector('.conflict', { timeout: 20000 });
  const shown = await page.$eval('.conflict pre', (e) => JSON.parse(e.textContent));
  assert.deepEqual(shown, { a: 1, b: 2 }, 'the conflict shows the newer desired');
  await page.click('.conflict button.primary');
  await page.waitForFunction(() => !document.querySelector('.conflict'), { timeout: 20000 });
  const desired = (await gw.api('/v1/twins/race-1/desired')).body;
  assert.deepEqual(desired, { a: 1, b: 2, c: 3 }, 'the edit was reapplied on top of the newer desired');
  await page.waitForSelector('tr[data-path="c"]', { timeout: 20000 });
  clean(page);
  await page.close();
});

test('each explain code shows on a twin put into that state', async () => {
  // ghost-1: provisioned with desired, never connects, stale after 1 s, a command waits for it,
  // and a message the gateway refused.
  await gw.api('/v1/twins/ghost-1', { method: 'PUT', body: { desired: { mode: 'eco' }, stale_after_s: 1 } });
  await gw.api('/v1/twins/ghost-1/commands', { method: 'POST', body: { name: 'reboot' } });
  await gw.publish('ghost-1', 'reported', '{not json');
  // stub-1: online, gets the delta and reports the old value (not applied), is re-sent the
  // delta (retrying) and, after 3 sends, fails.
  await device('stub-1', { fan: { speed: 1 } });
  await gw.api('/v1/twins/stub-1/desired', { method: 'PATCH', body: { fan: { speed: 2 } } });
  await gw.publish('stub-1', 'reported', { state: { fan: { speed: 1 } } });

  const page = await openTab(browser);
  await page.goto(`${gw.base}/console/twins/stub-1`, { waitUntil: 'load' });
  await page.waitForSelector('li[data-code="not_applied"]', { timeout: 20000 });
  await page.waitForSelector('li[data-code="retrying"]', { timeout: 20000 });
  await shot(page, 'explain-1280');
  await page.waitForSelector('li[data-code="failed"]', { timeout: 30000 });
  assert.match(await page.$eval('li[data-code="failed"]', (e) => e.textContent), /failed after 3/);

  await page.goto(`${gw.base}/console/twins/ghost-1`, { waitUntil: 'load' });
  for (const code of ['offline', 'stale', 'command_pending', 'device_error']) {
    await page.waitForSelector(`li[data-code="${code}"]`, { timeout: 20000 });
  }
  assert.match(await page.$eval('li[data-code="device_error"]', (e) => e.textContent), /malformed/);
  clean(page);
  await page.close();
});

test('a job created from a fleet query completes; another is cancelled', async () => {
  const page = await openTab(browser);
  await page.goto(`${gw.base}/console/fleet?q=${encodeURIComponent("id LIKE 'ok-%'")}`, { waitUntil: 'load' });
  await page.waitForSelector('tr[data-twin="ok-000002"]', { timeout: 20000 });
  await Promise.all([page.waitForSelector('#job-q'), page.click('.toolbar a.button')]);
  assert.equal(await page.$eval('#job-q', (e) => e.value), "id LIKE 'ok-%'");
  await page.waitForSelector('#job-count[data-count="3"]', { timeout: 20000 });
  await clearField(page, '#job-patch');
  await page.type('#job-patch', '{"level": 7}');
  await page.click('#new-job-h ~ form button.primary');
  await page.waitForFunction(() => new URLSearchParams(location.search).get('job'), { timeout: 20000 });
  const id = await page.evaluate(() => new URLSearchParams(location.search).get('job'));
  await page.waitForSelector(`li[data-job="${id}"][data-status="completed"]`, { timeout: 30000 });
  assert.match(await page.$eval(`li[data-job="${id}"] progress`, (e) => `${e.value}/${e.max}`), /^3\/3$/);
  await page.waitForSelector('table[aria-label="Executions"] tbody tr', { timeout: 20000 });

  // A job on twins that never converge (ghost-1 is offline) runs until it is cancelled.
  await page.goto(`${gw.base}/console/jobs?new=1&q=${encodeURIComponent("id = 'ghost-1'")}`, { waitUntil: 'load' });
  await page.waitForSelector('#job-count[data-count="1"]', { timeout: 20000 });
  await page.click('#new-job-h ~ form button.primary');
  await page.waitForFunction(() => new URLSearchParams(location.search).get('job'), { timeout: 20000 });
  const second = await page.evaluate(() => new URLSearchParams(location.search).get('job'));
  await page.waitForSelector(`li[data-job="${second}"][data-status="running"] .job-head button`, { timeout: 20000 });
  await page.click(`li[data-job="${second}"] .job-head button`);
  await page.waitForSelector(`li[data-job="${second}"][data-status="cancelled"]`, { timeout: 20000 });
  assert.equal((await gw.api(`/v1/jobs/${second}`)).body.status, 'cancelled');
  clean(page);
  await page.close();
});

test('nothing a device or an operator wrote runs as markup', async () => {
  const evil = '<img src=x onerror=window.injected=1>';
  await gw.api('/v1/twins/xss-1', { method: 'PUT', body: { tags: { [evil]: evil } } });
  await gw.publish('xss-1', 'reported', { state: { [evil.replace(/[<>"= ]/g, '_')]: evil, note: evil } });
  await gw.api('/v1/twins/xss-1/commands', { method: 'POST', body: { name: evil } });
  await gw.publish('xss-1', 'reported', evil);
  const page = await openTab(browser);
  for (const path of [`/console/fleet?q=${encodeURIComponent("id = 'xss-1'")}&fields=reported.note`, '/console/twins/xss-1', '/console/events']) {
    await page.goto(gw.base + path, { waitUntil: 'load' });
    if (path.includes('events')) {
      await page.waitForSelector('[data-feed="live"]', { timeout: 20000 });
      await gw.publish('xss-1', 'reported', { state: { note: `${evil} again` } });
    }
    await page.waitForFunction((e) => document.querySelector('main').textContent.includes(e), { timeout: 20000 }, evil);
    assert.equal(await page.evaluate(() => document.querySelectorAll('main img').length), 0, `${path}: no <img> made`);
    assert.equal(await page.evaluate(() => window.injected), undefined, `${path}: nothing ran`);
  }
  clean(page);
  await page.close();
});

test('the feed resumes by itself after doppeld restarts, missing nothing', async () => {
  const page = await openTab(browser);
  page.allowFeedDrops = true;
  await page.goto(`${gw.base}/console/events?twin=live-1`, { waitUntil: 'load' });
  await page.waitForSelector('[data-feed="live"]', { timeout: 20000 });
  await gw.publish('live-1', 'reported', { state: { temp: 30 } });
  await page.waitForFunction(() => document.querySelector('main').textContent.includes('"temp":30'), { timeout: 20000 });
  await gw.stop();
  await page.waitForSelector('[data-feed="disconnected"]', { timeout: 20000 });
  await gw.start();
  // Reported while the console is still away: it must see this when it comes back.
  await gw.publish('live-1', 'reported', { state: { temp: 31 } });
  await page.waitForSelector('[data-feed="live"]', { timeout: 30000 });
  await page.waitForFunction(() => document.querySelector('main').textContent.includes('"temp":31'), { timeout: 20000 });
  const seqs = await page.$$eval('table.events tbody tr', (rows) => rows.map((r) => Number(r.dataset.seq)));
  assert.equal(new Set(seqs).size, seqs.length, 'no event shown twice');
  page.problems.splice(0, page.problems.length, ...page.problems.filter((p) => !p.includes('/v1/events') && !p.includes('ERR_CONNECTION_REFUSED')));
  clean(page);
  await page.close();
});

test('with --api-token the console asks for a token and keeps it in the tab only', async () => {
  const secured = await new Doppeld(['--api-token', 'ops=s3cret-console-token']).start();
  try {
    const page = await openTab(browser);
    page.allowStatus.add(401);  // every call before the token is given
    await page.goto(`${secured.base}/console/fleet`, { waitUntil: 'load' });
    await page.waitForSelector('#token-input', { timeout: 20000 });
    await page.type('#token-input', 's3cret-console-token');
    await page.keyboard.press('Enter');
    await page.waitForSelector('.count-group .total', { timeout: 20000 });
    await page.waitForSelector('[data-feed="live"]', { timeout: 20000 });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('doppel.token')), 's3cret-console-token');
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.ok(!page.requestUrls.some((u) => u.includes('s3cret')), 'the token is never in a URL');
    // It stays for this tab: a reload needs no prompt.
    await page.reload({ waitUntil: 'load' });
    await page.waitForSelector('.count-group .total', { timeout: 20000 });
    assert.equal(await page.$('#token-input'), null);
    clean(page);
    await page.close();
  } finally {
    await secured.close();
  }
});
