// What the console's browser tests stand on: the real doppeld (with its embedded Mosquitto) on
// free loopback ports, devices (doppel-sim, or single messages with mosquitto_pub), and Debian's
// Chromium driven over the DevTools protocol with puppeteer-core. Every wait is bounded and
// detects a hang; none is a speed test.
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import puppeteer from 'puppeteer-core';

const require = createRequire(import.meta.url);
export const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export const DOPPELD = process.env.DOPPELD_PATH;
export const DOPPEL_SIM = process.env.DOPPEL_SIM_PATH;
export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
if (!DOPPELD || !DOPPEL_SIM) throw new Error('DOPPELD_PATH and DOPPEL_SIM_PATH must name the built binaries (ctest sets them)');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// Polls `fn` until it returns a truthy value; throws with `what` after `ms`.
export async function eventually(fn, what, ms = 20000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await sleep(100);
  }
}

const children = new Set();
process.on('exit', () => { for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } } });

function track(child) {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

export class Doppeld {
  constructor(extraArgs = []) {
    this.dir = mkdtempSync(join(tmpdir(), 'doppel-console-'));
    this.extraArgs = extraArgs;
    this.log = '';
  }

  async start() {
    if (!this.port) {
      this.port = await freePort();
      this.brokerPort = await freePort();
    }
    this.base = `http://127.0.0.1:${this.port}`;
    this.proc = track(spawn(DOPPELD, [
      '--http', `127.0.0.1:${this.port}`, '--broker-port', String(this.brokerPort),
      '--data', join(this.dir, 'data'), ...this.extraArgs,
    ], { stdio: ['ignore', 'pipe', 'pipe'] }));
    const keep = (d) => { this.log = (this.log + d.toString()).slice(-20000); };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    await eventually(async () => (await fetch(`${this.base}/healthz`)).ok &&
      (await fetch(`${this.base}/readyz`)).ok, `doppeld on ${this.port} to be ready\n${this.log}`, 30000);
    return this;
  }

  async stop(signal = 'SIGTERM') {
    if (!this.proc) return;
    const p = this.proc;
    this.proc = null;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill(signal);
    await Promise.race([gone, sleep(15000).then(() => p.kill('SIGKILL'))]);
    await gone;
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  // The API from the test's side (with `token` when given).
  async api(path, { method = 'GET', body, headers = {}, token } = {}) {
    const h = { ...headers };
    if (body !== undefined) h['Content-Type'] = h['Content-Type'] || 'application/json';
    if (token) h.Authorization = `Bearer ${token}`;
    const res = await fetch(this.base + path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = text; }
    return { status: res.status, headers: res.headers, body: json };
  }

  // One MQTT message from a device (QoS 1), as firmware would send it.
  publish(twin, channel, payload) {
    const message = typeof payload === 'string' ? payload : JSON.stringify(payload);
    return new Promise((resolve, reject) => {
      execFile('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(this.brokerPort), '-q', '1',
        '-i', `console-test-${twin}-${Date.now()}`, '-t', `twins/${twin}/${channel}`, '-m', message],
      { timeout: 10000 }, (err) => (err ? reject(err) : resolve()));
    });
  }

  // A simulated fleet; stopped by the returned function.
  sim(args) {
    const p = track(spawn(DOPPEL_SIM, ['--broker', `tcp://127.0.0.1:${this.brokerPort}`, ...args],
      { stdio: 'ignore' }));
    return () => new Promise((r) => { p.once('exit', r); p.kill('SIGINT'); setTimeout(() => p.kill('SIGKILL'), 5000); });
  }
}

export function launchBrowser() {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-dev-shm-usage'],
  });
}

// A tab that records what a person would call an error: console errors, uncaught exceptions,
// failed requests and HTTP errors. `expect(status, urlPart)` allows one the test causes itself.
export async function openTab(browser, { width = 1280, height = 900 } = {}) {
  const page = await browser.newPage();
  await page.setViewport({ width, height });
  const problems = [];
  const allowed = [];
  const urls = [];
  const consoleAllowed = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // Chromium logs every HTTP error a fetch got; one the test caused on purpose is not a fault.
    const status = /status of (\d+)/.exec(m.text());
    if (status && page.allowStatus.has(Number(status[1]))) return;
    const i = status ? consoleAllowed.indexOf(Number(status[1])) : -1;
    if (i >= 0) { consoleAllowed.splice(i, 1); return; }
    problems.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`exception: ${e.message}`));
  page.on('request', (r) => urls.push(r.url()));
  page.on('requestfailed', (r) => {
    const f = r.failure() ? r.failure().errorText : '';
    // The feed's stream is aborted on purpose when a view changes what it follows or the page
    // is left; a restarted doppeld drops it (the tests that do so expect that).
    if (f === 'net::ERR_ABORTED' && r.url().includes('/v1/events')) return;
    if (page.allowFeedDrops && r.url().includes('/v1/events')) return;
    problems.push(`request failed: ${r.method()} ${r.url()} ${f}`);
  });
  page.on('response', (r) => {
    if (r.status() < 400 || page.allowStatus.has(r.status())) return;
    const i = allowed.findIndex(([s, part]) => s === r.status() && r.url().includes(part));
    if (i >= 0) { allowed.splice(i, 1); return; }
    problems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });
  page.problems = problems;
  page.allowStatus = new Set();  // statuses the test causes on purpose, however often
  page.requestUrls = urls;
  page.expect = (status, part) => { allowed.push([status, part]); consoleAllowed.push(status); };
  return page;
}

// axe-core on the page: the violations of serious or critical impact.
export async function axe(page) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  return result.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

export async function textOf(page, selector) {
  return page.$eval(selector, (e) => e.textContent);
}
