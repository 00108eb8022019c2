// The fleet page: a fleet query, counts by state that click through to a narrower query, and a
// page of twins (cursor paging, order_by) whose rows follow the change feed without a reload.
// Nothing here reads more than one page and three counts, whatever the size of the fleet.
import { html, useEffect, useRef, useState } from './preact-htm.js';
import { api, feed, withQuery } from './api.js';
import { Ago, Link, at, errorText, go, mergePatch, show, twinPath } from './util.js';

const PAGE_SIZE = 50;
const BASE_FIELDS = ['connection', 'liveness', 'reconcile', 'version', 'tags'];
const GROUPS = [
  ['liveness.state', 'Liveness'],
  ['connection.state', 'Connection'],
  ['reconcile.state', 'Reconcile'],
];

// What an event changes in a row (the fields the table shows).
export function applyEvent(row, ev) {
  const r = { ...row };
  if (ev.version !== undefined) r.version = ev.version;
  switch (ev.kind) {
    case 'reported.updated':
      r.reported = mergePatch(r.reported || {}, ev.patch || {});
      r.liveness = { ...(r.liveness || {}), last_seen: ev.ts };
      break;
    case 'desired.updated':
      r.desired = ev.replace ? ev.desired : mergePatch(r.desired || {}, ev.patch || {});
      break;
    case 'connection.changed':
      r.connection = { ...(r.connection || {}), state: ev.state, since: ev.ts };
      break;
    case 'liveness.changed':
      r.liveness = { ...(r.liveness || {}), state: ev.state };
      break;
    case 'reconcile.changed':
      r.reconcile = { ...(r.reconcile || {}), state: ev.state, attempts: ev.attempts };
      break;
    case 'settings.updated':
      if (ev.patch && ev.patch.tags !== undefined) {
        r.tags = ev.replace ? ev.patch.tags : mergePatch(r.tags || {}, ev.patch.tags);
      }
      break;
    default:
      break;
  }
  return r;
}

// The query with a condition added ("(q) AND field = 'value'").
function narrow(q, field, value) {
  const literal = typeof value === 'string' ? `'${value.replace(/'/g, "''")}'` : String(value);
  const cond = `${field} = ${literal}`;
  return q.trim() ? `(${q.trim()}) AND ${cond}` : cond;
}

function fleetUrl(q, orderBy, fields) {
  return withQuery('/console/fleet', { q, order_by: orderBy, fields });
}

// The 400's column, shown as a marker under the query.
function QueryError({ q, error }) {
  const m = /column (\d+)/.exec(error);
  const column = m ? Number(m[1]) : 0;
  return html`<div class="error" role="alert" id="query-error">
    <p>${error}</p>
    ${column > 0 && html`<pre class="marker" aria-hidden="true">${q}\n${' '.repeat(column - 1)}^</pre>`}
  </div>`;
}

function Counts({ q, refresh }) {
  const [groups, setGroups] = useState({});
  const [error, setError] = useState('');
  useEffect(() => {
    let live = true;
    Promise.all(GROUPS.map(([field]) => api(withQuery('/v1/fleet/count', { q, group_by: field }))))
      .then((answers) => {
        if (!live) return;
        const next = {};
        GROUPS.forEach(([field], i) => { next[field] = answers[i].body; });
        setGroups(next);
        setError('');
      })
      .catch((e) => live && setError(errorText(e)));
    return () => { live = false; };
  }, [q, refresh]);
  if (error) return html`<p class="muted">Counts unavailable: ${error}</p>`;
  return html`<section class="counts" aria-label="Counts">
    ${GROUPS.map(([field, label]) => {
      const g = groups[field];
      return html`<div class="count-group" key=${field}>
        <h2>${label}</h2>
        ${g ? html`<ul>
          ${(g.groups || []).map((x) => html`<li key=${String(x.value)}>
            <${Link} href=${fleetUrl(narrow(q, field, x.value))} class=${`state-${x.value}`}
              data-count=${`${field}=${x.value}`}>
              <span class="n">${x.count.toLocaleString()}</span> ${show(x.value)}</${Link}></li>`)}
          ${g.groups && g.groups.length === 0 && html`<li class="muted">none</li>`}
        </ul>
        <p class="muted total">${g.count.toLocaleString()} in all</p>` : html`<p class="muted">…</p>`}
      </div>`;
    })}
  </section>`;
}

// aria-sort for a column header sorted by `field`.
function sortState(orderBy, field) {
  const [cur, dir] = (orderBy || 'id').split(/\s+/);
  if (cur !== field) return undefined;
  return dir === 'desc' ? 'descending' : 'ascending';
}

function SortButton({ field, label, orderBy, onSort }) {
  const [cur, dir] = (orderBy || 'id').split(/\s+/);
  const active = cur === field;
  const desc = active && dir === 'desc';
  const next = active && !desc ? `${field} desc` : field;
  return html`<button type="button" class="sort" onClick=${() => onSort(next)}
    title=${`Sort by ${label}${active && !desc ? ', descending' : ''}`}>
    ${label}<span aria-hidden="true">${active ? (desc ? ' ▼' : ' ▲') : ''}</span></button>`;
}

export function FleetPage({ params }) {
  const q = params.get('q') || '';
  const orderBy = params.get('order_by') || '';
  const fields = params.get('fields') || '';
  const extra = fields.split(',').map((s) => s.trim()).filter(Boolean);
  const [draft, setDraft] = useState(q);
  const [draftFields, setDraftFields] = useState(fields);
  const [rows, setRows] = useState(null);
  const [error, setError] = useState('');
  const [cursors, setCursors] = useState([null]);  // the cursor of each page shown so far
  const [next, setNext] = useState(null);
  const [refresh, setRefresh] = useState(0);
  const [loadedAt, setLoadedAt] = useState(0);
  const rowsRef = useRef(null);
  rowsRef.current = rows;

  useEffect(() => { setDraft(q); setDraftFields(fields); setCursors([null]); }, [q, orderBy, fields]);

  const cursor = cursors[cursors.length - 1];
  useEffect(() => {
    let live = true;
    const wanted = [...BASE_FIELDS, ...extra].join(',');
    api(withQuery('/v1/twins', { q, order_by: orderBy, limit: PAGE_SIZE, cursor, fields: wanted }))
      .then(({ body }) => {
        if (!live) return;
        setRows(body.items);
        setNext(body.next_cursor || null);
        setError('');
        setLoadedAt(Date.now());
        feed.setTwins(body.items.map((t) => t.id));
      })
      .catch((e) => { if (live) { setError(errorText(e)); setRows([]); } });
    return () => { live = false; };
  }, [q, orderBy, fields, cursor, refresh]);

  // Live rows: events of the twins on screen update them in place.
  useEffect(() => feed.subscribe((ev) => {
    if (ev.kind === 'resync') { setRefresh((n) => n + 1); return; }
    const current = rowsRef.current;
    if (!current || !ev.twin) return;
    const i = current.findIndex((r) => r.id === ev.twin);
    if (i < 0) return;
    const updated = current.slice();
    updated[i] = { ...applyEvent(current[i], ev), _changed: ev };
    setRows(updated);
  }), []);

  // Report → DOM: the time from the event's ts to the frame that shows it (docs/performance.md).
  useEffect(() => {
    if (!rows) return;
    const changed = rows.filter((r) => r._changed && !r._changed.measured);
    if (!changed.length) return;
    for (const r of changed) r._changed.measured = true;  // once, however many renders follow
    requestAnimationFrame(() => {
      const now = Date.now();
      for (const r of changed) (window.doppelLatency ||= []).push(now - r._changed.ts);
    });
  }, [rows]);

  // Counts are not in the feed: read again every 10 s while the page is open.
  useEffect(() => {
    const t = setInterval(() => setRefresh((n) => n + 1), 10000);
    return () => clearInterval(t);
  }, []);

  const submit = (e) => {
    e.preventDefault();
    go(fleetUrl(draft, orderBy, draftFields));
  };
  const sort = (o) => go(fleetUrl(q, o, fields));

  return html`
    <h1>Fleet</h1>
    <form class="query" onSubmit=${submit} role="search">
      <label for="q">Fleet query</label>
      <div class="row">
        <input id="q" name="q" value=${draft} onInput=${(e) => setDraft(e.target.value)}
          placeholder="e.g. tags.site = 'berlin' AND reconcile.state != 'converged'"
          aria-describedby=${error ? 'query-error' : 'query-help'} spellcheck="false" autocomplete="off" />
        <button type="submit" class="primary">Run</button>
      </div>
      <p id="query-help" class="muted">Empty: every twin. Fields: id, liveness.state, connection.state,
        reconcile.state, tags.…, desired.…, reported.…; AND, OR, NOT, IN, LIKE, EXISTS.</p>
      <label for="fields">Extra columns</label>
      <input id="fields" value=${draftFields} onInput=${(e) => setDraftFields(e.target.value)}
        placeholder="reported.temp, desired.mode" spellcheck="false" autocomplete="off" />
    </form>
    ${error && html`<${QueryError} q=${q} error=${error} />`}
    <${Counts} q=${q} refresh=${refresh} />
    <div class="toolbar">
      <${Link} href=${withQuery('/console/jobs', { new: '1', q })} class="button">Create a job for this query…</${Link}>
      <span class="muted">${loadedAt ? html`Page read <${Ago} ms=${loadedAt} />; rows update live.` : ''}</span>
    </div>
    <div class="table-wrap">
      <table class="fleet" aria-label="Twins" aria-busy=${rows === null}>
        <thead><tr>
          <th scope="col" aria-sort=${sortState(orderBy, 'id')}><${SortButton} field="id" label="Id" orderBy=${orderBy} onSort=${sort} /></th>
          <th scope="col" aria-sort=${sortState(orderBy, 'connection.state')}><${SortButton} field="connection.state" label="Connection" orderBy=${orderBy} onSort=${sort} /></th>
          <th scope="col" aria-sort=${sortState(orderBy, 'liveness.last_seen')}><${SortButton} field="liveness.last_seen" label="Last seen" orderBy=${orderBy} onSort=${sort} /></th>
          <th scope="col" aria-sort=${sortState(orderBy, 'reconcile.state')}><${SortButton} field="reconcile.state" label="Reconcile" orderBy=${orderBy} onSort=${sort} /></th>
          <th scope="col" aria-sort=${sortState(orderBy, 'version')}><${SortButton} field="version" label="Version" orderBy=${orderBy} onSort=${sort} /></th>
          <th scope="col">Tags</th>
          ${extra.map((f) => html`<th scope="col" key=${f} aria-sort=${sortState(orderBy, f)}><${SortButton} field=${f} label=${f} orderBy=${orderBy} onSort=${sort} /></th>`)}
        </tr></thead>
        <tbody>
          ${(rows || []).map((t) => html`<tr key=${t.id} data-twin=${t.id}>
            <th scope="row"><${Link} href=${twinPath(t.id)}>${t.id}</${Link}></th>
            <td><span class=${`pill state-${at(t, 'connection.state')}`}>${show(at(t, 'connection.state'))}</span></td>
            <td><span class=${`pill state-${at(t, 'liveness.state')}`}>${show(at(t, 'liveness.state'))}</span>
              ${' '}<${Ago} ms=${at(t, 'liveness.last_seen')} /></td>
            <td><span class=${`pill state-${at(t, 'reconcile.state')}`}>${show(at(t, 'reconcile.state'))}</span></td>
            <td class="num" data-field="version">${show(t.version)}</td>
            <td class="tags">${Object.entries(t.tags || {}).map(([k, v]) => html`<span class="tag" key=${k}>${k}=${show(v)}</span>`)}</td>
            ${extra.map((f) => html`<td key=${f} data-field=${f}>${show(at(t, f))}</td>`)}
          </tr>`)}
        </tbody>
      </table>
    </div>
    ${rows && rows.length === 0 && !error && html`<p class="muted">No twin matches.</p>`}
    <nav class="pager" aria-label="Pages of twins">
      <button type="button" disabled=${cursors.length <= 1} onClick=${() => setCursors(cursors.slice(0, -1))}>Previous page</button>
      <span class="muted">Page ${cursors.length}</span>
      <button type="button" disabled=${!next} onClick=${() => setCursors([...cursors, next])}>Next page</button>
    </nav>`;
}
