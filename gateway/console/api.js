// The console's one way to the API: fetch with the operator's token (kept in sessionStorage,
// never in a URL), problem+json turned into errors that say what the server said, and the change
// feed as one fetch stream per tab that resumes itself after a drop.

const TOKEN_KEY = 'doppel.token';

export function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
  authListeners.forEach((f) => f(false));
  feed.restart();
}

// Listeners told when the API refused the token (true) or a new one was set (false).
const authListeners = new Set();
export function onAuth(f) { authListeners.add(f); return () => authListeners.delete(f); }

export class ApiError extends Error {
  constructor(status, problem, headers) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.headers = headers;
  }
}

function authHeaders(extra) {
  const h = new Headers(extra || {});
  const t = token();
  if (t) h.set('Authorization', `Bearer ${t}`);
  return h;
}

// api(path, {method, body, headers, contentType}) → {status, headers, body}; throws ApiError on a
// status >= 400 (the problem document's detail as its message).
export async function api(path, opts = {}) {
  const headers = authHeaders(opts.headers);
  let body;
  if (opts.body !== undefined) {
    body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
    headers.set('Content-Type', opts.contentType || 'application/json');
  }
  const res = await fetch(path, { method: opts.method || 'GET', headers, body, signal: opts.signal });
  const text = await res.text();
  let parsed = null;
  if (text) {
    try { parsed = JSON.parse(text); } catch { parsed = text; }
  }
  if (res.status === 401) authListeners.forEach((f) => f(true));
  if (res.status >= 400) {
    const problem = parsed && typeof parsed === 'object' ? parsed : { detail: String(parsed || res.statusText) };
    throw new ApiError(res.status, problem, res.headers);
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

export const enc = encodeURIComponent;

// Builds "path?k=v&k=v" from an object (arrays repeat the key; empty values are left out).
export function withQuery(path, params) {
  const parts = [];
  for (const [k, v] of Object.entries(params)) {
    for (const one of Array.isArray(v) ? v : [v]) {
      if (one === undefined || one === null || one === '') continue;
      parts.push(`${enc(k)}=${enc(one)}`);
    }
  }
  return parts.length ? `${path}?${parts.join('&')}` : path;
}

// The change feed: one stream (GET /v1/events, text/event-stream) for the whole tab. Views say
// which twins they show (at most 100: a page) and subscribe to its events; the stream is opened
// again with the new filter when that changes, and after a drop it resumes from the last seq it
// saw (or the position the server said it started at), so no event is missed or seen twice.
class Feed {
  constructor() {
    this.listeners = new Set();
    this.statusListeners = new Set();
    this.twins = null;  // null: every twin
    this.position = null;  // the last seq delivered (or where the stream started)
    this.state = 'connecting';
    this.abort = null;
    this.retryMs = 500;
    this.generation = 0;
    this.started = false;
  }

  start() {
    if (this.started) return;
    this.started = true;
    this.connect();
  }

  subscribe(f) { this.listeners.add(f); return () => this.listeners.delete(f); }
  onStatus(f) { this.statusListeners.add(f); f(this.state); return () => this.statusListeners.delete(f); }

  // The twins the views on screen want events of (null: all). A change restarts the stream from
  // the current position.
  setTwins(ids) {
    const next = ids ? [...new Set(ids)].sort() : null;
    const same = this.started && ((next === null && this.twins === null) ||
      (next && this.twins && next.length === this.twins.length && next.every((v, i) => v === this.twins[i])));
    if (same) return;
    this.twins = next;
    if (!this.started) this.start();  // the first view to say what it shows opens the stream
    else this.restart();
  }

  restart() {
    if (!this.started) return;
    if (this.abort) this.abort.abort();
    this.connect();
  }

  setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.statusListeners.forEach((f) => f(s));
  }

  async connect() {
    const generation = ++this.generation;
    const controller = new AbortController();
    this.abort = controller;
    const params = {};
    if (this.twins && this.twins.length) params.twin = this.twins;  // none on screen: every twin
    if (this.position !== null) params.after_seq = this.position;
    try {
      const res = await fetch(withQuery('/v1/events', params), {
        headers: authHeaders({ Accept: 'text/event-stream' }),
        signal: controller.signal,
        cache: 'no-store',
      });
      if (res.status === 401) authListeners.forEach((f) => f(true));
      if ((res.status === 400 || res.status === 410) && this.position !== null) {
        // A position this server never gave out (its database was replaced) or one retention
        // removed: start afresh, and have the views read their data again.
        this.position = null;
        this.listeners.forEach((f) => f({ kind: 'resync' }));
        throw new Error('position refused');
      }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      const start = res.headers.get('Feed-Position');
      if (this.position === null && start !== null) this.position = Number(start);
      this.setState('live');
      this.retryMs = 500;
      await this.read(res.body, generation);
      throw new Error('the stream ended');
    } catch (e) {
      if (generation !== this.generation) return;  // replaced by a newer connection
      this.setState('disconnected');
      const wait = this.retryMs;
      this.retryMs = Math.min(this.retryMs * 2, 5000);
      setTimeout(() => { if (generation === this.generation) this.connect(); }, wait);
    }
  }

  async read(body, generation) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done || generation !== this.generation) return;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        this.frame(frame);
      }
    }
  }

  frame(text) {
    let kind = 'message';
    let data = '';
    for (const line of text.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') kind = value;
      else if (field === 'data') data += (data ? '\n' : '') + value;
    }
    if (!data) return;
    let parsed;
    try { parsed = JSON.parse(data); } catch { return; }
    if (kind === 'overflow' || kind === 'gap') {
      if (parsed.oldest_seq) this.position = parsed.oldest_seq - 1;
      this.listeners.forEach((f) => f({ kind: 'resync' }));
      return;
    }
    if (typeof parsed.seq !== 'number') return;
    if (this.position !== null && parsed.seq <= this.position) return;
    this.position = parsed.seq;
    parsed.received = Date.now();
    this.listeners.forEach((f) => f(parsed));
  }
}

export const feed = new Feed();
