// The events page: the live change feed, filtered by twin and kind, pausable; each event links to
// its twin as it was right after it (the as-of view).
import { html, useEffect, useRef, useState } from './preact-htm.js';
import { feed } from './api.js';
import { Link, localTime, show, twinPath } from './util.js';

const KEEP = 500;
const KINDS = ['', 'reported.updated', 'desired.updated', 'settings.updated', 'connection.changed',
  'liveness.changed', 'reconcile.changed', 'command.changed', 'credentials.changed', 'twin.created', 'twin.deleted',
  'job.changed'];

export function EventsPage({ params }) {
  const [twin, setTwin] = useState(params.get('twin') || '');
  const [kind, setKind] = useState(params.get('kind') || '');
  const [paused, setPaused] = useState(false);
  const [events, setEvents] = useState([]);
  const [held, setHeld] = useState(0);
  const pausedRef = useRef(paused);
  pausedRef.current = paused;
  const filter = useRef({ twin, kind });
  filter.current = { twin: twin.trim(), kind };

  useEffect(() => { feed.setTwins(null); }, []);
  useEffect(() => feed.subscribe((ev) => {
    if (ev.kind === 'resync' || typeof ev.seq !== 'number') return;
    const f = filter.current;
    if (f.twin && ev.twin !== f.twin) return;
    if (f.kind && ev.kind !== f.kind) return;
    if (pausedRef.current) { setHeld((n) => n + 1); return; }
    setEvents((list) => [ev, ...list].slice(0, KEEP));
  }), []);

  return html`
    <h1>Events</h1>
    <form class="row filters" onSubmit=${(e) => e.preventDefault()}>
      <span><label for="ev-twin">Twin</label><input id="ev-twin" value=${twin} onInput=${(e) => setTwin(e.target.value)} placeholder="any" autocomplete="off" /></span>
      <span><label for="ev-kind">Kind</label><select id="ev-kind" value=${kind} onChange=${(e) => setKind(e.target.value)}>
        ${KINDS.map((k) => html`<option value=${k} key=${k}>${k || 'any'}</option>`)}</select></span>
      <span><button type="button" aria-pressed=${paused} onClick=${() => { setPaused(!paused); setHeld(0); }}>
        ${paused ? 'Resume' : 'Pause'}</button></span>
      <span class="muted" role="status">${paused ? `Paused: ${held} new event${held === 1 ? '' : 's'} not shown.` : `Showing the newest ${KEEP} from now on.`}</span>
    </form>
    ${events.length === 0 && html`<p class="muted">Waiting for events…</p>`}
    <div class="table-wrap"><table aria-label="Events, newest first" class="events">
      <thead><tr><th scope="col">Seq</th><th scope="col">When</th><th scope="col">Twin</th><th scope="col">Kind</th><th scope="col">Change</th></tr></thead>
      <tbody>${events.map((ev) => html`<tr key=${ev.seq} data-seq=${ev.seq}>
        <td class="num">${ev.seq}</td>
        <td><time datetime=${new Date(ev.ts).toISOString()}>${localTime(ev.ts)}</time></td>
        <td>${ev.twin ? html`<${Link} href=${twinPath(ev.twin, { as_of_version: ev.version })}
            aria-label=${`${ev.twin} as of version ${ev.version}`}>${ev.twin}</${Link}>` : '—'}</td>
        <td>${ev.kind}</td>
        <td class="change">${show(ev.patch ?? ev.state ?? ev.status ?? (ev.job ? `${ev.job} ${ev.status || ''}` : ''))}</td>
      </tr>`)}</tbody></table></div>`;
}
