// Small helpers the views share: times in the browser's time zone, relative times, JSON leaves.
import { html, useEffect, useState } from './preact-htm.js';

const timeFormat = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
});

// "Dec 5, 2026, 09:12:03" in the browser's zone; '—' for none.
export function localTime(ms) {
  if (!ms) return '—';
  return timeFormat.format(new Date(ms));
}

// "12 s ago", "3 min ago", "in 20 s".
export function relative(ms, now = Date.now()) {
  if (!ms) return 'never';
  const d = Math.round((now - ms) / 1000);
  const abs = Math.abs(d);
  let text;
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.floor(abs / 60)} min`;
  else if (abs < 86400) text = `${Math.floor(abs / 3600)} h`;
  else text = `${Math.floor(abs / 86400)} d`;
  return d >= 0 ? `${text} ago` : `in ${text}`;
}

// Re-renders its caller every second (for relative times).
export function useTick(ms = 1000) {
  const [, set] = useState(0);
  useEffect(() => {
    const t = setInterval(() => set((n) => n + 1), ms);
    return () => clearInterval(t);
  }, [ms]);
}

// A time shown relative, the exact local time on hover and to screen readers.
export function Ago({ ms }) {
  useTick();
  if (!ms) return html`<span>never</span>`;
  return html`<time datetime=${new Date(ms).toISOString()} title=${localTime(ms)}>${relative(ms)}</time>`;
}

// The leaves of a JSON object as [path, value] ("fan.speed" → 3).
export function leaves(obj, prefix = '', out = []) {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    if (prefix) out.push([prefix, obj]);
    return out;
  }
  for (const [k, v] of Object.entries(obj)) {
    leaves(v, prefix ? `${prefix}.${k}` : k, out);
  }
  return out;
}

// The value at a dotted path of an object, or undefined.
export function at(obj, path) {
  let cur = obj;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = cur[part];
  }
  return cur;
}

// RFC 7386 merge patch, applied to a copy.
export function mergePatch(target, patch) {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out = target && typeof target === 'object' && !Array.isArray(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

export function show(v) {
  if (v === undefined) return '—';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

export function pretty(v) { return JSON.stringify(v, null, 2); }

// A short message for an error from api(), with the column marker for an invalid query.
export function errorText(e) {
  if (!e) return '';
  return e.message || String(e);
}

// Navigation inside the console without a reload (the server answers every page's path).
export function go(path) {
  history.pushState(null, '', path);
  dispatchEvent(new PopStateEvent('popstate'));
}

// A link the router handles; a modified click opens a tab as usual.
export function Link({ href, children, ...rest }) {
  const click = (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    go(href);
  };
  return html`<a href=${href} onClick=${click} ...${rest}>${children}</a>`;
}

export function twinPath(id, params) {
  const base = `/console/twins/${encodeURIComponent(id)}`;
  const q = params ? new URLSearchParams(params).toString() : '';
  return q ? `${base}?${q}` : base;
}
