// The console's only way to the data: the `/v1` API with the admin token, which lives in this
// tab's sessionStorage only (never in a URL, a cookie or a log line).

import { t } from './i18n.js';

const KEY = 'lienwatch.token';
/// How long a request may take before the page gives it up (a zone list of tens of thousands
/// of zones reads in a few seconds).
const TIMEOUT_MS = 30000;

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(t) {
  sessionStorage.setItem(KEY, t);
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

/// The token was refused (or there is none): the page goes back to sign-in.
export class Unauthorized extends Error {
  constructor() {
    super('unauthorized');
  }
}

/// 404 or 405: the object does not exist, or this server has no such endpoint yet. Either way
/// the panel that needs it is hidden, nothing breaks.
export class Missing extends Error {
  constructor(status) {
    super(`missing (${status})`);
    this.status = status;
  }
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let unauthorized = () => {};

export function onUnauthorized(f) {
  unauthorized = f;
}

/// Runs `work` with a signal that gives it up after `TIMEOUT_MS`: a daemon that never answers
/// must not leave the page waiting with stale data shown as fresh. The page says so and asks
/// again at its next poll.
export async function withTimeout(work) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
  try {
    return await work(abort.signal);
  } catch (e) {
    if (abort.signal.aborted) throw new ApiError(0, t('api.timeout', { s: TIMEOUT_MS / 1000 }));
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

export async function api(path, opts = {}) {
  const tok = token();
  // A header carries printable ASCII only: any other token is no token of this daemon (and
  // would make every browser's fetch throw, each in its own words).
  if (!tok || /[^\x20-\x7e]/.test(tok)) {
    unauthorized();
    throw new Unauthorized();
  }
  const headers = { Authorization: `Bearer ${tok}`, Accept: 'application/json' };
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  return withTimeout(async (signal) => {
    const r = await fetch(path, {
      method: opts.method || 'GET',
      headers,
      body,
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
      signal,
    });
    if (r.status === 401) {
      unauthorized();
      throw new Unauthorized();
    }
    if (r.status === 404 || r.status === 405) throw new Missing(r.status);
    let data = null;
    try {
      data = await r.json();
    } catch (e) {
      if (signal.aborted) throw e;
      data = null;
    }
    if (!r.ok) throw new ApiError(r.status, (data && data.error) || `HTTP ${r.status}`);
    return data;
  });
}

/// The same, with `null` for a missing object or endpoint.
export async function maybe(path, opts) {
  try {
    return await api(path, opts);
  } catch (e) {
    if (e instanceof Missing) return null;
    throw e;
  }
}

let features;

/// Which endpoints this server has, from its own OpenAPI description (no token needed): the
/// console is newer or older than the daemon it talks to, and shows what exists. Kept once read;
/// a failed read (the daemon restarting) is asked again at the next page, not kept for the tab's
/// life.
export function capabilities() {
  if (!features) {
    features = fetch('/v1/openapi.json', { cache: 'no-store', credentials: 'omit' })
      .then((r) => (r.ok ? r.json() : null))
      .then((doc) => {
        if (!doc) features = null;
        return doc;
      }, (e) => {
        features = null;
        throw e;
      })
      .then((doc) => {
        const ops = new Map();
        for (const [p, item] of Object.entries((doc && doc.paths) || {})) {
          const path = p.replace(/\{[^}]*\}/g, '{}');
          for (const m of ['get', 'put', 'post', 'delete']) {
            if (item[m]) ops.set(`${m.toUpperCase()} ${path}`, (item[m].parameters || []).map((x) => x.name));
          }
        }
        return {
          known: ops.size > 0,
          has(method, path) {
            return !this.known || ops.has(`${method} ${path}`);
          },
          param(method, path, name) {
            return (ops.get(`${method} ${path}`) || []).includes(name);
          },
        };
      })
      .catch(() => ({ known: false, has: () => true, param: () => false }));
  }
  return features;
}

export function enc(s) {
  return encodeURIComponent(s);
}
