// The system page: readiness with its reasons, and the gateway's own rates sampled from /metrics
// every 2 s while the page is open (nothing is kept when it closes).
import { html, useEffect, useRef, useState } from './preact-htm.js';
import { api, feed } from './api.js';
import { errorText, localTime } from './util.js';

const SAMPLE_MS = 2000;
const KEEP = 150;  // five minutes of samples

// Sums of every series of a metric family by name (labels summed away): Prometheus text format.
export function parseMetrics(text) {
  const sums = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[3]);
    if (!Number.isFinite(v)) continue;
    sums.set(m[1], (sums.get(m[1]) || 0) + v);
  }
  return sums;
}

const PLOTS = [
  { key: 'commits', title: 'Updates committed per second', unit: '/s',
    value: (a, b, dt) => rate(a, b, 'doppel_store_writes_total', dt) },
  { key: 'latency', title: 'Mean commit latency (ms)', unit: 'ms',
    value: (a, b) => {
      const n = delta(a, b, 'doppel_store_commit_seconds_count');
      return n > 0 ? (1000 * delta(a, b, 'doppel_store_commit_seconds_sum')) / n : 0;
    } },
  { key: 'http', title: 'HTTP requests per second', unit: '/s',
    value: (a, b, dt) => rate(a, b, 'doppel_http_responses_total', dt) },
  { key: 'drops', title: 'Broker drops per second', unit: '/s',
    value: (a, b, dt) => rate(a, b, 'doppel_broker_dropped_messages_total', dt) },
  { key: 'hot', title: 'Hot twins', unit: '', value: (a, b) => b.get('doppel_twins_hot') || 0 },
];

function delta(a, b, name) { return Math.max(0, (b.get(name) || 0) - (a.get(name) || 0)); }
function rate(a, b, name, dt) { return dt > 0 ? delta(a, b, name) / dt : 0; }

function Plot({ title, data }) {
  const box = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    if (!box.current || !window.uPlot) return undefined;
    const width = Math.max(280, Math.min(box.current.clientWidth || 480, 560));
    plot.current = new window.uPlot({
      width, height: 150,
      series: [{}, { label: title, stroke: '#1f6feb', width: 1.5, fill: 'rgba(31,111,235,0.08)' }],
      legend: { show: false },
    }, data, box.current);
    return () => plot.current.destroy();
  }, []);
  useEffect(() => { if (plot.current) plot.current.setData(data); }, [data]);
  const last = data[1].length ? data[1][data[1].length - 1] : null;
  return html`<figure class="card">
    <figcaption>${title}: <strong data-metric=${title}>${last === null ? '…' : Math.round(last * 10) / 10}</strong></figcaption>
    <div ref=${box}></div>
  </figure>`;
}

export function SystemPage() {
  const [ready, setReady] = useState(null);
  const [series, setSeries] = useState(() => Object.fromEntries(PLOTS.map((p) => [p.key, [[], []]])));
  const [error, setError] = useState('');
  const last = useRef(null);

  useEffect(() => { feed.setTwins(null); }, []);
  useEffect(() => {
    let live = true;
    const sample = async () => {
      try {
        const r = await api('/readyz').then((x) => ({ ok: true, body: x.body }), (e) => ({ ok: false, body: e.problem }));
        if (live) setReady({ ...r, at: Date.now() });
        const { body } = await api('/metrics');
        const now = Date.now() / 1000;
        const m = parseMetrics(body);
        if (last.current && live) {
          const dt = now - last.current.t;
          setSeries((s) => {
            const next = {};
            for (const p of PLOTS) {
              const [xs, ys] = s[p.key];
              next[p.key] = [[...xs, now].slice(-KEEP), [...ys, p.value(last.current.m, m, dt)].slice(-KEEP)];
            }
            return next;
          });
        }
        last.current = { t: now, m };
        if (live) setError('');
      } catch (e) {
        if (live) setError(errorText(e));
      }
    };
    sample();
    const t = setInterval(sample, SAMPLE_MS);
    return () => { live = false; clearInterval(t); };
  }, []);

  return html`
    <h1>System</h1>
    <section aria-labelledby="ready-h" class="card">
      <h2 id="ready-h">Readiness</h2>
      ${ready === null ? html`<p class="muted">…</p>` : html`
        <p data-ready=${ready.ok ? (ready.body.status || 'ready') : 'not-ready'}>
          <span class=${`pill ${ready.ok ? 'state-converged' : 'state-failed'}`}>${ready.ok ? ready.body.status : 'not ready'}</span>
          ${' '}${ready.ok ? `store ${ready.body.store}, broker ${ready.body.broker}; ${ready.body.broker_dropped_messages} broker drops so far`
            : (ready.body && ready.body.detail) || ''}
          ${ready.ok && ready.body.detail ? html`<br />${ready.body.detail}` : ''}
        </p>
        <p class="muted">Checked ${localTime(ready.at)}; read every ${SAMPLE_MS / 1000} s.</p>`}
    </section>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <p class="muted">Sampled from /metrics every ${SAMPLE_MS / 1000} s while this page is open.</p>
    <div class="plots-grid">${PLOTS.map((p) => html`<${Plot} key=${p.key} title=${p.title} data=${series[p.key]} />`)}</div>`;
}
