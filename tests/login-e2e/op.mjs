// A real OpenID provider for the browser sign-in suite (tests/suite.d/80-login-e2e.sh):
// npm `oidc-provider` (certified by the OpenID Foundation) on 127.0.0.1, with its
// development login and consent forms, one registered confidential client
// (client_secret_basic, PKCE required), refresh tokens, RP-initiated logout, and ID tokens
// that live 30 s (so the sidecar refreshes its session within the minute before expiry).
// Usage: node op.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI POST_LOGOUT_URI
import http from 'node:http';
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, redirectUri, postLogout] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    post_logout_redirect_uris: [postLogout],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  pkce: { required: () => true },
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  conformIdTokenClaims: false,
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: `${id}@example.com`, email_verified: true }),
  }),
  issueRefreshToken: async () => true,
  ttl: { IdToken: 30, AccessToken: 30, RefreshToken: 3600, Grant: 3600, Session: 3600, Interaction: 600 },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  cookies: { keys: ['login-e2e-cookie-key'] },
});
provider.proxy = false;
http.createServer(provider.callback()).listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider listening at ${issuer}`);
});
