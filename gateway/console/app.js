// The console's shell: navigation, the feed's state, the token prompt, and the page for the path.
import { html, render, useEffect, useRef, useState } from './preact-htm.js';
import { feed, onAuth, setToken, token } from './api.js';
import { Link } from './util.js';
import { FleetPage } from './fleet.js';
import { TwinPage } from './twin.js';
import { JobsPage } from './jobs.js';
import { EventsPage } from './events.js';
import { SystemPage } from './system.js';

const PAGES = [
  ['fleet', 'Fleet'],
  ['jobs', 'Jobs'],
  ['events', 'Events'],
  ['system', 'System'],
];

function route(pathname) {
  const parts = pathname.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'console' && parts[1] === 'twins' && parts[2]) return { page: 'twin', id: parts[2] };
  if (parts[0] === 'console' && PAGES.some(([p]) => p === parts[1])) return { page: parts[1] };
  return { page: 'fleet' };
}

function FeedState() {
  const [state, setState] = useState(feed.state);
  useEffect(() => feed.onStatus(setState), []);
  const label = { live: 'Live', connecting: 'Connecting…', disconnected: 'Disconnected: reconnecting…' }[state];
  return html`<span class=${`feed-state ${state}`} role="status" aria-live="polite" data-feed=${state}>${label}</span>`;
}

function TokenDialog({ onDone }) {
  const [value, setValue] = useState('');
  const input = useRef(null);
  useEffect(() => input.current && input.current.focus(), []);
  const submit = (e) => {
    e.preventDefault();
    setToken(value.trim());
    onDone();
  };
  return html`<div class="overlay">
    <form class="dialog" role="dialog" aria-modal="true" aria-labelledby="token-title" onSubmit=${submit}>
      <h2 id="token-title">API token</h2>
      <p>This doppeld needs a token (<code>--api-token</code>). It is kept in this tab only
        (sessionStorage) and sent as a bearer token; it never appears in a URL.</p>
      <label for="token-input">Token</label>
      <input id="token-input" type="password" autocomplete="off" ref=${input}
        value=${value} onInput=${(e) => setValue(e.target.value)} />
      <div class="actions"><button type="submit" class="primary">Use this token</button></div>
    </form>
  </div>`;
}

function App() {
  const [where, setWhere] = useState(() => ({ ...route(location.pathname), search: location.search }));
  const [askToken, setAskToken] = useState(false);
  useEffect(() => {
    const onPop = () => {
      setWhere({ ...route(location.pathname), search: location.search });
      const main = document.getElementById('main');
      if (main) main.focus({ preventScroll: true });
    };
    addEventListener('popstate', onPop);
    return () => removeEventListener('popstate', onPop);
  }, []);
  // A new token: the page reads its data again (remounted).
  const [authGeneration, setAuthGeneration] = useState(0);
  useEffect(() => onAuth((refused) => {
    setAskToken(refused);
    if (!refused) setAuthGeneration((n) => n + 1);
  }), []);
  useEffect(() => {
    const titles = { twin: `Twin ${where.id}`, fleet: 'Fleet', jobs: 'Jobs', events: 'Events', system: 'System' };
    document.title = `${titles[where.page]} — Doppel`;
  }, [where]);

  let page;
  const params = new URLSearchParams(where.search);
  if (where.page === 'twin') page = html`<${TwinPage} key=${where.id} id=${where.id} params=${params} />`;
  else if (where.page === 'jobs') page = html`<${JobsPage} params=${params} />`;
  else if (where.page === 'events') page = html`<${EventsPage} params=${params} />`;
  else if (where.page === 'system') page = html`<${SystemPage} />`;
  else page = html`<${FleetPage} params=${params} />`;

  const current = where.page === 'twin' ? 'fleet' : where.page;
  return html`
    <a class="skip" href="#main">Skip to content</a>
    <header class="top">
      <span class="brand">Doppel</span>
      <nav aria-label="Pages">
        ${PAGES.map(([p, label]) => html`<${Link} href=${`/console/${p}`}
            aria-current=${current === p ? 'page' : undefined}>${label}</${Link}>`)}
      </nav>
      <${FeedState} />
      <button type="button" class="quiet" onClick=${() => setAskToken(true)}>
        ${token() ? 'Change token' : 'Set token'}</button>
    </header>
    <main id="main" tabindex="-1" key=${authGeneration}>${page}</main>
    ${askToken && html`<${TokenDialog} onDone=${() => setAskToken(false)} />`}`;
}

render(html`<${App} />`, document.getElementById('app'));
