// The twin page: why it has not converged (first), desired and reported side by side with the
// delta, the desired editor (If-Match; a 412 offers to reapply the edit on the newer desired),
// tags and settings, commands, the history with an as-of view of any point, and a plot of each
// numeric reported leaf over time. Everything follows the change feed.
import { html, useEffect, useRef, useState } from './preact-htm.js';
import { api, enc, feed, withQuery } from './api.js';
import { Ago, Link, at, errorText, leaves, localTime, pretty, show, twinPath } from './util.js';

const HISTORY_VERSIONS = 200;  // the history shows the events of the last this many versions

// The server's texts give times in UTC; the console shows them in the browser's zone.
function localized(text) {
  return text.replace(/(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) UTC/g,
    (m, d, t) => localTime(Date.parse(`${d}T${t}Z`)));
}

function Explain({ explanation }) {
  if (!explanation) return html`<section aria-labelledby="explain-h"><h2 id="explain-h">Convergence</h2><p class="muted">…</p></section>`;
  const { converged, reasons } = explanation;
  return html`<section class="explain" aria-labelledby="explain-h" data-converged=${String(converged)}>
    <h2 id="explain-h">${converged ? 'Converged' : 'Not converged'}</h2>
    ${converged && reasons.length === 0 && html`<p>Reported matches desired: nothing is waiting.</p>`}
    <ul>
      ${reasons.map((r) => html`<li key=${r.code} data-code=${r.code}>
        <span class=${`pill reason-${r.code}`}>${r.code.replace('_', ' ')}</span> ${localized(r.text)}
      </li>`)}
    </ul>
  </section>`;
}

// Desired and reported, leaf by leaf; a leaf in the delta is marked, each value's metadata time
// on hover.
function StateTable({ twin }) {
  const desired = new Map(leaves(twin.desired || {}));
  const reported = new Map(leaves(twin.reported || {}));
  const delta = new Set(leaves(twin.delta || {}).map(([p]) => p));
  const paths = [...new Set([...desired.keys(), ...reported.keys()])].sort();
  const meta = (side, p) => {
    const m = at(twin.metadata && twin.metadata[side], p);
    if (!m || typeof m !== 'object') return undefined;
    const parts = [];
    if (m.ts) parts.push(`${side} ${localTime(m.ts)}`);
    if (m.version) parts.push(`desired version ${m.version}`);
    if (m.device_ts) parts.push(`device time ${localTime(m.device_ts)}`);
    return parts.join(', ');
  };
  if (paths.length === 0) return html`<p class="muted">Neither desired nor reported has a value yet.</p>`;
  return html`<div class="table-wrap"><table class="state" aria-label="Desired and reported">
    <thead><tr><th scope="col">Field</th><th scope="col">Desired</th><th scope="col">Reported</th></tr></thead>
    <tbody>${paths.map((p) => html`<tr key=${p} class=${delta.has(p) ? 'in-delta' : ''} data-path=${p}>
      <th scope="row">${p}${delta.has(p) && html` <span class="pill delta">delta</span>`}</th>
      <td title=${meta('desired', p)} tabindex=${desired.has(p) ? 0 : undefined}>${desired.has(p) ? show(desired.get(p)) : '—'}</td>
      <td title=${meta('reported', p)} tabindex=${reported.has(p) ? 0 : undefined}>${reported.has(p) ? show(reported.get(p)) : '—'}</td>
    </tr>`)}</tbody>
  </table></div>`;
}

function DesiredEditor({ twin, onDone }) {
  const [text, setText] = useState('{\n  \n}');
  const [error, setError] = useState('');
  const [conflict, setConflict] = useState(null);  // the newer desired after a 412
  const [busy, setBusy] = useState(false);
  const send = async (ifMatch) => {
    let patch;
    try { patch = JSON.parse(text); } catch (e) { setError(`Not JSON: ${e.message}`); return; }
    setBusy(true);
    setError('');
    try {
      await api(`/v1/twins/${enc(twin.id)}/desired`, {
        method: 'PATCH', body: patch, contentType: 'application/merge-patch+json',
        headers: { 'If-Match': `"${ifMatch}"` },
      });
      setConflict(null);
      setText('{\n  \n}');
      onDone();
    } catch (e) {
      if (e.status === 412) {
        const newer = await api(`/v1/twins/${enc(twin.id)}/desired`);
        setConflict({ desired: newer.body, version: Number(String(newer.headers.get('ETag')).replace(/"/g, '')) });
      } else {
        setError(errorText(e));
      }
    } finally {
      setBusy(false);
    }
  };
  return html`<section aria-labelledby="edit-h">
    <h2 id="edit-h">Change desired</h2>
    <p class="muted">A JSON merge patch (null deletes a key), sent with If-Match on desired version ${twin.desired_version}.</p>
    <label for="desired-patch">Merge patch</label>
    <textarea id="desired-patch" rows="5" spellcheck="false" value=${text} onInput=${(e) => setText(e.target.value)}></textarea>
    <div class="actions">
      <button type="button" class="primary" disabled=${busy} onClick=${() => send(twin.desired_version)}>Send patch</button>
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${conflict && html`<div class="conflict" role="alert">
      <p>Someone changed desired since this page read it (now version ${conflict.version}). Your patch was not applied. The newer desired:</p>
      <pre>${pretty(conflict.desired)}</pre>
      <button type="button" class="primary" onClick=${() => send(conflict.version)}>Reapply my patch on version ${conflict.version}</button>
      ${' '}<button type="button" onClick=${() => setConflict(null)}>Discard</button>
    </div>`}
  </section>`;
}

function Settings({ twin, onDone }) {
  const [tags, setTags] = useState('');
  const [stale, setStale] = useState(twin.stale_after_s ?? '');
  const [strategy, setStrategy] = useState((twin.commands && twin.commands.strategy) || 'parallel');
  const [error, setError] = useState('');
  const [ok, setOk] = useState('');
  const save = async (e) => {
    e.preventDefault();
    const body = {};
    if (tags.trim()) {
      try { body.tags = JSON.parse(tags); } catch (err) { setError(`Tags: not JSON: ${err.message}`); return; }
    }
    body.stale_after_s = String(stale).trim() === '' ? null : Number(stale);
    body.command_strategy = strategy;
    try {
      await api(`/v1/twins/${enc(twin.id)}`, { method: 'PATCH', body });
      setError('');
      setOk('Saved.');
      setTags('');
      onDone();
    } catch (err) {
      setOk('');
      setError(errorText(err));
    }
  };
  return html`<section aria-labelledby="settings-h">
    <h2 id="settings-h">Tags and settings</h2>
    <p>Tags: ${Object.keys(twin.tags || {}).length === 0 ? html`<span class="muted">none</span>`
      : Object.entries(twin.tags).map(([k, v]) => html`<span class="tag" key=${k}>${k}=${show(v)}</span> `)}</p>
    <form onSubmit=${save}>
      <label for="tags-patch">Tags merge patch (e.g. {"site": "berlin"}; null removes one)</label>
      <input id="tags-patch" value=${tags} onInput=${(e) => setTags(e.target.value)} spellcheck="false" autocomplete="off" />
      <div class="row">
        <span><label for="stale-after">Stale after (s; empty: the gateway's default)</label>
          <input id="stale-after" type="number" min="1" value=${stale} onInput=${(e) => setStale(e.target.value)} /></span>
        <span><label for="strategy">Command strategy</label>
          <select id="strategy" value=${strategy} onChange=${(e) => setStrategy(e.target.value)}>
            <option value="parallel">parallel</option><option value="sequential">sequential</option>
          </select></span>
      </div>
      <div class="actions"><button type="submit">Save settings</button></div>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      ${ok && html`<p class="muted" role="status">${ok}</p>`}
    </form>
  </section>`;
}

const FINISHED = new Set(['succeeded', 'failed', 'rejected', 'expired', 'cancelled', 'timed_out']);

function Commands({ id, version }) {
  const [list, setList] = useState(null);
  const [name, setName] = useState('');
  const [args, setArgs] = useState('{}');
  const [ttl, setTtl] = useState('');
  const [error, setError] = useState('');
  const [refresh, setRefresh] = useState(0);
  useEffect(() => {
    api(withQuery(`/v1/twins/${enc(id)}/commands`, { limit: 20 }))
      .then(({ body }) => setList(body.items || []))
      .catch((e) => setError(errorText(e)));
  }, [id, version, refresh]);
  useEffect(() => feed.subscribe((ev) => {
    if (ev.twin === id && ev.kind === 'command.changed') setRefresh((n) => n + 1);
  }), [id]);
  const enqueue = async (e) => {
    e.preventDefault();
    let parsedArgs;
    try { parsedArgs = args.trim() ? JSON.parse(args) : undefined; } catch (err) { setError(`Arguments: not JSON: ${err.message}`); return; }
    const body = { name };
    if (parsedArgs !== undefined) body.args = parsedArgs;
    if (ttl) body.ttl_s = Number(ttl);
    try {
      await api(`/v1/twins/${enc(id)}/commands`, { method: 'POST', body });
      setError('');
      setName('');
      setRefresh((n) => n + 1);
    } catch (err) { setError(errorText(err)); }
  };
  const cancel = async (cmd) => {
    try {
      await api(`/v1/twins/${enc(id)}/commands/${enc(cmd)}`, { method: 'DELETE' });
      setRefresh((n) => n + 1);
    } catch (err) { setError(errorText(err)); }
  };
  return html`<section aria-labelledby="commands-h">
    <h2 id="commands-h">Commands</h2>
    <form class="row" onSubmit=${enqueue}>
      <span><label for="cmd-name">Name</label><input id="cmd-name" required value=${name} onInput=${(e) => setName(e.target.value)} autocomplete="off" /></span>
      <span><label for="cmd-args">Arguments (JSON)</label><input id="cmd-args" value=${args} onInput=${(e) => setArgs(e.target.value)} spellcheck="false" autocomplete="off" /></span>
      <span><label for="cmd-ttl">TTL (s)</label><input id="cmd-ttl" type="number" min="1" value=${ttl} onInput=${(e) => setTtl(e.target.value)} /></span>
      <span><button type="submit">Enqueue</button></span>
    </form>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${list && list.length === 0 && html`<p class="muted">No commands.</p>`}
    ${list && list.length > 0 && html`<div class="table-wrap"><table aria-label="Commands">
      <thead><tr><th scope="col">Name</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Created</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
      <tbody>${list.map((c) => html`<tr key=${c.id} data-command=${c.id}>
        <th scope="row">${c.name}</th>
        <td><span class=${`pill cmd-${c.status}`} data-status=${c.status}>${c.status}</span>${c.error ? html` <span class="muted">${show(c.error)}</span>` : ''}</td>
        <td class="num">${c.attempts ?? 0}</td>
        <td><${Ago} ms=${c.created_at} /></td>
        <td>${!FINISHED.has(c.status) && html`<button type="button" onClick=${() => cancel(c.id)} aria-label=${`Cancel command ${c.name}`}>Cancel</button>`}</td>
      </tr>`)}</tbody></table></div>`}
  </section>`;
}

function describe(ev) {
  switch (ev.kind) {
    case 'reported.updated': return `reported ${show(ev.patch)}`;
    case 'desired.updated': return ev.replace ? `desired replaced: ${show(ev.desired)}` : `desired ${show(ev.patch)}`;
    case 'settings.updated': return `settings ${show(ev.patch)}`;
    case 'connection.changed': case 'liveness.changed': return `${ev.previous} → ${ev.state}`;
    case 'reconcile.changed': return `${ev.previous} → ${ev.state} (attempt ${ev.attempts})`;
    case 'command.changed': return `${ev.name}: ${ev.previous || 'new'} → ${ev.status}`;
    case 'credentials.changed':
      return ev.action === 'revoked' ? `${ev.credential} revoked (${ev.count})`
        : `${ev.credential} issued${ev.serial ? ` (serial ${ev.serial})` : ''}`;
    default: return '';
  }
}

function cause(c) {
  if (!c) return '';
  const parts = [c.source];
  if (c.principal) parts.push(`by ${c.principal}`);
  if (c.job) parts.push(`job ${c.job}`);
  if (c.request_id) parts.push(`request ${c.request_id}`);
  return parts.join(', ');
}

function History({ id, events }) {
  if (!events) return html`<p class="muted">…</p>`;
  const shown = events.slice(-100).reverse();
  return html`<div class="table-wrap"><table class="history" aria-label="History, newest first">
    <thead><tr><th scope="col">When</th><th scope="col">Change</th><th scope="col">Cause</th><th scope="col">Version</th></tr></thead>
    <tbody>${shown.map((ev) => html`<tr key=${ev.seq} data-seq=${ev.seq}>
      <td><time datetime=${new Date(ev.ts).toISOString()}>${localTime(ev.ts)}</time></td>
      <td><span class="kind">${ev.kind}</span> ${describe(ev)}</td>
      <td>${cause(ev.cause)}</td>
      <td><${Link} href=${twinPath(id, { as_of_version: ev.version })} aria-label=${`v${ev.version}: the twin as of this version`}>v${ev.version}</${Link}></td>
    </tr>`)}</tbody>
  </table></div>`;
}

// One plot per numeric reported leaf, from the reported.updated events of the history.
function Plots({ events }) {
  const box = useRef(null);
  useEffect(() => {
    if (!box.current || !events || !window.uPlot) return undefined;
    const series = new Map();
    for (const ev of events) {
      if (ev.kind !== 'reported.updated') continue;
      for (const [p, v] of leaves(ev.patch || {})) {
        if (typeof v !== 'number') continue;
        if (!series.has(p)) series.set(p, [[], []]);
        series.get(p)[0].push(ev.ts / 1000);
        series.get(p)[1].push(v);
      }
    }
    box.current.textContent = '';
    const plots = [];
    const width = Math.max(280, Math.min(box.current.clientWidth || 600, 900));
    for (const [p, data] of [...series.entries()].sort()) {
      const fig = document.createElement('figure');
      const cap = document.createElement('figcaption');
      cap.textContent = `reported.${p} (${data[0].length} reports)`;
      fig.appendChild(cap);
      box.current.appendChild(fig);
      plots.push(new window.uPlot({
        width, height: 160,
        series: [{}, { label: p, stroke: '#1f6feb', width: 1.5, points: { show: data[0].length < 50 } }],
        axes: [{}, {}],
        legend: { show: false },
      }, data, fig));
    }
    if (series.size === 0) {
      const p = document.createElement('p');
      p.className = 'muted';
      p.textContent = 'No numeric reported value in the history shown.';
      box.current.appendChild(p);
    }
    return () => plots.forEach((u) => u.destroy());
  }, [events]);
  return html`<div class="plots" ref=${box}></div>`;
}

export function TwinPage({ id, params }) {
  const asOfVersion = params.get('as_of_version');
  const [twin, setTwin] = useState(null);
  const [explanation, setExplanation] = useState(null);
  const [events, setEvents] = useState(null);
  const [error, setError] = useState('');
  const [refresh, setRefresh] = useState(0);
  const latest = useRef(0);

  useEffect(() => { feed.setTwins([id]); }, [id]);
  useEffect(() => {
    let live = true;
    const n = ++latest.current;
    const path = asOfVersion ? withQuery(`/v1/twins/${enc(id)}`, { as_of_version: asOfVersion }) : `/v1/twins/${enc(id)}`;
    Promise.all([api(path), api(`/v1/twins/${enc(id)}/explain`)])
      .then(([t, x]) => {
        if (!live || n !== latest.current) return;
        setTwin(t.body);
        setExplanation(x.body);
        setError('');
        if (!asOfVersion && t.body._changed === undefined) {
          requestAnimationFrame(() => { window.doppelTwinShown = Date.now(); });
        }
      })
      .catch((e) => live && setError(errorText(e)));
    return () => { live = false; };
  }, [id, asOfVersion, refresh]);

  // The history once, then each new event of this twin appended.
  useEffect(() => {
    let live = true;
    const from = twin ? Math.max(0, (twin.version || 0) - HISTORY_VERSIONS) : 0;
    if (events !== null || !twin) return undefined;
    (async () => {
      const all = [];
      let cursor;
      for (let i = 0; i < 10; i++) {
        const { body } = await api(withQuery(`/v1/twins/${enc(id)}/history`, { from_version: from, limit: 1000, cursor }));
        all.push(...body.events);
        if (!body.next_cursor) break;
        cursor = body.next_cursor;
      }
      if (live) setEvents(all);
    })().catch((e) => live && setError(errorText(e)));
    return () => { live = false; };
  }, [id, twin]);

  useEffect(() => feed.subscribe((ev) => {
    if (ev.kind === 'resync') { setRefresh((n) => n + 1); return; }
    if (ev.twin !== id) return;
    setEvents((list) => (list ? [...list, ev] : list));
    setRefresh((n) => n + 1);
  }), [id]);

  if (error && !twin) {
    return html`<h1>Twin ${id}</h1><p class="error" role="alert">${error}</p><p><${Link} href="/console/fleet">Back to the fleet</${Link}></p>`;
  }
  if (!twin) return html`<h1>Twin ${id}</h1><p class="muted">Loading…</p>`;
  const asOf = twin.as_of;
  return html`
    <h1>Twin <span class="id">${id}</span></h1>
    ${asOfVersion && html`<div class="banner" role="note">
      As of version ${asOfVersion}${asOf ? html` (${localTime(asOf.ts)}, event ${asOf.seq})` : ''}: how the twin was then. Editing is off.
      ${' '}<${Link} href=${twinPath(id)}>Back to now</${Link}></div>`}
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${!asOfVersion && html`<${Explain} explanation=${explanation} />`}
    <dl class="facts">
      <div><dt>Connection</dt><dd><span class=${`pill state-${at(twin, 'connection.state')}`}>${show(at(twin, 'connection.state'))}</span></dd></div>
      <div><dt>Last seen</dt><dd><${Ago} ms=${at(twin, 'liveness.last_seen')} /> (${show(at(twin, 'liveness.state'))})</dd></div>
      <div><dt>Reconcile</dt><dd><span class=${`pill state-${at(twin, 'reconcile.state')}`}>${show(at(twin, 'reconcile.state'))}</span></dd></div>
      <div><dt>Version</dt><dd data-field="version">${twin.version} (desired ${twin.desired_version}, reported ${twin.reported_version})</dd></div>
    </dl>
    <section aria-labelledby="state-h"><h2 id="state-h">Desired and reported</h2><${StateTable} twin=${twin} /></section>
    ${!asOfVersion && html`<div class="columns">
      <${DesiredEditor} twin=${twin} onDone=${() => setRefresh((n) => n + 1)} />
      <${Settings} twin=${twin} onDone=${() => setRefresh((n) => n + 1)} />
    </div>
    <${Commands} id=${id} version=${twin.version} />`}
    <section aria-labelledby="plots-h"><h2 id="plots-h">Reported values over time</h2><${Plots} events=${events} /></section>
    <section aria-labelledby="history-h"><h2 id="history-h">History</h2><${History} id=${id} events=${events} /></section>`;
}
