// Workers (operator): a table with load, heartbeat age, reputation trend, drain; a live chart of
// jobs/s and queue length per skill from the stream's `stats` events.
import { h, s, replace, fmtDuration, fmtNumber, confirmDialog } from './dom.js';
import { get, post, enc } from './api.js';

const POINTS = 60;
const COLORS = ['#1f4e8c', '#b42318', '#1a7f37', '#8a5300', '#6e40c9', '#0b7285', '#a4336b', '#57606a'];

function sparkline(values, label) {
  const vs = (values || []).map(Number).filter(Number.isFinite).slice(-50);
  const W = 80, H = 20;
  const svg = s('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label, class: 'spark' });
  if (vs.length < 2) return svg;
  const lo = Math.min(...vs, 0), hi = Math.max(...vs, 1);
  const pts = vs.map((v, i) => `${((i / (vs.length - 1)) * (W - 2) + 1).toFixed(1)},${(H - 1 - ((v - lo) / (hi - lo || 1)) * (H - 2)).toFixed(1)}`);
  svg.append(s('polyline', { points: pts.join(' '), fill: 'none', stroke: '#1f4e8c', 'stroke-width': 1.5 }));
  return svg;
}

function trendWord(values) {
  const vs = (values || []).map(Number).filter(Number.isFinite);
  if (vs.length < 2) return 'no trend yet';
  const d = vs[vs.length - 1] - vs[0];
  return Math.abs(d) < 0.01 ? 'steady' : d > 0 ? 'rising' : 'falling';
}

function chart(series) {
  const W = 1000, H = 180, P = 30;
  const all = series.flatMap((x) => x.values);
  const hi = Math.max(1, ...all);
  const svg = s('svg', { class: 'plot', viewBox: `0 0 ${W} ${H}`, 'aria-hidden': 'true', focusable: 'false' });
  for (const f of [0, 0.5, 1]) {
    const y = H - P / 2 - f * (H - P);
    svg.append(s('line', { x1: P, x2: W, y1: y, y2: y, stroke: '#d0d7de', 'stroke-width': 1 }),
      s('text', { x: 2, y: y + 4, 'font-size': 12, fill: '#57606a' }, fmtNumber(hi * f, 1)));
  }
  series.forEach((x, i) => {
    if (x.values.length < 2) return;
    const pts = x.values.map((v, j) => `${(P + (j / (POINTS - 1)) * (W - P)).toFixed(1)},${(H - P / 2 - (v / hi) * (H - P)).toFixed(1)}`);
    svg.append(s('polyline', { points: pts.join(' '), fill: 'none', stroke: COLORS[i % COLORS.length], 'stroke-width': 2,
      'stroke-linejoin': 'round' }));
  });
  return svg;
}

const skillName = (k) => (typeof k === 'string' ? k : `${k?.name ?? '?'}${k?.version ? ` ${k.version}` : ''}`);

function costText(c) {
  if (c === null || c === undefined) return '—';
  if (typeof c === 'object') return Object.entries(c).map(([k, v]) => `${k} ${fmtNumber(v)}`).join(', ') || '—';
  return fmtNumber(c);
}

function loadText(l, max) {
  const cap = max ? ` of ${max}` : '';
  if (l && typeof l === 'object') return `${l.running ?? 0} running${cap}, ${l.queued ?? 0} queued`;
  return `${fmtNumber(l)}${max ? ` / ${max}` : ''}`;
}

export function workersView({ main, session }) {
  if (session.role !== 'operator') {
    main.append(h('h1', { id: 'page-title' }, 'Workers'), h('p', {}, 'The workers page needs the operator token.'));
    return {};
  }
  const errorBox = h('div');
  const tbody = h('tbody');
  const summary = h('p', { class: 'muted', id: 'workers-summary' });
  const note = h('div', { role: 'status', 'aria-live': 'polite' });
  const chartBox = h('div');
  const chartText = h('p', { class: 'muted', id: 'chart-text', 'aria-live': 'off' }, 'Waiting for the first statistics…');
  const hist = { jobs: [], queues: new Map() };
  let fetchedAt = Date.now();
  let workers = [];

  main.append(h('h1', { id: 'page-title', tabindex: -1 }, 'Workers'), errorBox, note, summary,
    h('div', { class: 'table-wrap' }, h('table', { id: 'workers-table', 'aria-describedby': 'workers-summary' },
      h('caption', { class: 'sr-only' }, 'Workers'),
      h('thead', {}, h('tr', {}, ['Worker', 'Status', 'Skills', 'Resources', 'Cost', 'Load', 'Heartbeat', 'Reputation', 'Action']
        .map((t) => h('th', { scope: 'col', class: ['Cost', 'Load'].includes(t) ? 'num' : undefined }, t)))),
      tbody)),
    h('section', { 'aria-labelledby': 'chart-title' }, h('h2', { id: 'chart-title' }, 'Throughput and queues (last minute)'),
      h('figure', { class: 'chart', 'aria-describedby': 'chart-text' }, chartBox, h('figcaption', {}, chartText))));

  const ageCells = new Map();
  function render() {
    ageCells.clear();
    replace(tbody, workers.map((w) => {
      const age = h('span', {});
      ageCells.set(w.worker_id, { el: age, base: w.heartbeat_age_ms === null || w.heartbeat_age_ms === undefined ? null : Number(w.heartbeat_age_ms) });
      const drain = h('button', { type: 'button', class: 'btn', disabled: w.status === 'draining' || !!w.draining_reason,
        'aria-label': `Drain ${w.worker_id}` }, 'Drain…');
      drain.addEventListener('click', () => drainWorker(w));
      const res = w.resources && Object.keys(w.resources).length ? JSON.stringify(w.resources) : '—';
      return h('tr', { dataset: { id: w.worker_id } },
        h('td', { class: 'mono' }, w.worker_id),
        h('td', {}, w.status ?? '—', w.stale ? h('span', { class: 'stale' }, ' ⚠ stale') : null,
          w.draining_reason ? h('div', { class: 'muted' }, `Draining: ${w.draining_reason}`) : null),
        h('td', { class: 'wrap' }, h('div', { class: 'tags' }, (w.skills || []).map((k) => h('span', { class: 'tag' }, skillName(k))))),
        h('td', { class: 'wrap mono' }, res),
        h('td', { class: 'num' }, costText(w.cost)),
        h('td', { class: 'num' }, loadText(w.load, w.max_concurrent_tasks)),
        h('td', {}, age),
        h('td', {}, `${fmtNumber(w.reputation)} `, sparkline(w.reputation_trend, `Reputation trend of ${w.worker_id}: ${trendWord(w.reputation_trend)}`)),
        h('td', {}, drain));
    }));
    summary.textContent = workers.length ? `${workers.length} worker${workers.length === 1 ? '' : 's'}; ${workers.filter((w) => w.stale).length} stale.` : 'No worker is registered.';
    tick();
  }
  function tick() {
    const extra = Date.now() - fetchedAt;
    for (const { el, base } of ageCells.values()) el.textContent = base === null ? '—' : `${fmtDuration(base + extra)} ago`;
  }
  const clock = setInterval(tick, 1000); // local clock only: no request

  async function drainWorker(w) {
    const reason = h('textarea', { id: 'drain-reason', maxlength: 500, required: true });
    const yes = await confirmDialog({ title: `Drain ${w.worker_id}?`, body: 'It finishes its running tasks and takes no new ones.',
      confirm: 'Drain', cancel: 'Keep', danger: true,
      extra: h('div', { class: 'field' }, h('label', { for: 'drain-reason' }, 'Reason'), reason) });
    if (!yes) return;
    try {
      await post(`/ui/api/workers/${enc(w.worker_id)}/drain`, { reason: reason.value.trim() || 'drained from the dashboard' });
      replace(note, h('p', { class: 'notice' }, `${w.worker_id} is draining.`));
    } catch (e) {
      replace(note, h('div', { class: 'error', role: 'alert' }, `Could not drain ${w.worker_id}: ${e.message}`));
    }
    load();
  }

  let seq = 0;
  async function load() {
    const mine = ++seq;
    try {
      const data = await get('/ui/api/workers');
      if (mine !== seq) return;
      replace(errorBox);
      workers = Array.isArray(data?.workers) ? data.workers : [];
      fetchedAt = Date.now();
      render();
    } catch (e) {
      if (mine !== seq) return;
      replace(errorBox, h('div', { class: 'error', role: 'alert' }, `Could not load workers: ${e.message}`,
        h('button', { type: 'button', class: 'btn', onclick: () => load() }, 'Retry')));
    }
  }
  load();

  let timer = null;
  return {
    refresh: load,
    onWorker() { clearTimeout(timer); timer = setTimeout(load, 200); },
    onStats(st) {
      if (!st) return;
      const push = (arr, v) => { arr.push(Number(v) || 0); if (arr.length > POINTS) arr.shift(); };
      push(hist.jobs, st.jobs_per_sec);
      const queues = st.queues && typeof st.queues === 'object' ? st.queues : {};
      for (const k of Object.keys(queues).slice(0, 20)) if (!hist.queues.has(k) && hist.queues.size < 7) hist.queues.set(k, []);
      for (const [k, arr] of hist.queues) push(arr, queues[k] ?? 0);
      const series = [{ name: 'jobs/s', values: hist.jobs }, ...[...hist.queues].map(([k, v]) => ({ name: `queue ${k}`, values: v }))];
      replace(chartBox, chart(series), h('ul', { class: 'legend' }, series.map((x, i) => h('li', {},
        s('svg', { width: 14, height: 4, 'aria-hidden': 'true' }, s('rect', { width: 14, height: 4, fill: COLORS[i % COLORS.length] })),
        `${x.name}: ${fmtNumber(x.values[x.values.length - 1] ?? 0, 1)}`))));
      chartText.textContent = `Now ${fmtNumber(st.jobs_per_sec, 1)} jobs/s; queued: ${Object.entries(queues).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}.`;
    },
    unmount() { clearInterval(clock); clearTimeout(timer); },
  };
}
