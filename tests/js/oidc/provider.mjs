// A real OpenID Provider for the console's browser test: the `oidc-provider` package (npm,
// 9.x) from ROLLGATE_NODE_MODULES, on 127.0.0.1 at a free port, with one public client
// (authorization code + PKCE, no secret) and test users whose ID tokens carry `roles` and
// `teams`. Prints one JSON line {"issuer": "...", "kid": "..."} when it listens; stops on
// SIGTERM.
//
// Environment: ROLLGATE_NODE_MODULES, REDIRECT_URI (the console's /console/ URL),
// CLIENT_ID; optional PORT (to start again on the same issuer URL) and SIGNING_KID (a fresh
// RSA signing key is made with this `kid`, so a restart with another one rotates the key;
// without it, the package's development key). Configuration follows the package's docs/README.md (clients, findAccount,
// claims, features.devInteractions, clientBasedCORS, conformIdTokenClaims).

import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.ROLLGATE_NODE_MODULES;
if (!modules) {
  console.error('ROLLGATE_NODE_MODULES is not set (`cargo xtask test` installs oidc-provider)');
  process.exit(2);
}
const { default: Provider } = await import(pathToFileURL(path.join(modules, 'oidc-provider', 'lib', 'index.js')).href);

const USERS = {
  alice: { roles: ['release_manager'], teams: ['web'] },
  bob: { roles: ['approver'], teams: ['web'] },
  audrey: { roles: ['auditor'], teams: ['*'] },
};

const server = http.createServer();
await new Promise((resolve) => server.listen(Number(process.env.PORT || 0), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

// The JWKS the provider signs with and publishes (public parts only) at its jwks_uri.
const kid = process.env.SIGNING_KID || null;
const jwks = kid
  ? { keys: [{ ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' }] }
  : undefined;

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.CLIENT_ID || 'rollgate-console',
    token_endpoint_auth_method: 'none',
    redirect_uris: [process.env.REDIRECT_URI],
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  // The console exchanges the code from its own origin.
  clientBasedCORS: () => true,
  // roles and teams in the ID token itself (the token the console sends to rollgate).
  conformIdTokenClaims: false,
  claims: { openid: ['sub', 'roles', 'teams'] },
  async findAccount(ctx, id) {
    const user = USERS[id];
    if (!user) return undefined;
    return { accountId: id, async claims() { return { sub: id, roles: user.roles, teams: user.teams }; } };
  },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  cookies: { keys: ['rollgate-console-test-cookie-key'] },
  ttl: { IdToken: 3600, AccessToken: 3600, AuthorizationCode: 60 },
  ...(jwks ? { jwks } : {}),
});
server.on('request', provider.callback());
// Standard output carries the one line below; the package's notices go to standard error.
console.log = console.info = (...args) => process.stderr.write(`${args.join(' ')}\n`);
process.stdout.write(`${JSON.stringify({ issuer, kid })}\n`);
process.on('SIGTERM', () => server.close(() => process.exit(0)));
