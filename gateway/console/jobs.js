// The jobs page: create a job from a fleet query (the number of twins it will target shown
// first), the jobs with progress and per-state counts that follow them live, a job's executions
// by state, and cancel.
import { html, useEffect, useState } from './preact-htm.js';
import { api, enc, feed, withQuery } from './api.js';
import { Ago, Link, errorText, go, twinPath } from './util.js';

const STATES = ['pending', 'in_progress', 'succeeded', 'failed', 'timed_out', 'cancelled'];
const ENDED = ['succeeded', 'failed', 'timed_out', 'cancelled'];

function Progress({ job }) {
  const total = job.total || 0;
  const done = ENDED.reduce((n, s) => n + ((job.counts && job.counts[s]) || 0), 0);
  const pct = total ? Math.round((100 * done) / total) : (job.status === 'running' ? 0 : 100);
  return html`<div class="progress-line">
    <progress max=${total || 1} value=${total ? done : (job.status === 'running' ? 0 : 1)}
      aria-label=${`Job ${job.id}: ${done} of ${total} executions ended`}></progress>
    <span class="num">${done.toLocaleString()} / ${total.toLocaleString()} (${pct}%)</span>
  </div>`;
}

function Counts({ job }) {
  return html`<ul class="inline">${STATES.map((s) => html`<li key=${s}>
    <${Link} href=${withQuery('/console/jobs', { job: job.id, status: s })} data-state=${s}>
      ${s.replace('_', ' ')}: <span class="n">${((job.counts && job.counts[s]) || 0).toLocaleString()}</span></${Link}></li>`)}</ul>`;
}

function CreateJob({ initialQuery, onCreated }) {
  const [q, setQ] = useState(initialQuery || '');
  const [kind, setKind] = useState('desired');
  const [patch, setPatch] = useState('{"mode": "eco"}');
  const [cmdName, setCmdName] = useState('');
  const [cmdArgs, setCmdArgs] = useState('{}');
  const [rate, setRate] = useState('100');
  const [failedPct, setFailedPct] = useState('10');
  const [minDone, setMinDone] = useState('20');
  const [timeout, setTimeoutS] = useState('3600');
  const [count, setCount] = useState(null);
  const [countError, setCountError] = useState('');
  const [error, setError] = useState('');
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    let live = true;
    setCount(null);
    const t = setTimeout(() => {
      api(withQuery('/v1/fleet/count', { q }))
        .then(({ body }) => { if (live) { setCount(body.count); setCountError(''); } })
        .catch((e) => live && setCountError(errorText(e)));
    }, 250);
    return () => { live = false; clearTimeout(t); };
  }, [q]);

  const submit = async (e) => {
    e.preventDefault();
    const body = {
      target: { query: q.trim() || 'EXISTS(id)' },
      rate_per_s: Number(rate), timeout_s: Number(timeout),
      abort: { failed_pct: Number(failedPct), min_done: Number(minDone) },
    };
    try {
      if (kind === 'desired') body.action = { desired: JSON.parse(patch) };
      else body.action = { command: { name: cmdName, args: cmdArgs.trim() ? JSON.parse(cmdArgs) : {} } };
    } catch (err) { setError(`Not JSON: ${err.message}`); return; }
    setBusy(true);
    try {
      const { body: job } = await api('/v1/jobs', { method: 'POST', body });
      setError('');
      onCreated(job);
    } catch (err) { setError(errorText(err)); } finally { setBusy(false); }
  };

  return html`<section aria-labelledby="new-job-h" class="card">
    <h2 id="new-job-h">New job</h2>
    <form onSubmit=${submit}>
      <label for="job-q">Target: fleet query</label>
      <input id="job-q" value=${q} onInput=${(e) => setQ(e.target.value)} spellcheck="false" autocomplete="off"
        placeholder="empty: every twin" aria-describedby="job-count" />
      <p id="job-count" role="status" data-count=${count ?? ''}>${countError ? html`<span class="error">${countError}</span>`
        : count === null ? 'Counting…' : html`Will target <strong>${count.toLocaleString()}</strong> twin${count === 1 ? '' : 's'} (those matching when it starts).`}</p>
      <fieldset><legend>Action</legend>
        <label class="inline"><input type="radio" name="job-kind" value="desired" checked=${kind === 'desired'} onChange=${() => setKind('desired')} /> Desired patch</label>
        <label class="inline"><input type="radio" name="job-kind" value="command" checked=${kind === 'command'} onChange=${() => setKind('command')} /> Command</label>
        ${kind === 'desired' ? html`<label for="job-patch">Desired merge patch</label>
          <input id="job-patch" value=${patch} onInput=${(e) => setPatch(e.target.value)} spellcheck="false" autocomplete="off" />`
        : html`<div class="row"><span><label for="job-cmd">Command name</label><input id="job-cmd" required value=${cmdName} onInput=${(e) => setCmdName(e.target.value)} autocomplete="off" /></span>
          <span><label for="job-args">Arguments (JSON)</label><input id="job-args" value=${cmdArgs} onInput=${(e) => setCmdArgs(e.target.value)} spellcheck="false" autocomplete="off" /></span></div>`}
      </fieldset>
      <div class="row">
        <span><label for="job-rate">Rate (twins/s)</label><input id="job-rate" type="number" min="1" value=${rate} onInput=${(e) => setRate(e.target.value)} /></span>
        <span><label for="job-failed">Abort above failed %</label><input id="job-failed" type="number" min="0" max="100" value=${failedPct} onInput=${(e) => setFailedPct(e.target.value)} /></span>
        <span><label for="job-min">…once this many ended</label><input id="job-min" type="number" min="0" value=${minDone} onInput=${(e) => setMinDone(e.target.value)} /></span>
        <span><label for="job-timeout">Timeout per twin (s)</label><input id="job-timeout" type="number" min="1" value=${timeout} onInput=${(e) => setTimeoutS(e.target.value)} /></span>
      </div>
      <div class="actions"><button type="submit" class="primary" disabled=${busy}>Start job</button></div>
      ${error && html`<p class="error" role="alert">${error}</p>`}
    </form>
  </section>`;
}

function Executions({ job, status }) {
  const [list, setList] = useState(null);
  const [error, setError] = useState('');
  useEffect(() => {
    let live = true;
    api(withQuery(`/v1/jobs/${enc(job.id)}/twins`, { status, limit: 100 }))
      .then(({ body }) => live && setList(body.items || []))
      .catch((e) => live && setError(errorText(e)));
    return () => { live = false; };
  }, [job.id, status, job.updated_at, JSON.stringify(job.counts)]);
  return html`<section aria-labelledby="exec-h">
    <h3 id="exec-h">Executions${status ? `: ${status.replace('_', ' ')}` : ''}</h3>
    <label for="exec-status">Show</label>
    <select id="exec-status" value=${status || ''} onChange=${(e) => go(withQuery('/console/jobs', { job: job.id, status: e.target.value }))}>
      <option value="">every state</option>
      ${STATES.map((s) => html`<option value=${s} key=${s}>${s.replace('_', ' ')}</option>`)}
    </select>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${list && list.length === 0 && html`<p class="muted">None.</p>`}
    ${list && list.length > 0 && html`<div class="table-wrap"><table aria-label="Executions">
      <thead><tr><th scope="col">Twin</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Updated</th><th scope="col">Detail</th></tr></thead>
      <tbody>${list.map((x) => html`<tr key=${x.twin}>
        <th scope="row"><${Link} href=${twinPath(x.twin)}>${x.twin}</${Link}></th>
        <td><span class=${`pill exec-${x.status}`}>${x.status}</span></td>
        <td class="num">${x.attempts}</td><td><${Ago} ms=${x.updated_at} /></td><td>${x.detail || ''}</td>
      </tr>`)}</tbody></table></div>`}
  </section>`;
}

export function JobsPage({ params }) {
  const [jobs, setJobs] = useState(null);
  const [error, setError] = useState('');
  const [refresh, setRefresh] = useState(0);
  const selected = params.get('job');
  const creating = params.get('new') === '1';

  useEffect(() => { feed.setTwins(null); }, []);
  useEffect(() => {
    let live = true;
    (async () => {
      const all = [];
      let cursor;
      for (let i = 0; i < 5; i++) {
        const { body } = await api(withQuery('/v1/jobs', { limit: 200, cursor }));
        all.push(...body.items);
        if (!body.next_cursor) break;
        cursor = body.next_cursor;
      }
      if (live) { setJobs(all.reverse()); setError(''); }
    })().catch((e) => live && setError(errorText(e)));
    return () => { live = false; };
  }, [refresh]);
  // Job events mark creation and end; counts move with every execution, so running jobs are read
  // again every second while the page is open.
  useEffect(() => feed.subscribe((ev) => { if (ev.kind === 'job.changed' || ev.kind === 'resync') setRefresh((n) => n + 1); }), []);
  const running = jobs ? jobs.some((j) => j.status === 'running') : false;
  useEffect(() => {
    if (!running) return undefined;
    const t = setInterval(() => setRefresh((n) => n + 1), 1000);
    return () => clearInterval(t);
  }, [running]);

  const cancel = async (id) => {
    try {
      await api(`/v1/jobs/${enc(id)}/cancel`, { method: 'POST' });
      setRefresh((n) => n + 1);
    } catch (e) { setError(errorText(e)); }
  };

  const job = jobs && selected ? jobs.find((j) => j.id === selected) : null;
  return html`
    <h1>Jobs</h1>
    ${creating ? html`<${CreateJob} initialQuery=${params.get('q') || ''}
        onCreated=${(j) => { setRefresh((n) => n + 1); go(withQuery('/console/jobs', { job: j.id })); }} />`
      : html`<p><${Link} href="/console/jobs?new=1" class="button">New job…</${Link}></p>`}
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${jobs && jobs.length === 0 && html`<p class="muted">No jobs yet.</p>`}
    <ul class="jobs">${(jobs || []).map((j) => html`<li key=${j.id} class=${`card job ${j.id === selected ? 'selected' : ''}`} data-job=${j.id} data-status=${j.status}>
      <div class="job-head">
        <h2><${Link} href=${withQuery('/console/jobs', { job: j.id })}>${j.id}</${Link}></h2>
        <span class=${`pill job-${j.status}`}>${j.status}</span>
        <span class="muted">${j.action && j.action.command ? `command ${j.action.command.name}` : 'desired patch'},
          ${j.rate_per_s}/s, created <${Ago} ms=${j.created_at} /></span>
        ${j.status === 'running' && html`<button type="button" onClick=${() => cancel(j.id)} aria-label=${`Cancel job ${j.id}`}>Cancel</button>`}
      </div>
      <${Progress} job=${j} />
      <${Counts} job=${j} />
    </li>`)}</ul>
    ${job && html`<${Executions} job=${job} status=${params.get('status') || ''} />`}`;
}
