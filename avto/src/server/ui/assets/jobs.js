// The jobs list: filters in the URL, cursor paging, live row updates, a "new jobs" banner,
// bulk cancel with a dry-run count.
import { h, replace, statusBadge, timeEl, STATUSES, statusLabel, confirmDialog, isTerminal } from './dom.js';
import { get, post, enc } from './api.js';

const LIMIT = 50;
const MAX_NEW = 10000;

/** The filters of a jobs-list URL. */
function filtersOf(url) {
  const p = url.searchParams;
  const statuses = (p.get('status') || '').split(',').filter((x) => STATUSES.includes(x));
  const num = (k) => (/^\d{1,16}$/.test(p.get(k) || '') ? p.get(k) : '');
  return { status: statuses, blueprint: (p.get('blueprint') || '').slice(0, 200), from: num('from'), to: num('to'),
    q: (p.get('q') || '').slice(0, 200) };
}

function queryOf(f, after) {
  const q = new URLSearchParams();
  if (f.status.length) q.set('status', f.status.join(','));
  for (const k of ['blueprint', 'from', 'to', 'q']) if (f[k]) q.set(k, f[k]);
  if (after) q.set('after', after);
  const s = q.toString();
  return s ? `/ui/jobs?${s}` : '/ui/jobs';
}

const localInput = (ms) => {
  if (!ms) return '';
  const d = new Date(Number(ms) - new Date(Number(ms)).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
};
const msOf = (value) => {
  const t = value ? new Date(value).getTime() : NaN;
  return Number.isFinite(t) ? String(t) : '';
};

function matches(f, row) {
  if (f.status.length && !f.status.includes(row.status)) return false;
  if (f.blueprint && row.blueprint !== f.blueprint) return false;
  if (f.q && !String(row.id).startsWith(f.q)) return false;
  const c = Number(row.created_at_ms);
  if (f.from && Number.isFinite(c) && c < Number(f.from)) return false;
  if (f.to && Number.isFinite(c) && c > Number(f.to)) return false;
  return true;
}

export function jobsView({ main, url, navigate, session }) {
  const f = filtersOf(url);
  const after = url.searchParams.get('after') || '';
  const back = Array.isArray(history.state?.back) ? history.state.back : [];
  const operator = session.role === 'operator';
  const rows = new Map(); // id -> <tr>
  const fresh = new Set(); // ids announced as new
  let loadedAt = Date.now();
  let newest = 0;

  // ---- filters ----
  const checks = STATUSES.map((st) => h('label', {}, h('input', { type: 'checkbox', name: 'status', value: st,
    checked: f.status.includes(st) }), ` ${statusLabel(st)}`));
  const blueprint = h('input', { id: 'f-blueprint', type: 'text', value: f.blueprint, maxlength: 200, autocomplete: 'off' });
  const from = h('input', { id: 'f-from', type: 'datetime-local', value: localInput(f.from) });
  const to = h('input', { id: 'f-to', type: 'datetime-local', value: localInput(f.to) });
  const q = h('input', { id: 'f-q', type: 'search', value: f.q, maxlength: 200, autocomplete: 'off', placeholder: 'id prefix' });
  const filterForm = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter jobs' },
    h('fieldset', {}, h('legend', {}, 'Status'), h('div', { class: 'checks' }, checks)),
    h('div', { class: 'field' }, h('label', { for: 'f-blueprint' }, 'Blueprint'), blueprint),
    h('div', { class: 'field' }, h('label', { for: 'f-from' }, 'Created from'), from),
    h('div', { class: 'field' }, h('label', { for: 'f-to' }, 'Created to'), to),
    h('div', { class: 'field' }, h('label', { for: 'f-q' }, 'Search job ids'), q),
    h('div', { class: 'row-actions' },
      h('button', { type: 'submit', class: 'btn btn-primary', id: 'apply-filters' }, 'Apply filters'),
      h('a', { href: '/ui/jobs', class: 'btn' }, 'Clear')));
  filterForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const nf = { status: checks.map((l) => l.firstChild).filter((c) => c.checked).map((c) => c.value),
      blueprint: blueprint.value.trim(), from: msOf(from.value), to: msOf(to.value), q: q.value.trim() };
    navigate(queryOf(nf, ''));
  });

  // ---- jump to a job, bulk cancel ----
  const jumpInput = h('input', { id: 'jump', type: 'text', maxlength: 200, autocomplete: 'off', required: true });
  const jump = h('form', { class: 'toolbar', 'aria-label': 'Open a job by id' },
    h('div', { class: 'field' }, h('label', { for: 'jump' }, 'Go to job id'), jumpInput),
    h('button', { type: 'submit', class: 'btn' }, 'Open'));
  jump.addEventListener('submit', (e) => {
    e.preventDefault();
    const id = jumpInput.value.trim();
    if (id) navigate(`/ui/jobs/${enc(id)}`);
  });
  const bulkNote = h('div', { role: 'status', 'aria-live': 'polite' });
  const bulk = h('button', { type: 'button', class: 'btn btn-danger', id: 'bulk-cancel' }, 'Cancel all matching…');
  bulk.addEventListener('click', () => bulkCancel());

  // ---- list ----
  const banner = h('div', { role: 'status', 'aria-live': 'polite' });
  const errorBox = h('div');
  const summary = h('p', { class: 'muted', id: 'jobs-summary' });
  const head = h('tr', {}, h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, 'Job'),
    h('th', { scope: 'col' }, 'Blueprint'), h('th', { scope: 'col' }, 'State'),
    operator ? h('th', { scope: 'col' }, 'Client') : null,
    h('th', { scope: 'col' }, 'Created'), h('th', { scope: 'col' }, 'Updated'), h('th', { scope: 'col' }, 'Progress'));
  const tbody = h('tbody');
  const table = h('div', { class: 'table-wrap', hidden: true }, h('table', { id: 'jobs-table', 'aria-describedby': 'jobs-summary' },
    h('caption', { class: 'sr-only' }, 'Jobs, newest first'), h('thead', {}, head), tbody));
  const newer = h('button', { type: 'button', class: 'btn', id: 'jobs-newer', disabled: !after }, '← Newer');
  const older = h('button', { type: 'button', class: 'btn', id: 'jobs-older', disabled: true }, 'Older →');
  let next = null;
  newer.addEventListener('click', () => {
    const prev = back.length ? back[back.length - 1] : '';
    navigate(queryOf(f, prev), { state: { back: back.slice(0, -1) } });
  });
  older.addEventListener('click', () => {
    if (next) navigate(queryOf(f, next), { state: { back: [...back, after] } });
  });

  main.append(h('h1', { id: 'page-title', tabindex: -1 }, 'Jobs'), filterForm,
    h('div', { class: 'toolbar' }, jump, h('div', { class: 'row-actions' }, bulk)), bulkNote, banner, errorBox, summary, table,
    h('nav', { class: 'pager', 'aria-label': 'Pages' }, newer, older));

  function cells(row) {
    // The last progress a worker reported means nothing once the job has ended.
    const pct = typeof row.progress === 'number' && !isTerminal(row.status) ? Math.round(Math.max(0, Math.min(1, row.progress)) * 100) : null;
    return [
      h('td', {}, statusBadge(row.status)),
      h('td', { class: 'mono' }, h('a', { href: `/ui/jobs/${enc(row.id)}` }, row.id)),
      h('td', {}, row.blueprint ?? '—'),
      h('td', { class: 'mono' }, row.current_state ?? '—'),
      operator ? h('td', {}, row.client_id ?? '—') : null,
      h('td', {}, timeEl(row.created_at_ms)),
      h('td', {}, timeEl(row.updated_at_ms)),
      h('td', {}, pct === null ? '' : h('progress', { max: 100, value: pct, 'aria-label': `Progress of ${row.id}` }), pct === null ? '' : ` ${pct}%`),
    ];
  }

  function renderRows(jobs) {
    rows.clear();
    replace(tbody, jobs.map((row) => {
      const tr = h('tr', { dataset: { id: row.id, created: row.created_at_ms ?? '' } }, cells(row));
      rows.set(row.id, tr);
      newest = Math.max(newest, Number(row.created_at_ms) || 0);
      return tr;
    }));
  }

  function showBanner() {
    if (!fresh.size) return replace(banner);
    const n = fresh.size >= MAX_NEW ? `${MAX_NEW}+` : String(fresh.size);
    replace(banner, h('div', { class: 'banner', id: 'new-jobs' }, `${n} new job${fresh.size === 1 ? '' : 's'}`, ' — ',
      h('button', { type: 'button', class: 'btn btn-link', onclick: () => showNew() }, 'show')));
  }

  function showNew() {
    fresh.clear();
    showBanner();
    if (after) navigate(queryOf(f, ''), { state: { back: [] } });
    else load().then(() => document.getElementById('jobs-table')?.focus?.());
  }

  let seq = 0;
  async function load() {
    const mine = ++seq;
    summary.textContent = 'Loading…';
    try {
      const page = await get('/ui/api/jobs', { status: f.status, blueprint: f.blueprint, from: f.from, to: f.to, q: f.q,
        after, limit: LIMIT });
      if (mine !== seq) return;
      replace(errorBox);
      loadedAt = Date.now();
      const jobs = Array.isArray(page?.jobs) ? page.jobs : [];
      next = page?.next || null;
      older.disabled = !next;
      renderRows(jobs);
      table.hidden = jobs.length === 0;
      summary.textContent = jobs.length === 0
        ? (after ? 'No older jobs match these filters.' : 'No jobs match these filters.')
        : `Showing ${jobs.length} job${jobs.length === 1 ? '' : 's'}${after ? ' (older page)' : ''}, newest first.`;
    } catch (e) {
      if (mine !== seq) return;
      summary.textContent = '';
      if (!rows.size) table.hidden = true; // an error, never an empty list
      replace(errorBox, h('div', { class: 'error', role: 'alert', id: 'jobs-error' }, `Could not load jobs: ${e.message}`,
        h('button', { type: 'button', class: 'btn', onclick: () => load() }, 'Retry')));
    }
  }

  async function bulkCancel() {
    const filter = { status: f.status, blueprint: f.blueprint || undefined, from: f.from ? Number(f.from) : undefined,
      to: f.to ? Number(f.to) : undefined, q: f.q || undefined };
    bulk.disabled = true;
    replace(bulkNote);
    try {
      const dry = await post('/ui/api/jobs/cancel', { filter, dry_run: true });
      if (!dry.matched) {
        replace(bulkNote, h('p', { class: 'notice' }, 'No active job matches these filters: nothing to cancel.'));
        return;
      }
      const more = dry.more ? ' (at most this many in one go; run it again for the rest)' : '';
      const yes = await confirmDialog({ title: 'Cancel matching jobs?',
        body: `${dry.matched} active job${dry.matched === 1 ? '' : 's'} match${dry.matched === 1 ? 'es' : ''} the current filters${more}. Cancel ${dry.matched === 1 ? 'it' : 'them'}?`,
        confirm: `Cancel ${dry.matched} job${dry.matched === 1 ? '' : 's'}`, cancel: 'Keep them' });
      if (!yes) return;
      const done = await post('/ui/api/jobs/cancel', { filter, dry_run: false });
      replace(bulkNote, h('p', { class: 'notice' }, `Cancelled ${done.cancelled} job${done.cancelled === 1 ? '' : 's'}.`,
        done.more ? ' More match: run it again for the rest.' : ''));
      load();
    } catch (e) {
      replace(bulkNote, h('div', { class: 'error', role: 'alert' }, `Bulk cancel failed: ${e.message}`));
    } finally {
      bulk.disabled = false;
    }
  }

  load().then(() => {
    if (url.searchParams.toString() === '') return;
    main.querySelector('#page-title')?.focus();
  });

  return {
    refresh: load,
    onJob(row) {
      if (!row || !row.id) return;
      const tr = rows.get(row.id);
      if (tr) {
        // a row on screen: update it in place, never move it
        replace(tr, cells({ ...row, created_at_ms: row.created_at_ms ?? tr.dataset.created }));
        return;
      }
      if (fresh.has(row.id) || fresh.size >= MAX_NEW || !matches(f, row)) return;
      const created = Number(row.created_at_ms);
      const cutoff = after ? loadedAt - 1000 : (newest || loadedAt - 1000);
      if (Number.isFinite(created) && created > 0 && created < cutoff) return;
      fresh.add(row.id);
      showBanner();
    },
  };
}
