#!/usr/bin/env python3
"""OAuth 1.0a through the real sidecar, signed by a third-party client: requests-oauthlib
(PyPI `requests-oauthlib`, on `oauthlib`). Run by tests/suite.d/48-oauth1-interop.sh:

    oauth1_client.py HTTP_BASE HTTPS_BASE CA_FILE APP_PORT RSA_KEY_FILE

The sidecar serves OAuth1 profile `partners` on /api (HTTP_BASE, plain HTTP) and on /secure
(HTTPS_BASE, TLS with CA_FILE's certificate) toward the app this script runs on 127.0.0.1:APP_PORT,
which echoes what it received. Consumers: `hmac-partner` (secret `hmac consumer secret`),
`rsa-partner` (RSA_KEY_FILE's public key); token `tok-1` (secret `token secret 1`) belongs
to hmac-partner, `tok-2` to rsa-partner.

Every signature method (HMAC-SHA1, HMAC-SHA256, RSA-SHA1, PLAINTEXT over HTTPS) and transport
(header, query, form body) on several methods is admitted as its consumer, and the app
receives the call as sent (method, path, query, body); then what must be refused is: the same
request replayed, a changed parameter (query, form body, path), an old timestamp, a wrong
secret, another consumer's token, PLAINTEXT over plain HTTP. Prints `ok NAME` / `FAIL NAME: ...`
lines; exits 1 when anything failed.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from oauthlib.oauth1 import SIGNATURE_TYPE_AUTH_HEADER, SIGNATURE_TYPE_BODY, SIGNATURE_TYPE_QUERY
from requests_oauthlib import OAuth1

HTTP, HTTPS, CA, APP_PORT, RSA_KEY = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
HMAC_SECRET = "hmac consumer secret"
TIMEOUT = 10
failed = 0


class Echo(BaseHTTPRequestHandler):
    """The app: answers 200 with what it received."""

    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        out = json.dumps({"method": self.command, "target": self.path, "body": body,
                          "identity": self.headers.get("X-Portcullis-Identity")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer

    def log_message(self, *args):
        pass


app = ThreadingHTTPServer(("127.0.0.1", APP_PORT), Echo)
threading.Thread(target=app.serve_forever, daemon=True).start()
session = requests.Session()


def check(name, ok, detail=""):
    global failed
    if ok:
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")


def auth(consumer="hmac-partner", token=None, method="HMAC-SHA1", transport=SIGNATURE_TYPE_AUTH_HEADER, **kw):
    secrets = {"tok-1": "token secret 1", "tok-2": "token secret 2"}
    if consumer == "rsa-partner":
        kw.setdefault("rsa_key", open(RSA_KEY).read())
    else:
        kw.setdefault("client_secret", HMAC_SECRET)
    return OAuth1(consumer, resource_owner_key=token, resource_owner_secret=secrets.get(token),
                  signature_method=method, signature_type=transport, **kw)


def prepared(method, url, oauth, data=None):
    return requests.Request(method, url, auth=oauth, data=data).prepare()


def send(p, tls=False):
    return session.send(p, timeout=TIMEOUT, verify=CA if tls else True)


def admitted(name, p, consumer, tls=False):
    """`p` is admitted as `consumer`, the app receives it as sent; then it is refused as a replay."""
    body = p.body.decode() if isinstance(p.body, bytes) else (p.body or "")
    r = send(p, tls)
    if r.status_code != 200:
        check(name, False, f"{r.status_code} {r.headers.get('www-authenticate')} {r.text[:200]}")
        return
    got = r.json()
    target = p.path_url
    check(name, got == {"method": p.method, "target": target, "body": body, "identity": consumer},
          f"the app received {got}, sent {p.method} {target} {body!r}")
    again = send(p, tls)
    check(f"{name}: replayed", again.status_code == 401 and again.headers.get("www-authenticate", "").startswith("OAuth realm="),
          f"{again.status_code} {again.headers.get('www-authenticate')}")


def refused(name, p, tls=False):
    r = send(p, tls)
    check(name, r.status_code == 401 and r.headers.get("www-authenticate", "").startswith("OAuth realm="),
          f"{r.status_code} {r.headers.get('www-authenticate')} {r.text[:200]}")


form = {"item": "42", "note": "a&b c", "who": "J\u00fcrgen"}

# --- admitted, each method and transport ------------------------------------------------------
admitted("GET, HMAC-SHA1 in the header, two-legged",
         prepared("GET", f"{HTTP}/api/items?id=7&id=8&q=a+b", auth()), "hmac-partner")
admitted("POST form body, HMAC-SHA256 in the header, with a token",
         prepared("POST", f"{HTTP}/api/orders?src=x", auth(token="tok-1", method="HMAC-SHA256"), form),
         "hmac-partner")
admitted("POST, HMAC-SHA1 in the form body",
         prepared("POST", f"{HTTP}/api/orders", auth(token="tok-1", transport=SIGNATURE_TYPE_BODY), form),
         "hmac-partner")
admitted("PUT, HMAC-SHA256 in the query",
         prepared("PUT", f"{HTTP}/api/items/7?v=2", auth(method="HMAC-SHA256", transport=SIGNATURE_TYPE_QUERY)),
         "hmac-partner")
admitted("DELETE, RSA-SHA1 in the header, with a token",
         prepared("DELETE", f"{HTTP}/api/items/7", auth("rsa-partner", token="tok-2", method="RSA-SHA1")),
         "rsa-partner")
admitted("PATCH form body, RSA-SHA1",
         prepared("PATCH", f"{HTTP}/api/items/7", auth("rsa-partner", method="RSA-SHA1"), {"qty": "3"}),
         "rsa-partner")
admitted("GET over HTTPS, PLAINTEXT with a token",
         prepared("GET", f"{HTTPS}/secure/items", auth(token="tok-1", method="PLAINTEXT")),
         "hmac-partner", tls=True)

# --- refused ---------------------------------------------------------------------------------
p = prepared("GET", f"{HTTP}/api/items?id=7", auth())
p.url = p.url.replace("id=7", "id=8")
refused("a changed query parameter", p)
p = prepared("GET", f"{HTTP}/api/items?id=7", auth())
p.url = p.url.replace("/api/items", "/api/admin")
refused("a changed path", p)
p = prepared("POST", f"{HTTP}/api/orders", auth(token="tok-1"), form)
p.body = p.body.replace(b"item=42", b"item=43")
refused("a changed form body parameter", p)
p = prepared("POST", f"{HTTP}/api/orders", auth(token="tok-1", transport=SIGNATURE_TYPE_BODY), form)
p.body = p.body + b"&extra=1"
p.headers["Content-Length"] = str(len(p.body))
refused("a form body parameter added", p)
# A form body beside another media type: the app could read parameters nobody signed.
p = prepared("POST", f"{HTTP}/api/orders", auth(), None)
p.body = b"amount=10"
p.headers["Content-Type"] = "application/json, application/x-www-form-urlencoded"
p.headers["Content-Length"] = str(len(p.body))
refused("a form body under an ambiguous Content-Type", p)
refused("an old timestamp", prepared("GET", f"{HTTP}/api/items", auth(timestamp=str(int(time.time()) - 1000))))
refused("a timestamp from the future", prepared("GET", f"{HTTP}/api/items", auth(timestamp=str(int(time.time()) + 1000))))
nonce = "fixed-nonce-0001"
stamp = str(int(time.time()))
first = prepared("GET", f"{HTTP}/api/items?page=1", auth(nonce=nonce, timestamp=stamp))
check("a fixed nonce, first use", send(first).status_code == 200)
refused("the same nonce and timestamp on another request",
        prepared("GET", f"{HTTP}/api/items?page=2", auth(nonce=nonce, timestamp=stamp)))
refused("a wrong consumer secret", prepared("GET", f"{HTTP}/api/items", auth(client_secret="not the secret")))
refused("another consumer's token",
        prepared("GET", f"{HTTP}/api/items", auth(token="tok-2")))
refused("a wrong token secret",
        prepared("GET", f"{HTTP}/api/items", OAuth1("hmac-partner", client_secret=HMAC_SECRET,
                                                   resource_owner_key="tok-1", resource_owner_secret="guess")))
refused("PLAINTEXT over plain HTTP", prepared("GET", f"{HTTP}/api/items", auth(token="tok-1", method="PLAINTEXT")))
refused("an unknown consumer", prepared("GET", f"{HTTP}/api/items", auth("nobody")))
r = session.get(f"{HTTP}/api/items", timeout=TIMEOUT)
check("no signature: 401 with the OAuth challenge",
      r.status_code == 401 and r.headers.get("www-authenticate") == 'OAuth realm="api"',
      f"{r.status_code} {r.headers.get('www-authenticate')}")

app.shutdown()
print(f"oauth1 interop: {failed} failed")
sys.exit(1 if failed else 0)
