// The blueprint graph of a job: the server's SVG, fetched, checked and inserted into the page
// (so its text is readable by assistive technology and no <img> cross-document is needed).
// Only plain SVG shapes and text are kept: no scripts, event handlers, foreign content, styles
// or links outside the document.
import { h } from './dom.js';

const ALLOWED = new Set(['svg', 'g', 'path', 'rect', 'circle', 'ellipse', 'line', 'polyline', 'polygon', 'text', 'tspan',
  'title', 'desc', 'defs', 'marker', 'linearGradient', 'radialGradient', 'stop', 'clipPath', 'use', 'symbol']);
const MAX_BYTES = 2 * 1024 * 1024;

function clean(node) {
  for (const child of [...node.children]) {
    if (!ALLOWED.has(child.localName) || child.namespaceURI !== 'http://www.w3.org/2000/svg') {
      child.remove();
      continue;
    }
    for (const attr of [...child.attributes]) {
      const n = attr.name.toLowerCase();
      const href = n === 'href' || n === 'xlink:href';
      if (n.startsWith('on') || n === 'style' || (href && !attr.value.startsWith('#'))) child.removeAttribute(attr.name);
    }
    clean(child);
  }
}

/** The path of states the job took, from its timeline (consecutive repeats merged). */
export function pathOf(timeline) {
  const path = [];
  for (const e of timeline) {
    if (typeof e.state === 'string' && e.state && path[path.length - 1] !== e.state) path.push(e.state);
  }
  return path;
}

export async function graphFigure(src, job, timeline) {
  const path = Array.isArray(job.path) && job.path.length ? job.path.map(String) : pathOf(timeline);
  const captionText = `Path taken: ${path.length ? path.join(' → ') : 'none yet'}. Current state: ${job.current_state ?? 'none'} (drawn bold with a double border).`;
  const caption = h('figcaption', { id: 'graph-caption' }, captionText);
  const fig = h('figure', { class: 'graph', id: 'graph' });
  try {
    const res = await fetch(src, { credentials: 'same-origin', cache: 'no-store' });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const text = await res.text();
    if (text.length > MAX_BYTES) throw new Error('the graph is too large to show');
    const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
    const root = doc.documentElement;
    if (root.localName !== 'svg' || doc.querySelector('parsererror')) throw new Error('not an SVG image');
    for (const attr of [...root.attributes]) {
      const n = attr.name.toLowerCase();
      if (n.startsWith('on') || n === 'style') root.removeAttribute(attr.name);
    }
    clean(root);
    const svg = document.importNode(root, true);
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-labelledby', 'graph-caption');
    svg.setAttribute('focusable', 'false');
    fig.append(svg, caption);
  } catch (e) {
    fig.append(h('p', { class: 'error', role: 'alert' }, `The graph could not be shown: ${e.message}.`), caption);
  }
  return fig;
}
