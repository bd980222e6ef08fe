// Drives Debian's headless chromium through the sidecar's sign-in (playwright-core), for
// tests/suite.d/80-login-e2e.sh. Prints one line per check: "ok   NAME" or "FAIL NAME: WHY";
// exits 1 when any failed. Usage: node browser.mjs APP_URL OP_URL
import { chromium, request } from 'playwright-core';

const [app, op] = process.argv.slice(2);
let failed = 0;
const check = (name, ok, why = '') => {
  if (ok) console.log(`ok   ${name}`);
  else { failed++; console.log(`FAIL ${name}: ${why}`); }
};
const sessionCookie = async (ctx) => (await ctx.cookies()).find(c => c.name === '__Host-portcullis-session-people');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-background-networking'],
  timeout: 30000,
});
try {
  const ctx = await browser.newContext();
  ctx.setDefaultTimeout(15000);
  const page = await ctx.newPage();
  const callbacks = [];
  let toOp = 0;
  page.on('request', r => {
    if (r.url().includes('/oauth2/callback')) callbacks.push(r.url());
    if (r.url().startsWith(op)) toOp++;
  });

  // 1. The API URL sends the browser to the provider's login form.
  await page.goto(`${app}/app/hello?x=1`);
  check('the browser lands on the provider\'s login form', page.url().startsWith(op) && await page.locator('input[name=login]').count() === 1, page.url());

  // 2. Sign in (and consent), and come back to the page first asked for.
  await page.fill('input[name=login]', 'jane');
  await page.fill('input[name=password]', 'any');
  await page.click('button[type=submit]');
  await page.waitForURL(u => !u.pathname.startsWith('/interaction') || u.href.startsWith(app), { timeout: 15000 }).catch(() => {});
  if (page.url().startsWith(op)) {
    await page.click('button[type=submit]'); // the consent form
  }
  await page.waitForURL(u => u.href.startsWith(`${app}/app/hello`), { timeout: 15000 }).catch(() => {});
  check('after signing in the browser is back at /app/hello?x=1', page.url() === `${app}/app/hello?x=1`, page.url());
  let echo = {};
  try { echo = JSON.parse(await page.locator('body').innerText()); } catch (e) { echo = {}; }
  check('the app sees the identity (sub)', echo.headers?.['x-portcullis-identity'] === 'jane', JSON.stringify(echo));
  check('the app sees the verified email', echo.headers?.['x-portcullis-email'] === 'jane@example.com', JSON.stringify(echo));
  check('the app never sees the sidecar\'s cookies', !(echo.headers?.cookie || '').includes('portcullis-'), JSON.stringify(echo));
  const first = await sessionCookie(ctx);
  check('the session cookie is HttpOnly, Secure, SameSite=Lax, under 4 KiB',
    !!first && first.httpOnly && first.secure && first.sameSite === 'Lax' && first.value.length < 4000, JSON.stringify(first));

  // 3. Headers the client sends in the sidecar's names do not reach the app.
  await page.setExtraHTTPHeaders({ 'x-portcullis-email': 'ceo@example.com', 'x-portcullis-identity': 'ceo' });
  await page.goto(`${app}/app/hello`);
  try { echo = JSON.parse(await page.locator('body').innerText()); } catch (e) { echo = {}; }
  check('client-sent identity headers are replaced', echo.headers?.['x-portcullis-identity'] === 'jane' && echo.headers?.['x-portcullis-email'] === 'jane@example.com', JSON.stringify(echo));
  await page.setExtraHTTPHeaders({});

  // 4. Refresh: the ID token lives 30 s, so every call is within its last minute and
  // refreshes it, at most once per cookie every 10 s (the sidecar holds off a flood).
  const before = await sessionCookie(ctx);
  await page.waitForTimeout(11000);
  await page.goto(`${app}/app/hello`);
  const renewed = await sessionCookie(ctx);
  check('the session was refreshed with the refresh token (new cookie)', !!renewed && renewed.value !== before?.value, 'cookie unchanged');

  // 5. Refusals: the callback replayed, a forged state.
  const cb = callbacks.find(u => u.includes('code='));
  let resp = await page.goto(cb);
  check('a replayed callback is refused (400)', resp.status() === 400, `${resp.status()} ${cb}`);
  resp = await page.goto(`${app}/oauth2/callback?code=forged&state=forged`);
  check('a forged state is refused (400)', resp.status() === 400, String(resp.status()));
  // A tampered session cookie is no session: back to the provider.
  const good = await sessionCookie(ctx);
  const flip = good.value.slice(0, 20) + (good.value[20] === 'A' ? 'B' : 'A') + good.value.slice(21);
  await ctx.addCookies([{ ...good, value: flip }]);
  toOp = 0;
  await page.goto(`${app}/app/hello`);
  // (The provider's own session is still alive: it signs the browser straight back in.)
  check('a tampered session cookie sends the browser to sign in again', toOp > 0, page.url());

  // Session expiry: profile `brief` ends its sessions after 8 s, refreshes included.
  await page.goto(`${app}/brief/x`);
  await page.waitForURL(u => u.href.startsWith(`${app}/brief/x`), { timeout: 15000 }).catch(() => {});
  const brief = (await ctx.cookies()).find(c => c.name === '__Host-portcullis-session-brief');
  check('a second profile signs in on its own route', !!brief && page.url() === `${app}/brief/x`, page.url());
  await page.waitForTimeout(9000);
  toOp = 0;
  await page.goto(`${app}/brief/x`);
  check('an ended session sends the browser to sign in again', toOp > 0, page.url());

  // 6. API clients keep the 401 and its Bearer challenge; a bearer token is judged as one.
  const api = await request.newContext();
  resp = await api.get(`${app}/app/hello`, { headers: { accept: 'application/json' }, maxRedirects: 0 });
  check('an API client gets 401 with a Bearer challenge', resp.status() === 401 && (resp.headers()['www-authenticate'] || '').startsWith('Bearer'), `${resp.status()} ${JSON.stringify(resp.headers())}`);
  resp = await api.get(`${app}/app/hello`, { headers: { accept: 'text/html', authorization: 'Bearer nope' }, maxRedirects: 0 });
  check('a wrong bearer token gets 401, not a sign-in redirect', resp.status() === 401, String(resp.status()));
  await api.dispose();

  // 7. Sign out: the session cookie is cleared and the provider's session ended.
  await page.goto(`${app}/app/hello`);
  await page.goto(`${app}/oauth2/logout`);
  check('sign-out goes to the provider\'s end-session endpoint', page.url().startsWith(op), page.url());
  check('sign-out clears the session cookie', !(await sessionCookie(ctx)), 'still set');
  const yes = page.locator('button[autofocus], button[type=submit]');
  if (await yes.count() > 0) {
    await yes.first().click();
    await page.waitForLoadState();
  }
  await page.goto(`${app}/app/hello`);
  check('after signing out the API URL asks to sign in again', page.url().startsWith(op) && await page.locator('input[name=login]').count() === 1, page.url());
  await ctx.close();
} finally {
  await browser.close();
}
console.log(failed ? `browser checks: ${failed} failed` : 'browser checks: all passed');
process.exit(failed ? 1 : 0);
