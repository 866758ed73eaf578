// The console shell: sign-in state, navigation (hash routes), live updates.

import { h, clear, message } from './dom.js';
import * as auth from './auth.js';
import { EXPIRED } from './api.js';
import { follow } from './sse.js';
import { signInPage } from './pages/signin.js';
import { inboxPage } from './pages/inbox.js';
import { rolloutsPage } from './pages/rollouts.js';
import { rolloutPage, eventPage } from './pages/rollout.js';
import { auditPage } from './pages/audit.js';
import { postmortemPage } from './pages/postmortem.js';

const main = document.getElementById('main');
const live = document.getElementById('live');
let config = { oidc: null };
let stopStream = null;
let current = null; // { onEvent }
let liveTimer = null;
let routeSeq = 0; // a slower earlier page never replaces a later one

const ROUTES = [
  [/^\/inbox$/, () => inboxPage()],
  [/^\/rollouts$/, (m, q) => rolloutsPage(q)],
  [/^\/rollouts\/([0-9a-f-]{36})$/, (m) => rolloutPage(m[1])],
  [/^\/rollouts\/([0-9a-f-]{36})\/events\/(\d+)$/, (m) => eventPage(m[1], Number(m[2]))],
  [/^\/postmortem\/([0-9a-f-]{36})$/, (m) => postmortemPage(m[1])],
  [/^\/audit$/, (m, q) => auditPage(q)],
];

function setLive(text) {
  live.textContent = text;
  clearTimeout(liveTimer);
  liveTimer = setTimeout(() => { live.textContent = ''; }, 6000);
}

function shell(signedIn) {
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('who').hidden = !signedIn;
  const p = auth.principal();
  document.getElementById('who-name').textContent = p
    ? `${p.sub} · ${p.roles.join(', ') || 'no roles'} · teams ${p.teams.join(', ') || 'none'}`
    : '';
}

function startStream() {
  if (stopStream) return;
  stopStream = follow((event) => {
    window.dispatchEvent(new CustomEvent('rollgate:event', { detail: event }));
    if (current && current.onEvent) current.onEvent(event, setLive);
  }, () => {
    auth.signOut(EXPIRED);
    route();
  });
}

function stopLive() {
  if (stopStream) stopStream();
  stopStream = null;
}

async function route() {
  const seq = ++routeSeq;
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query] = raw.split('?');
  const params = new URLSearchParams(query || '');
  const signedIn = !!auth.token();
  shell(signedIn);
  current = null;
  if (!signedIn || path === '/signin') {
    stopLive();
    clear(main).append(signInPage(config, auth.takeNotice()));
    document.title = 'Sign in · rollgate console';
    return;
  }
  startStream();
  if (path === '/' || path === '') {
    location.replace(auth.hasRole('approver') ? '#/inbox' : '#/rollouts');
    return;
  }
  for (const a of document.querySelectorAll('#nav a')) {
    if (path.startsWith(`/${a.dataset.page}`)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  for (const [re, page] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    clear(main).append(h('p', {}, 'Loading…'));
    try {
      const view = await page(m, params);
      if (seq !== routeSeq) return;
      if (!auth.token()) return route();
      clear(main).append(view.node);
      document.title = `${view.title} · rollgate console`;
      current = view;
    } catch (e) {
      if (seq !== routeSeq) return;
      if (!auth.token()) return route();
      clear(main).append(message('error', `Could not load this page: ${e.message}`));
    }
    return;
  }
  clear(main).append(h('h1', {}, 'Not found'), h('p', {}, 'No such page in the console. '), h('a', { href: '#/rollouts' }, 'Rollouts'));
}

async function boot() {
  try {
    const res = await fetch('config.json', { cache: 'no-cache' });
    if (res.ok) config = await res.json();
  } catch {
    config = { oidc: null };
  }
  try {
    const done = await auth.completeOidc(config.oidc);
    if (done) location.replace('#/');
  } catch (e) {
    auth.signOut(e.message);
  }
  document.getElementById('sign-out').addEventListener('click', () => {
    stopLive();
    auth.signOut('You are signed out.');
    location.hash = '#/signin';
    route();
  });
  window.addEventListener('hashchange', route);
  window.addEventListener('rollgate:signed-out', () => {
    stopLive();
    route();
  });
  window.addEventListener('rollgate:navigate', () => route());
  route();
}

boot();
