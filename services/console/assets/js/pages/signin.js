// Sign-in: paste a bearer token, or the organisation's OpenID Connect issuer when configured.

import { h, message } from '../dom.js';
import * as auth from '../auth.js';

export function signInPage(config, notice) {
  const node = h('section', { class: 'signin', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in to the rollgate console'));
  if (notice) node.append(message(notice === 'You are signed out.' ? 'info' : 'error', notice));
  const out = h('div', { 'aria-live': 'polite' });

  if (config && config.oidc) {
    const btn = h('button', { type: 'button', id: 'oidc-sign-in' }, 'Sign in with your organisation');
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      out.replaceChildren(message('info', 'Redirecting to the identity provider…'));
      try {
        await auth.startOidc(config.oidc);
      } catch (e) {
        out.replaceChildren(message('error', `Could not start sign-in: ${e.message}`));
        btn.disabled = false;
      }
    });
    node.append(h('div', { class: 'card' },
      h('h2', {}, 'Single sign-on'),
      h('p', {}, 'Signs you in at ', h('code', {}, config.oidc.issuer), ' (authorization code flow with PKCE).'),
      btn));
  }

  const area = h('textarea', { id: 'token-input', name: 'token', autocomplete: 'off', spellcheck: 'false', required: true, rows: 4 });
  const form = h('form', { class: 'card', id: 'token-form' },
    h('h2', {}, config && config.oidc ? 'Or paste a bearer token' : 'Paste a bearer token'),
    h('label', { for: 'token-input' }, 'Bearer token (JWT)'),
    area,
    h('p', { class: 'hint' },
      'On a development server, ', h('code', {}, 'rollgate token --sub alice --roles approver --teams web --ttl 8h'),
      ' prints a token signed with the development key in ./.rollgate/. Your organisation\'s identity provider may issue one too. ',
      'The token stays in this tab (session storage) until you sign out or close it.'),
    h('button', { type: 'submit', id: 'token-submit' }, 'Sign in'),
    out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = area.value.trim().replace(/^Bearer\s+/i, '');
    const claims = auth.claimsOf(t);
    if (!claims) {
      out.replaceChildren(message('error', 'This is not a JWT (three base64url parts separated by dots).'));
      return;
    }
    // One read proves the server accepts the token before it is kept.
    let res;
    try {
      res = await fetch('/v1/rollouts?limit=1', { headers: { Authorization: `Bearer ${t}`, Accept: 'application/json' }, cache: 'no-store' });
    } catch (e) {
      out.replaceChildren(message('error', `Could not reach the API: ${e.message}`));
      return;
    }
    if (res.status === 401) {
      out.replaceChildren(message('error', 'The server refused this token (expired, another issuer or another key). Mint a new one.'));
      return;
    }
    auth.setToken(t);
    const target = auth.hasRole('approver') ? '#/inbox' : '#/rollouts';
    if (location.hash === target) {
      window.dispatchEvent(new CustomEvent('rollgate:navigate'));
      return;
    }
    location.hash = target;
  });
  node.append(form);
  return node;
}
