// The dashboard's JSON API under /ui/api and the state shared by the pages.
export const session = { role: null, client_id: null, csrf: null };

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Hooks the app sets: what to do when the session is gone, how to navigate. */
export const app = { onUnauthorized: () => {}, navigate: (_url) => {} };

async function call(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  let res;
  try {
    res = await fetch(path, { method, headers, credentials: 'same-origin', cache: 'no-store',
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, `the orchestrator cannot be reached (${e.message || e})`);
  }
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    const msg = (data && typeof data.error === 'string') ? data.error : `HTTP ${res.status}`;
    if (res.status === 401 && path !== '/ui/api/session' && path !== '/ui/api/me') app.onUnauthorized();
    throw new ApiError(res.status, msg);
  }
  return data;
}

/** GET path?params (params: an object; empty values are left out). */
export function get(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, Array.isArray(v) ? v.join(',') : String(v));
  }
  const qs = q.toString();
  return call('GET', qs ? `${path}?${qs}` : path);
}

export const post = (path, body) => call('POST', path, body === undefined ? {} : body);

export const enc = encodeURIComponent;
