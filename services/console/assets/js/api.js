// The API client: the same routes and rules as every other client, with the signed-in token.

import { token, signOut } from './auth.js';

export const EXPIRED = 'Your session expired or the token is no longer accepted. Sign in again.';

/** A refusal or failure, from the problem+json body when there is one. */
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.rule = problem ? problem.rule : undefined;
    this.title = problem ? problem.title : undefined;
    this.detail = problem ? problem.detail : undefined;
  }
}

// The server's clock minus this browser's, in ms, from the `Date` header of the latest answer
// (whole seconds: the middle of that second is taken, and of the request's round trip).
let clockOffsetMs = 0;

/** The server's clock now, in ms since the epoch: the browser's own may be skewed. */
export function serverNow() {
  return Date.now() + clockOffsetMs;
}

function noteServerClock(res, sentAt) {
  const date = Date.parse(res.headers.get('Date') || '');
  if (!Number.isNaN(date)) clockOffsetMs = date + 500 - (sentAt + Date.now()) / 2;
}

/** Called once on a 401: back to sign-in with a clear message. */
function expired() {
  signOut(EXPIRED);
  window.dispatchEvent(new CustomEvent('rollgate:signed-out'));
}

async function send(method, path, { body, accept } = {}) {
  const headers = { Accept: accept || 'application/json' };
  const t = token();
  // A late request of a page left behind (after sign-out) is not sent at all.
  if (!t) throw new ApiError(0, { title: 'Not signed in' });
  headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method === 'POST') headers['Idempotency-Key'] = crypto.randomUUID();
  const sentAt = Date.now();
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  noteServerClock(res, sentAt);
  if (res.status === 401) {
    // Only the token still in use can expire the session (not one replaced meanwhile).
    if (token() === t) expired();
    throw new ApiError(401, { title: EXPIRED });
  }
  if (!res.ok) {
    const problem = await res.json().catch(() => null);
    throw new ApiError(res.status, problem);
  }
  return res;
}

export async function get(path, params) {
  const q = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v !== null && v !== undefined)) : null;
  const res = await send('GET', q && [...q].length ? `${path}?${q}` : path);
  return res.json();
}

export async function post(path, body) {
  const res = await send('POST', path, { body: body === undefined ? {} : body });
  return res.status === 204 ? null : res.json().catch(() => null);
}

/** A raw body (export, Markdown) as a Blob. */
export async function blob(path, accept) {
  const res = await send('GET', path, { accept });
  return res.blob();
}

/** Every item of a paginated list, following next_cursor (bounded to `pages`). */
export async function all(path, params, pages = 10) {
  const items = [];
  let cursor = null;
  for (let i = 0; i < pages; i += 1) {
    const page = await get(path, { ...params, limit: 1000, cursor });
    items.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return items;
}

/** A rollout's stored events (for readings, notes and breaches). */
export function events(id) {
  return all(`/v1/rollouts/${encodeURIComponent(id)}/events`, {});
}

/**
 * The gate's answer for a rollout's next transition (GET /v1/rollouts/{id}/gate): what R4
 * would say now, by the server's clock (soak remaining among its reasons). Null when it
 * cannot be read.
 */
export function gate(id) {
  return get(`/v1/rollouts/${encodeURIComponent(id)}/gate`).catch(() => null);
}
