// avto dashboard: sign-in, client-side routing (History API), one EventSource per tab.
// No framework, no build step, no inline script or style: the page runs under
// `script-src 'self'; style-src 'self'`.
import { h, replace } from './dom.js';
import { session, app, get, post, ApiError } from './api.js';
import { jobsView } from './jobs.js';
import { jobView } from './job.js';
import { approvalsView } from './approvals.js';
import { workersView } from './workers.js';

// Anything the Content-Security-Policy refuses is a bug of these pages: counted where the
// browser tests read it, and logged.
document.addEventListener('securitypolicyviolation', (e) => {
  const root = document.documentElement;
  root.dataset.cspViolations = String(Number(root.dataset.cspViolations || 0) + 1);
  console.warn(`CSP refused ${e.blockedURI || 'inline'} (${e.violatedDirective})`);
});

const main = document.getElementById('main');
const conn = document.getElementById('conn');
let view = null;

// ---- the live stream -----------------------------------------------------------------------
const stream = { es: null, down: false, timer: null, backoff: 1000 };

function setConn(state) {
  conn.className = `conn ${state === 'live' ? 'live' : 'down'}`;
  conn.textContent = state === 'live' ? 'Live' : state === 'connecting' ? 'Connecting…' : 'Reconnecting…';
  conn.dataset.state = state;
}

function dispatch(kind, e) {
  let data = null;
  try { data = e.data ? JSON.parse(e.data) : null; } catch { return; }
  const fn = view && view[kind];
  if (typeof fn === 'function') fn.call(view, data);
}

function openStream() {
  closeStream();
  const es = new EventSource('/ui/api/stream');
  stream.es = es;
  es.addEventListener('open', () => {
    stream.backoff = 1000;
    setConn('live');
    if (stream.down) {
      stream.down = false;
      view?.refresh?.(); // catch up with what happened while the stream was down
    }
  });
  es.addEventListener('error', () => {
    if (stream.es !== es) return;
    stream.down = true;
    setConn('reconnecting');
    if (es.readyState === EventSource.CLOSED) {
      // the browser gave up (an error status): check the session, then open a new stream
      es.close();
      stream.es = null;
      clearTimeout(stream.timer);
      stream.timer = setTimeout(reopen, stream.backoff);
      stream.backoff = Math.min(stream.backoff * 2, 10000);
    }
  });
  es.addEventListener('job', (e) => dispatch('onJob', e));
  es.addEventListener('worker', (e) => dispatch('onWorker', e));
  es.addEventListener('stats', (e) => dispatch('onStats', e));
  es.addEventListener('resync', () => view?.refresh?.());
}

async function reopen() {
  try {
    await get('/ui/api/me');
    openStream();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return signedOut();
    stream.timer = setTimeout(reopen, stream.backoff);
    stream.backoff = Math.min(stream.backoff * 2, 10000);
  }
}

function closeStream() {
  clearTimeout(stream.timer);
  if (stream.es) stream.es.close();
  stream.es = null;
}

// ---- routing -------------------------------------------------------------------------------
function navigate(url, { replace: rep = false, state = null } = {}) {
  const target = new URL(url, location.href);
  if (rep) history.replaceState(state, '', target);
  else history.pushState(state, '', target);
  route();
}
app.navigate = navigate;

function isPageLink(a) {
  if (!a || a.target || a.hasAttribute('download') || a.origin !== location.origin) return false;
  const p = a.pathname;
  if (a.hash && p === location.pathname && a.search === location.search) return false; // in-page (the skip link)
  return (p === '/ui' || p.startsWith('/ui/')) && !p.startsWith('/ui/assets/') && !p.startsWith('/ui/api/');
}

document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target instanceof Element ? e.target.closest('a[href]') : null;
  if (!isPageLink(a)) return;
  e.preventDefault();
  if (a.href !== location.href) navigate(a.href);
});
window.addEventListener('popstate', () => route());
document.querySelector('.skip-link').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

function setNav(active) {
  for (const a of document.querySelectorAll('#nav a[data-nav]')) {
    if (a.dataset.nav === active) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function mount(factory, title, nav, ...args) {
  view?.unmount?.();
  replace(main);
  setNav(nav);
  document.title = `${title} · avto`;
  view = factory({ main, url: new URL(location.href), navigate, session }, ...args);
}

function route() {
  if (!session.role) return loginPage();
  const path = location.pathname.replace(/\/+$/, '') || '/';
  let m;
  if (path === '/ui' || path === '/ui/jobs') mount(jobsView, 'Jobs', 'jobs');
  else if ((m = path.match(/^\/ui\/jobs\/([^/]+)$/))) mount(jobView, 'Job', 'jobs', decodeURIComponent(m[1]));
  else if (path === '/ui/approvals') mount(approvalsView, 'Approvals', 'approvals');
  else if (path === '/ui/workers') mount(workersView, 'Workers', 'workers');
  else if (path === '/ui/login') navigate('/ui/jobs', { replace: true });
  else mount(notFound, 'Not found', null);
}

function notFound({ main: root }) {
  root.append(h('h1', {}, 'Page not found'), h('p', {}, h('a', { href: '/ui/jobs' }, 'Go to the jobs list')));
  return {};
}

// ---- session -------------------------------------------------------------------------------
function setSession(me) {
  session.role = me.role;
  session.client_id = me.client_id ?? null;
  session.csrf = me.csrf ?? null;
  document.getElementById('nav').hidden = false;
  document.getElementById('nav-workers').hidden = me.role !== 'operator';
  document.getElementById('who').textContent = me.role === 'operator' ? 'Operator' : `Client ${me.client_id ?? ''}`;
  document.getElementById('logout').hidden = false;
}

function signedOut() {
  closeStream();
  session.role = session.client_id = session.csrf = null;
  document.getElementById('nav').hidden = true;
  document.getElementById('who').textContent = '';
  document.getElementById('logout').hidden = true;
  conn.textContent = '';
  conn.className = 'conn';
  loginPage();
}
app.onUnauthorized = signedOut;

function loginPage() {
  view?.unmount?.();
  view = null;
  setNav(null);
  document.title = 'Sign in · avto';
  const error = h('p', { id: 'login-error', class: 'error', role: 'alert', hidden: true });
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true,
    maxlength: 4096, spellcheck: 'false', 'aria-describedby': 'token-hint login-error' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Sign in');
  const form = h('form', { novalidate: true, 'aria-labelledby': 'login-title' },
    h('div', { class: 'field' }, h('label', { for: 'token' }, 'Access token'), input),
    h('p', { id: 'token-hint', class: 'hint' }, 'A client token shows that client\u2019s jobs; the operator token (ADMIN_TOKEN) shows everything.'),
    error, submit);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const token = input.value.trim();
    error.hidden = true;
    if (!token) {
      error.textContent = 'Enter a token.';
      error.hidden = false;
      input.focus();
      return;
    }
    submit.disabled = true;
    try {
      const me = await post('/ui/api/session', { token });
      setSession(me);
      openStream();
      setConn('connecting');
      if (location.pathname.replace(/\/+$/, '') === '/ui/login') navigate('/ui/jobs', { replace: true });
      else route();
    } catch (err) {
      error.textContent = err.status === 401 ? 'That token is not valid.' : `Could not sign in: ${err.message}`;
      error.hidden = false;
      submit.disabled = false;
      input.focus();
    }
  });
  replace(main, h('section', { class: 'login' }, h('h1', { id: 'login-title' }, 'Sign in to avto'), form));
  input.focus();
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await post('/ui/api/logout'); } catch { /* signed out either way */ }
  signedOut();
  history.replaceState(null, '', '/ui/login');
});

async function boot() {
  try {
    const me = await get('/ui/api/me');
    setSession(me);
    setConn('connecting');
    openStream();
    route();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return loginPage();
    replace(main, h('div', { class: 'error', role: 'alert' }, `Could not reach the orchestrator: ${e.message}`,
      h('button', { type: 'button', class: 'btn', onclick: boot }, 'Retry')));
  }
}

boot();
