// One job: status, data, timeline, graph, "why is it waiting?", cancel and approval actions.
import { h, replace, statusBadge, timeEl, fmtDuration, fmtTime, jsonBlock, isTerminal, confirmDialog } from './dom.js';
import { get, post, enc } from './api.js';
import { graphFigure } from './graph.js';

function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

const jobLink = (row) => h('a', { href: `/ui/jobs/${enc(row.id)}`, class: 'mono' }, row.id);

function jobTable(list, caption) {
  return h('div', { class: 'table-wrap' }, h('table', {}, h('caption', { class: 'sr-only' }, caption),
    h('thead', {}, h('tr', {}, ['Status', 'Job', 'Blueprint', 'State', 'Updated'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, list.map((r) => h('tr', {}, h('td', {}, statusBadge(r.status)), h('td', {}, jobLink(r)),
      h('td', {}, r.blueprint ?? '—'), h('td', { class: 'mono' }, r.current_state ?? '—'), h('td', {}, timeEl(r.updated_at_ms)))))));
}

/** The "Why is it waiting?" panel from the server's `why` object. */
export function whyPanel(why) {
  const body = [];
  switch (why.kind) {
    case 'worker': {
      const n = Number(why.live_workers_with_skill ?? 0);
      body.push(h('p', { id: 'why-summary' }, `Waiting for a worker with skill `, h('code', {}, why.skill ?? '?'), `: `,
        h('strong', {}, n === 0 ? 'no live worker offers this skill.' : `${n} live worker${n === 1 ? '' : 's'} offer${n === 1 ? 's' : ''} it.`)));
      const req = why.requirements && Object.keys(why.requirements).length ? JSON.stringify(why.requirements) : null;
      body.push(facts([['Resources needed', req ? h('code', {}, req) : 'none'], ['Max cost', why.max_cost ?? 'no limit'],
        ['Deadline', why.deadline_ms ? timeEl(why.deadline_ms) : 'none'],
        ['Attempt', why.attempt ? `${why.attempt} of ${why.max_attempts ?? '?'}` : null],
        ['Last attempt failed with', why.last_error_code ? [h('code', {}, why.last_error_code), ` (${ERROR_CLASS[why.last_error_class] ?? why.last_error_class})`] : null],
        ['Next retry', why.next_retry_at_ms ? timeEl(why.next_retry_at_ms) : null],
        ['Assigned to', why.assigned_worker ? [h('code', {}, why.assigned_worker), why.picked_up ? ' (running it)' : ' (on its queue)'] : 'no worker yet']]));
      const ws = Array.isArray(why.workers) ? why.workers : [];
      if (ws.length) {
        body.push(h('table', {}, h('caption', { class: 'sr-only' }, 'Why each worker is not taking it'),
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Worker'), h('th', { scope: 'col' }, 'Not taking it because'))),
          h('tbody', {}, ws.map((w) => h('tr', {}, h('td', { class: 'mono' }, w.worker_id), h('td', { class: 'wrap' }, w.reason))))));
      }
      break;
    }
    case 'approval':
      body.push(h('p', { id: 'why-summary' }, 'Waiting for a human decision', why.waiting_ms !== undefined ? ` for ${fmtDuration(why.waiting_ms)}` : '', '.'),
        facts([['Message', why.message ?? '—'], ['Waiting since', why.since_ms ? timeEl(why.since_ms) : null],
          ['Decisions', (why.decisions || []).join(', ') || '—']]));
      break;
    case 'parallel': {
      const pending = Array.isArray(why.pending) ? why.pending : [];
      body.push(h('p', { id: 'why-summary' }, `Waiting for ${pending.length} parallel branch${pending.length === 1 ? '' : 'es'}; ${why.done ?? 0} done.`));
      if (pending.length) {
        body.push(h('table', {}, h('caption', { class: 'sr-only' }, 'Pending branches'),
          h('thead', {}, h('tr', {}, ['Task', 'Task id', 'Worker'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', {}, pending.map((p) => h('tr', {}, h('td', {}, p.task_type ?? '—'), h('td', { class: 'mono' }, p.task_id ?? '—'),
            h('td', { class: 'mono' }, p.worker_id ?? 'not dispatched'))))));
      }
      break;
    }
    case 'sub_job':
      body.push(h('p', { id: 'why-summary' }, 'Waiting for the child job ', why.child_job_id ? jobLink({ id: why.child_job_id }) : '?', ' to end.'));
      break;
    case 'retry':
      body.push(h('p', { id: 'why-summary' }, 'A handler failed; ',
        why.next_retry_at_ms ? ['attempt ', String(why.attempt ?? '?'), ' of ', String(why.max_attempts ?? '?'), ' runs at ', timeEl(why.next_retry_at_ms)] : 'it runs again shortly',
        '.'), facts([['Error', why.error]]));
      break;
    default:
      body.push(h('pre', { class: 'data' }, JSON.stringify(why, null, 2)));
  }
  return h('section', { class: 'panel why', 'aria-labelledby': 'why-title', id: 'why' }, h('h2', { id: 'why-title' }, 'Why is it waiting?'), body);
}

// Fields of a timeline row that have their own column (the rest are shown as details).
const OWN_COLUMNS = new Set(['at_ms', 'kind', 'state', 'step', 'worker_id', 'attempt', 'max_attempts', 'error_code', 'error_class',
  'error', 'next_retry_at_ms', 'detail', 'status', 'task_id', 'count']);

// Keys of a history row's details that the row already shows in a column.
const SHOWN_DETAIL = new Set(['result_status', 'error_code', 'error_class', 'error', 'error_message', 'next_retry_at_ms', 'delay_ms', 'task_type', 'next_task_id']);

const ERROR_CLASS = { transient: 'transient (retried)', permanent: 'permanent', invalid_input: 'invalid input' };

function timelineTable(timeline) {
  return h('div', { class: 'table-wrap' }, h('table', { id: 'timeline' }, h('caption', { class: 'sr-only' }, 'Timeline'),
    h('thead', {}, h('tr', {}, ['Time', 'Event', 'State', 'Worker', 'Attempt', 'Error', 'Next retry', 'Details'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, timeline.map((e) => {
      const details = Object.entries(e).filter(([k, v]) => !OWN_COLUMNS.has(k) && v !== null && v !== undefined && v !== '')
        .map(([k, v]) => {
          if (k.endsWith('_at_ms') || k.endsWith('_ms') && k !== 'duration_ms') return `${k.replace(/_(at_)?ms$/, '').replace(/_/g, ' ')}: ${fmtTime(v)}`;
          if (k === 'duration_ms') return `took ${v} ms`;
          return `${k.replace(/_/g, ' ')}: ${typeof v === 'object' ? JSON.stringify(v) : v}`;
        });
      if (typeof e.detail === 'string') details.unshift(e.detail);
      else if (e.detail && typeof e.detail === 'object') {
        for (const [k, v] of Object.entries(e.detail)) {
          if (!SHOWN_DETAIL.has(k) && v !== null && v !== undefined && v !== '') details.push(`${k.replace(/_/g, ' ')}: ${typeof v === 'object' ? JSON.stringify(v) : v}`);
        }
      }
      const attempt = e.attempt ? (e.max_attempts ? `${e.attempt} of ${e.max_attempts}` : String(e.attempt)) : '';
      const error = [e.error_code ? h('code', {}, e.error_code) : null, e.error_class ? ` ${ERROR_CLASS[e.error_class] ?? e.error_class}` : null,
        e.error ? h('span', { class: 'muted' }, ` ${e.error}`) : null].filter(Boolean);
      const kind = String(e.kind ?? '').replace(/_/g, ' ');
      return h('tr', { 'data-kind': e.kind ?? '' }, h('td', { class: 'nowrap' }, timeEl(e.at_ms)), h('td', {}, e.result ? `${kind} (${e.result})` : kind),
        h('td', { class: 'mono' }, e.state ?? ''), h('td', { class: 'mono' }, e.worker_id ?? ''), h('td', { class: 'nowrap' }, attempt),
        h('td', { class: 'wrap' }, error), h('td', { class: 'nowrap' }, e.next_retry_at_ms ? timeEl(e.next_retry_at_ms) : ''),
        h('td', { class: 'wrap' }, details.join(' · ')));
    }))));
}

export function jobView({ main }, id) {
  const decided = new Set(); // approval decisions sent from this page (buttons stay disabled)
  let current = null;
  let inflight = null;
  let again = false;
  let graphKey = '';
  const body = h('div', { id: 'job' });
  const graphBox = h('div');
  main.append(h('p', { class: 'crumbs' }, h('a', { href: '/ui/jobs' }, '← Jobs')), body);

  async function load() {
    if (inflight) { again = true; return inflight; }
    inflight = (async () => {
      try {
        const data = await get(`/ui/api/jobs/${enc(id)}`);
        current = data;
        render(data);
      } catch (e) {
        if (e.status === 404) {
          replace(body, h('h1', { id: 'page-title', tabindex: -1 }, 'Job not found'),
            h('p', {}, 'No job ', h('code', {}, id), ' is visible to you.'));
        } else if (current) {
          body.prepend(h('div', { class: 'error', role: 'alert' }, `Could not refresh: ${e.message}`,
            h('button', { type: 'button', class: 'btn', onclick: () => load() }, 'Retry')));
        } else {
          replace(body, h('h1', { id: 'page-title', tabindex: -1 }, `Job ${id}`),
            h('div', { class: 'error', role: 'alert' }, `Could not load the job: ${e.message}`,
              h('button', { type: 'button', class: 'btn', onclick: () => load() }, 'Retry')));
        }
      } finally {
        inflight = null;
        if (again) { again = false; load(); }
      }
    })();
    return inflight;
  }

  function render(data) {
    const job = data.job || {};
    const focusedId = document.activeElement?.id;
    const terminal = isTerminal(job.status);
    const title = h('h1', { id: 'page-title', tabindex: -1 }, 'Job ', h('code', {}, job.id ?? id), statusBadge(job.status));

    const actions = h('div', { class: 'row-actions', id: 'job-actions' });
    if (!terminal) {
      actions.append(h('button', { type: 'button', class: 'btn btn-danger', id: 'cancel-job', onclick: cancelJob }, 'Cancel job…'));
    }

    const task = job.current_task;
    let progress = null;
    if (task && !terminal) {
      const p = typeof job.progress === 'number' ? Math.max(0, Math.min(1, job.progress)) : null;
      // a progress bar only while a worker has the task (indeterminate until it reports progress)
      const bar = !task.worker_id ? h('p', {}, 'Queued: no worker has taken it yet.')
        : h('p', {}, h('label', { for: 'task-progress' }, 'Progress '),
          p === null ? h('progress', { id: 'task-progress' }) : h('progress', { id: 'task-progress', max: 100, value: Math.round(p * 100) }),
          p === null ? ' running' : ` ${Math.round(p * 100)}%`, job.progress_message ? ` — ${job.progress_message}` : '');
      progress = h('section', { class: 'panel', 'aria-labelledby': 'task-title' }, h('h2', { id: 'task-title' }, 'Current task'), bar,
        facts([['Task', task.task_type], ['Task id', task.task_id ? h('code', {}, task.task_id) : null],
          ['Worker', task.worker_id ? h('code', {}, task.worker_id) : 'none yet'],
          ['Attempt', task.attempt ? `${task.attempt} of ${task.max_attempts ?? '?'}` : null],
          ['Dispatched', task.dispatched_at_ms ? timeEl(task.dispatched_at_ms) : null],
          ['Deadline', task.deadline_ms ? timeEl(task.deadline_ms) : null]]));
    }

    let approval = null;
    if (job.approval && job.status === 'waiting_for_human') {
      const buttons = (job.approval.decisions || []).map((d, i) => h('button', { type: 'button', class: ['btn', i === 0 && 'btn-primary'],
        id: `decide-${d}`, disabled: decided.size > 0, onclick: (e) => decide(d, e.currentTarget) }, d));
      approval = h('section', { class: 'panel', 'aria-labelledby': 'approval-title' }, h('h2', { id: 'approval-title' }, 'Approval'),
        h('p', {}, job.approval.message || 'A decision is needed.'), h('div', { class: 'decisions', role: 'group', 'aria-label': 'Decisions' }, buttons),
        h('p', { role: 'status', id: 'approval-note', class: 'muted' }, decided.size ? `Sent: ${[...decided].join(', ')}` : ''));
    }

    const parentRow = data.parent || (job.parent_job_id ? { id: job.parent_job_id } : null);
    const left = h('div', {},
      h('section', { 'aria-labelledby': 'facts-title' }, h('h2', { id: 'facts-title' }, 'Summary'), facts([
        ['Status', statusBadge(job.status)], ['Blueprint', job.blueprint], ['Current state', job.current_state ? h('code', {}, job.current_state) : null],
        ['Client', job.client_id], ['Created', timeEl(job.created_at_ms)], ['Updated', timeEl(job.updated_at_ms)],
        ['Retries', job.retry_count], ['Parent job', parentRow ? jobLink(parentRow) : null],
        ['Sub-job', job.sub_job?.child_job_id ? jobLink({ id: job.sub_job.child_job_id }) : null],
        ['Waiting', job.waiting_reason], ['Error', job.error_message]])),
      h('section', { 'aria-labelledby': 'init-title' }, h('h2', { id: 'init-title' }, 'Initial data'), jsonBlock(job.initial_data ?? null, 'Initial data')),
      h('section', { 'aria-labelledby': 'result-title' }, h('h2', { id: 'result-title' }, 'Result'),
        job.result === undefined || job.result === null ? h('p', { class: 'muted' }, terminal ? 'No result.' : 'Not finished yet.') : jsonBlock(job.result, 'Result')),
      job.error ? h('section', { 'aria-labelledby': 'err-title' }, h('h2', { id: 'err-title' }, 'Error'), jsonBlock(job.error, 'Error')) : null);
    const right = h('section', { 'aria-labelledby': 'graph-title' }, h('h2', { id: 'graph-title' }, 'Graph'), graphBox);

    const timeline = Array.isArray(data.timeline) ? data.timeline : [];
    const children = Array.isArray(data.children) ? data.children : [];
    const branches = Array.isArray(job.branches) ? job.branches : [];
    replace(body, title, actions.firstChild ? actions : null, approval, data.why ? whyPanel(data.why) : null, progress,
      h('div', { class: 'grid' }, left, right),
      branches.length ? h('section', { 'aria-labelledby': 'br-title' }, h('h2', { id: 'br-title' }, 'Parallel branches'),
        jsonBlock(branches, 'Parallel branches')) : null,
      children.length ? h('section', { 'aria-labelledby': 'ch-title' }, h('h2', { id: 'ch-title' }, 'Child jobs'), jobTable(children, 'Child jobs')) : null,
      h('section', { 'aria-labelledby': 'tl-title' }, h('h2', { id: 'tl-title' }, 'Timeline'),
        timeline.length ? timelineTable(timeline) : h('p', { class: 'muted' }, 'No transitions yet.')));
    document.title = `Job ${job.id ?? id} · avto`;

    const key = `${job.status}|${job.current_state}|${timeline.length}|${(job.path || []).length}`;
    if (key !== graphKey) {
      graphKey = key;
      graphFigure(`/ui/api/jobs/${enc(id)}/graph.svg`, job, timeline).then((fig) => replace(graphBox, fig));
    }
    if (focusedId) document.getElementById(focusedId)?.focus();
  }

  async function cancelJob() {
    const yes = await confirmDialog({ title: 'Cancel this job?', body: `Job ${id} stops; a running task is told to stop. This cannot be undone.`,
      confirm: 'Cancel job', cancel: 'Keep running' });
    if (!yes) return;
    try {
      await post(`/ui/api/jobs/${enc(id)}/cancel`);
    } catch (e) {
      if (e.status !== 409) body.prepend(h('div', { class: 'error', role: 'alert' }, `Could not cancel: ${e.message}`));
    }
    await load();
    document.getElementById('page-title')?.focus();
  }

  async function decide(decision, button) {
    if (decided.size) return;
    decided.add(decision);
    for (const b of body.querySelectorAll('.decisions button')) b.disabled = true;
    const note = document.getElementById('approval-note');
    if (note) note.textContent = `Sending “${decision}”…`;
    try {
      await post(`/ui/api/jobs/${enc(id)}/approval`, { decision });
      if (note) note.textContent = `Decision “${decision}” applied.`;
    } catch (e) {
      if (note) note.textContent = e.status === 409 ? 'A decision was already applied.' : `Could not apply: ${e.message}`;
      if (e.status !== 409) { decided.clear(); button.disabled = false; }
    }
    load();
  }

  load().then(() => document.getElementById('page-title')?.focus());
  let timer = null;
  return {
    refresh: load,
    onJob(row) {
      if (!row || !current) return;
      const related = row.id === id || row.parent_job_id === id || current.parent?.id === row.id;
      if (!related) return;
      clearTimeout(timer);
      timer = setTimeout(load, 150);
    },
    unmount() { clearTimeout(timer); },
  };
}
