// DOM helpers: every element is built with createElement and text with textContent (never parsed from markup).
const SVG_NS = 'http://www.w3.org/2000/svg';

function apply(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') el.textContent = String(v);
    else if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** h('tag', {attrs}, ...children): an HTML element. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** s('tag', {attrs}, ...children): an SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

const TERMINAL = new Set(['finished', 'failed', 'cancelled', 'quarantined']);
export const STATUSES = [
  'pending', 'running', 'waiting_for_worker', 'waiting_for_human', 'waiting_for_parallel_tasks',
  'waiting_for_sub_job', 'awaiting_retry', 'finished', 'failed', 'cancelled', 'quarantined',
];
export const isTerminal = (status) => TERMINAL.has(status);

export function statusLabel(status) {
  const s = String(status || 'unknown').replace(/_/g, ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function statusKind(status) {
  switch (status) {
    case 'finished': return 'ok';
    case 'failed': case 'quarantined': return 'bad';
    case 'cancelled': return 'off';
    case 'running': case 'pending': return 'run';
    default: return 'wait';
  }
}

function statusIcon(kind) {
  const icon = s('svg', { width: 12, height: 12, viewBox: '0 0 12 12', 'aria-hidden': 'true', focusable: 'false' });
  const stroke = { fill: 'none', stroke: 'currentColor', 'stroke-width': 1.8, 'stroke-linecap': 'round' };
  if (kind === 'ok') icon.append(s('path', { d: 'M2.5 6.2 5 8.6 9.6 3.4', ...stroke }));
  else if (kind === 'bad') icon.append(s('path', { d: 'M3 3 9 9M9 3 3 9', ...stroke }));
  else if (kind === 'off') icon.append(s('path', { d: 'M2.5 6h7', ...stroke }));
  else if (kind === 'run') icon.append(s('circle', { cx: 6, cy: 6, r: 3.6, fill: 'currentColor' }));
  else icon.append(s('circle', { cx: 6, cy: 6, r: 4, ...stroke }), s('path', { d: 'M6 3.6V6l1.6 1.2', ...stroke, 'stroke-width': 1.4 }));
  return icon;
}

/** A status badge: an icon AND the status as text (colour is never the only signal). */
export function statusBadge(status) {
  const kind = statusKind(status);
  return h('span', { class: ['status', `st-${kind}`], dataset: { status: status || '' } }, statusIcon(kind), statusLabel(status));
}

const pad = (n) => String(n).padStart(2, '0');
export function fmtTime(ms) {
  if (ms === null || ms === undefined || ms === '') return '—';
  const d = new Date(Number(ms));
  if (Number.isNaN(d.getTime())) return '—';
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return '—';
  let s = Math.max(0, Math.round(Number(ms) / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60); s %= 60;
  if (m < 60) return `${m} min ${s} s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ${m % 60} min`;
  return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
}

export const timeEl = (ms) => h('time', { datetime: ms ? new Date(Number(ms)).toISOString() : undefined }, fmtTime(ms));

export function fmtNumber(n, digits = 2) {
  if (n === null || n === undefined || n === '') return '—';
  const x = Number(n);
  if (!Number.isFinite(x)) return String(n);
  return Number.isInteger(x) ? String(x) : x.toFixed(digits);
}

/** A JSON value in a <pre>; `{"$truncated": true, ...}` anywhere is marked as truncated. */
export function jsonBlock(value, label) {
  const pre = h('pre', { class: 'data', tabindex: 0, 'aria-label': label });
  const notes = [];
  const walk = (v, path) => {
    if (v && typeof v === 'object' && !Array.isArray(v)) {
      if (v.$truncated === true) notes.push(`${path || 'value'}: ${v.bytes ?? '?'} bytes, first 2 KiB shown`);
      for (const [k, x] of Object.entries(v)) walk(x, path ? `${path}.${k}` : k);
    } else if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${path}[${i}]`));
  };
  walk(value, '');
  pre.textContent = value === undefined ? 'null' : JSON.stringify(value, null, 2);
  const box = h('div', {});
  if (notes.length) box.append(h('p', { class: 'trunc' }, `Truncated (too large to show in full): ${notes.join('; ')}`));
  box.append(pre);
  return box;
}

/** A <dialog> asking to confirm; resolves with true (confirmed) or false. `extra` adds fields. */
export function confirmDialog({ title, body, confirm, danger = true, cancel = 'Keep', extra }) {
  return new Promise((resolve) => {
    const titleId = `dlg-${Math.random().toString(36).slice(2)}`;
    const ok = h('button', { type: 'submit', class: ['btn', danger ? 'btn-danger' : 'btn-primary'], value: 'ok' }, confirm);
    const no = h('button', { type: 'submit', class: 'btn', value: 'cancel', formnovalidate: true }, cancel);
    const form = h('form', { method: 'dialog' }, h('h2', { id: titleId }, title), body ? h('p', {}, body) : null, extra || null,
      h('div', { class: 'row-actions' }, no, ok));
    const dlg = h('dialog', { 'aria-labelledby': titleId }, form);
    document.body.append(dlg);
    dlg.addEventListener('close', () => {
      const yes = dlg.returnValue === 'ok';
      dlg.remove();
      resolve(yes);
    });
    dlg.showModal();
    (extra?.querySelector('input,textarea') || no).focus();
  });
}
