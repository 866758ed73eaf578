// Sign-in state. Tokens live in sessionStorage only: never in a cookie or the URL.

const TOKEN = 'rollgate.token';
const ID_TOKEN = 'rollgate.id_token';
const PENDING = 'rollgate.oidc.pending';
const NOTICE = 'rollgate.notice';

export function token() {
  return sessionStorage.getItem(TOKEN);
}

export function setToken(value, idToken) {
  sessionStorage.removeItem(NOTICE);
  sessionStorage.setItem(TOKEN, value);
  if (idToken) sessionStorage.setItem(ID_TOKEN, idToken);
}

export function signOut(notice) {
  sessionStorage.clear();
  if (notice) sessionStorage.setItem(NOTICE, notice);
}

/** A message for the sign-in page (kept until the next sign-in). */
export function takeNotice() {
  return sessionStorage.getItem(NOTICE);
}

function b64urlDecode(part) {
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}

function b64url(bytes) {
  let bin = '';
  for (const b of new Uint8Array(bytes)) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The claims of a JWT, unverified: for display only (the server checks every request). */
export function claimsOf(jwt) {
  try {
    const parts = String(jwt).split('.');
    if (parts.length !== 3) return null;
    const c = JSON.parse(b64urlDecode(parts[1]));
    return c && typeof c === 'object' ? c : null;
  } catch {
    return null;
  }
}

function asList(v) {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === 'string') return v.split(/[ ,]+/).filter(Boolean);
  return [];
}

/** Who is signed in, as the token says: { sub, roles, teams, exp }. */
export function principal() {
  const t = token();
  const c = t ? claimsOf(t) : null;
  if (!c) return null;
  return { sub: String(c.sub || ''), roles: asList(c.roles), teams: asList(c.teams), exp: c.exp };
}

export function hasRole(...roles) {
  const p = principal();
  return !!p && roles.some((r) => p.roles.includes(r));
}

function random(n) {
  return b64url(crypto.getRandomValues(new Uint8Array(n)));
}

async function discover(issuer) {
  const res = await fetch(`${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
  if (!res.ok) throw new Error(`the issuer's discovery document answered ${res.status}`);
  const doc = await res.json();
  if (!doc.authorization_endpoint || !doc.token_endpoint) {
    throw new Error('the issuer\'s discovery document has no authorization or token endpoint');
  }
  const methods = doc.code_challenge_methods_supported || [];
  if (!methods.includes('S256')) throw new Error('the issuer does not support PKCE with S256');
  return doc;
}

function redirectUri() {
  return `${location.origin}${location.pathname}`;
}

/** Starts the authorization code flow with PKCE (S256): leaves the page for the issuer. */
export async function startOidc(oidc) {
  const doc = await discover(oidc.issuer);
  const verifier = random(32);
  const challenge = b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  const state = random(16);
  const nonce = random(16);
  sessionStorage.setItem(PENDING, JSON.stringify({ state, nonce, verifier, token_endpoint: doc.token_endpoint }));
  const q = new URLSearchParams({
    response_type: 'code',
    client_id: oidc.client_id,
    redirect_uri: redirectUri(),
    scope: 'openid profile',
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  });
  location.assign(`${doc.authorization_endpoint}?${q}`);
}

/**
 * After the issuer redirects back with ?code=&state= (or ?error=): exchanges the code at the
 * token endpoint, keeps the tokens in sessionStorage and removes the query from the URL.
 * Returns null when the URL holds no answer, true when signed in; throws with a message.
 */
export async function completeOidc(oidc) {
  const q = new URLSearchParams(location.search);
  if (!q.has('code') && !q.has('error')) return null;
  history.replaceState(null, '', `${location.pathname}${location.hash}`);
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || 'null');
  sessionStorage.removeItem(PENDING);
  if (q.has('error')) throw new Error(`the identity provider refused: ${q.get('error_description') || q.get('error')}`);
  if (!pending || !oidc || q.get('state') !== pending.state) {
    throw new Error('the sign-in answer does not match a sign-in started here (state); start again');
  }
  const res = await fetch(pending.token_endpoint, {
    method: 'POST',
    headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: q.get('code'),
      redirect_uri: redirectUri(),
      client_id: oidc.client_id,
      code_verifier: pending.verifier,
    }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`the token endpoint refused the code: ${body.error_description || body.error || res.status}`);
  const idClaims = claimsOf(body.id_token);
  if (!idClaims || idClaims.nonce !== pending.nonce) throw new Error('the ID token does not carry this sign-in\'s nonce');
  // The API is called with the access token when it is a JWT, else with the ID token.
  const apiToken = claimsOf(body.access_token) ? body.access_token : body.id_token;
  setToken(apiToken, body.id_token);
  return true;
}
