// The approvals inbox: jobs waiting for a human, one button per decision their blueprint allows.
import { h, replace, timeEl, fmtDuration, statusBadge } from './dom.js';
import { get, post, enc } from './api.js';

export function approvalsView({ main }) {
  const sent = new Map(); // job id -> decision sent from this page
  const errorBox = h('div');
  const summary = h('p', { class: 'muted', id: 'approvals-summary' });
  const tbody = h('tbody');
  const table = h('div', { class: 'table-wrap' }, h('table', { id: 'approvals-table', 'aria-describedby': 'approvals-summary' },
    h('caption', { class: 'sr-only' }, 'Jobs waiting for a decision'),
    h('thead', {}, h('tr', {}, ['Job', 'Blueprint', 'Message', 'Waiting', 'Decision'].map((t) => h('th', { scope: 'col' }, t)))),
    tbody));
  const more = h('button', { type: 'button', class: 'btn', hidden: true }, 'Older →');
  const banner = h('div', { role: 'status', 'aria-live': 'polite' });
  let next = null;
  const rows = new Map();
  main.append(h('h1', { id: 'page-title', tabindex: -1 }, 'Approvals'), banner, errorBox, summary, table,
    h('nav', { class: 'pager', 'aria-label': 'Pages' }, more));

  function row(job) {
    const a = job.approval || {};
    const note = h('span', { class: 'muted', role: 'status' });
    const buttons = (a.decisions || []).map((d, i) => h('button', { type: 'button', class: ['btn', i === 0 && 'btn-primary'], dataset: { decision: d },
      disabled: sent.has(job.id), 'aria-label': `${d}: job ${job.id}` }, d));
    for (const b of buttons) {
      b.addEventListener('click', async () => {
        if (sent.has(job.id)) return; // a double click applies once
        sent.set(job.id, b.dataset.decision);
        for (const x of buttons) x.disabled = true;
        note.textContent = ' Sending…';
        try {
          await post(`/ui/api/jobs/${enc(job.id)}/approval`, { decision: b.dataset.decision });
          note.textContent = ` ${b.dataset.decision}: applied`;
        } catch (e) {
          note.textContent = e.status === 409 ? ' already decided' : ` failed: ${e.message}`;
          if (e.status !== 409) { sent.delete(job.id); for (const x of buttons) x.disabled = false; }
        }
      });
    }
    const waited = a.since_ms ? Date.now() - Number(a.since_ms) : null;
    const tr = h('tr', { dataset: { id: job.id } },
      h('td', {}, h('a', { class: 'mono', href: `/ui/jobs/${enc(job.id)}` }, job.id)),
      h('td', {}, job.blueprint ?? '—'),
      h('td', { class: 'wrap' }, a.message || '—'),
      h('td', {}, waited === null ? '—' : fmtDuration(waited), a.since_ms ? h('br') : null, a.since_ms ? timeEl(a.since_ms) : null),
      h('td', {}, h('div', { class: 'decisions', role: 'group', 'aria-label': `Decisions for job ${job.id}` }, buttons, note)));
    rows.set(job.id, tr);
    return tr;
  }

  let seq = 0;
  async function load(append = false) {
    const mine = ++seq;
    try {
      const page = await get('/ui/api/approvals', { after: append ? next : undefined });
      if (mine !== seq) return;
      replace(errorBox);
      replace(banner);
      const jobs = Array.isArray(page?.jobs) ? page.jobs : [];
      if (!append) { rows.clear(); replace(tbody); }
      tbody.append(...jobs.map(row));
      next = page?.next || null;
      more.hidden = !next;
      table.hidden = rows.size === 0;
      summary.textContent = rows.size ? `${rows.size} job${rows.size === 1 ? '' : 's'} waiting for a decision.` : 'Nothing is waiting for a decision.';
    } catch (e) {
      if (mine !== seq) return;
      replace(errorBox, h('div', { class: 'error', role: 'alert' }, `Could not load approvals: ${e.message}`,
        h('button', { type: 'button', class: 'btn', onclick: () => load() }, 'Retry')));
    }
  }
  more.addEventListener('click', () => load(true));
  load();

  return {
    refresh: () => load(),
    onJob(job) {
      if (!job?.id) return;
      const tr = rows.get(job.id);
      if (tr && job.status !== 'waiting_for_human') {
        // decided (here or elsewhere): say so in place, keep the row where it is
        const cell = tr.lastElementChild;
        replace(cell, statusBadge(job.status), sent.has(job.id) ? ` (${sent.get(job.id)})` : '');
      } else if (!tr && job.status === 'waiting_for_human') {
        replace(banner, h('div', { class: 'banner' }, 'New approvals are waiting — ',
          h('button', { type: 'button', class: 'btn btn-link', onclick: () => load() }, 'show')));
      }
    },
  };
}
