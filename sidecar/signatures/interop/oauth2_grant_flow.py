#!/usr/bin/env python3
"""The Builtin provider's authorization-code flow, driven by a third-party OAuth 2.0 client:
requests-oauthlib's OAuth2Session (PyPI `requests-oauthlib`, on `oauthlib`), with PKCE S256.
Run by tests/suite.d/49-oauth2-grants-interop.sh:

    oauth2_grant_flow.py BASE CA_FILE APP_PORT OWNER_PORT OWNER_TOKEN METADATA_OUT SECOND_BASE

The sidecar serves the Builtin profile `accelerator` on BASE (`https://127.0.0.1:PORT/api`,
TLS with CA_FILE's certificate) toward the app this script runs on 127.0.0.1:APP_PORT (it
echoes the identity headers it received). This script is also the API owner's backend, on
127.0.0.1:OWNER_PORT: its consent page (`/consent`) approves for user `alice` by calling the
sidecar's grant API with OWNER_TOKEN, and sends the browser back where the sidecar says.
Client `app-1` (secret `s3cret`, redirect URI `https://app.example.com/cb`, scope `read`).
SECOND_BASE is a second sidecar sharing the first's store (Redis): the client calls and
refreshes there too, and the owner's revocation on the first is enforced there within a second.

Checked: the whole flow as the library runs it (authorization URL, consent, callback, token
with client_secret_basic and the PKCE verifier); the API called with the token, the app told
user and client; a refresh that rotates the refresh token; the owner's revocation refusing the
next call and the next refresh at once; a code used twice refused; a wrong PKCE verifier
refused; an unregistered redirect URI refused without a redirect. The metadata document is
written to METADATA_OUT (validated against RFC 8414 by the suite, with Authlib).
Prints `ok NAME` / `FAIL NAME: ...` lines; exits 1 when anything failed.
"""

import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from oauthlib.oauth2.rfc6749.errors import InvalidGrantError
from requests_oauthlib import OAuth2Session

BASE, CA, APP_PORT, OWNER_PORT, OWNER_TOKEN, METADATA_OUT, SECOND = sys.argv[1:8]
CLIENT, SECRET, CALLBACK = "app-1", "s3cret", "https://app.example.com/cb"
TOKEN_URL = BASE + "/oauth2/token"
TIMEOUT = 10
failed = 0


def check(name, ok, detail=""):
    global failed
    if ok:
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")


class App(BaseHTTPRequestHandler):
    """The app behind the sidecar: echoes who the sidecar says is calling."""

    def do_GET(self):
        out = json.dumps({"identity": self.headers.get("X-Portcullis-Identity"),
                          "client": self.headers.get("X-Portcullis-Client")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


class Owner(BaseHTTPRequestHandler):
    """The owner's consent page: alice approves; the grant API gives the code."""

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        grant = requests.post(BASE + "/oauth2/grants", verify=CA, timeout=TIMEOUT,
                              headers={"Authorization": f"Bearer {OWNER_TOKEN}"},
                              json={"request": query["request"][0], "user": "alice"})
        if grant.status_code != 201:
            self.send_response(500)
            self.end_headers()
            return
        self.send_response(302)
        self.send_header("Location", grant.json()["redirect_to"])
        self.end_headers()

    def log_message(self, *args):
        pass


for port, handler in ((APP_PORT, App), (OWNER_PORT, Owner)):
    server = ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def browse(url):
    """What a browser does with the authorization URL: follows the sidecar's redirect to the
    consent page, and the consent page's back toward the client: the callback URL."""
    first = requests.get(url, allow_redirects=False, verify=CA, timeout=TIMEOUT)
    if first.status_code != 302:
        return None, first
    consent = first.headers["Location"]
    back = requests.get(consent, allow_redirects=False, timeout=TIMEOUT)
    return back.headers.get("Location"), first


def session():
    return OAuth2Session(CLIENT, redirect_uri=CALLBACK, scope=["read"], pkce="S256")


# 1. The flow, as the library runs it.
client = session()
url, state = client.authorization_url(BASE + "/oauth2/authorize")
callback, first = browse(url)
check("the authorization endpoint sends the user to the owner's consent page",
      first.status_code == 302 and first.headers["Location"].startswith(f"http://127.0.0.1:{OWNER_PORT}/consent?request="),
      f"{first.status_code} {first.headers.get('Location')}")
check("the grant API's code comes back to the client's redirect URI with its state",
      callback is not None and callback.startswith(CALLBACK + "?code=") and f"state={state}" in callback, callback)
token = client.fetch_token(TOKEN_URL, authorization_response=callback, client_secret=SECRET, verify=CA,
                           timeout=TIMEOUT)
check("the token endpoint redeems the code (client_secret_basic, PKCE verifier)",
      token.get("access_token") and token.get("refresh_token") and token.get("token_type") == "Bearer", token)
seen = client.get(BASE + "/data", verify=CA, timeout=TIMEOUT)
check("the API admits the token; the app is told the user and the client",
      seen.status_code == 200 and seen.json() == {"identity": "alice", "client": CLIENT},
      f"{seen.status_code} {seen.text}")

# 2. Refresh: the refresh token rotates.
old_refresh = token["refresh_token"]
fresh = client.refresh_token(TOKEN_URL, auth=(CLIENT, SECRET), verify=CA, timeout=TIMEOUT)
check("a refresh gives a new access token and a new refresh token",
      fresh["refresh_token"] != old_refresh and fresh["access_token"] != token["access_token"], fresh)
seen = client.get(BASE + "/data", verify=CA, timeout=TIMEOUT)
check("the refreshed token is admitted", seen.status_code == 200, f"{seen.status_code} {seen.text}")

# 2a. The second sidecar (same store): the token is admitted there, and a refresh there
# rotates the refresh token the first issued.
seen = client.get(SECOND + "/data", verify=CA, timeout=TIMEOUT)
check("the second sidecar admits the token", seen.status_code == 200 and seen.json()["identity"] == "alice",
      f"{seen.status_code} {seen.text}")
rotated = client.refresh_token(SECOND + "/oauth2/token", auth=(CLIENT, SECRET), verify=CA, timeout=TIMEOUT)
check("the second sidecar rotates the refresh token the first issued",
      rotated["refresh_token"] != fresh["refresh_token"], rotated)

# 3. A code used twice, a wrong verifier, an unregistered redirect URI.
# (The library keeps the verifier of its last authorization URL: set as a second client
# holding the same code and verifier would.)
again = session()
again._code_verifier = client._code_verifier
try:
    again.fetch_token(TOKEN_URL, authorization_response=callback, client_secret=SECRET, verify=CA,
                      timeout=TIMEOUT)
    check("a code used twice is refused", False, "a token was issued")
except InvalidGrantError:
    check("a code used twice is refused (invalid_grant)", True)
other = session()
url, _ = other.authorization_url(BASE + "/oauth2/authorize")
cb, _ = browse(url)
other._code_verifier = "x" * 43
try:
    other.fetch_token(TOKEN_URL, authorization_response=cb, client_secret=SECRET, verify=CA,
                      timeout=TIMEOUT)
    check("a wrong PKCE verifier is refused", False, "a token was issued")
except InvalidGrantError:
    check("a wrong PKCE verifier is refused (invalid_grant)", True)
evil = OAuth2Session(CLIENT, redirect_uri="https://evil.example/cb", scope=["read"], pkce="S256")
url, _ = evil.authorization_url(BASE + "/oauth2/authorize")
r = requests.get(url, allow_redirects=False, verify=CA, timeout=TIMEOUT)
check("an unregistered redirect URI gets an error page, no redirect",
      r.status_code == 400 and "Location" not in r.headers, f"{r.status_code} {r.headers.get('Location')}")

# 4. The owner revokes alice's grants: the next call and the next refresh are refused.
revoked = requests.delete(BASE + "/oauth2/grants", params={"user": "alice"}, verify=CA, timeout=TIMEOUT,
                          headers={"Authorization": f"Bearer {OWNER_TOKEN}"})
check("the owner revokes alice's grants", revoked.status_code == 200 and revoked.json()["revoked"] >= 1,
      f"{revoked.status_code} {revoked.text}")
seen = client.get(BASE + "/data", verify=CA, timeout=TIMEOUT)
check("the next call after the revocation is refused (401)", seen.status_code == 401,
      f"{seen.status_code} {seen.text}")
start = time.monotonic()
status = None
while time.monotonic() - start < 3:
    status = client.get(SECOND + "/data", verify=CA, timeout=TIMEOUT).status_code
    if status == 401:
        break
    time.sleep(0.02)
took = time.monotonic() - start
check(f"the second sidecar refuses it within a second ({took:.2f} s)", status == 401 and took < 1.0,
      f"{status} after {took:.2f} s")
try:
    client.refresh_token(TOKEN_URL, auth=(CLIENT, SECRET), verify=CA, timeout=TIMEOUT)
    check("a refresh after the revocation is refused", False, "a token was issued")
except InvalidGrantError:
    check("a refresh after the revocation is refused (invalid_grant)", True)

# 5. The metadata, for the suite to validate.
meta = requests.get(BASE.replace("/api", "/.well-known/oauth-authorization-server/api"), verify=CA,
                    timeout=TIMEOUT)
check("the metadata document is served", meta.status_code == 200, f"{meta.status_code}")
with open(METADATA_OUT, "w") as f:
    f.write(meta.text)

print(f"oauth2 grant flow: {failed} failed")
sys.exit(1 if failed else 0)
