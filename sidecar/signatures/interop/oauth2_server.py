#!/usr/bin/env python3
"""A real OAuth 2.0 authorization server (Authlib's Flask AuthorizationServer, client
credentials grant, client_secret_basic) and a test origin that accepts only the bearer tokens
it issued, still valid, with the right scope — for the sidecar's oauth2ClientCredentials
interop check (tests/suite.d/45-sidecar-signing-interop.sh) — and an RFC 7662 introspection
endpoint (Authlib's IntrospectionEndpoint) for the sidecar's inbound introspection check
(tests/suite.d/47-introspection-interop.sh).

    oauth2_server.py PORT_FILE CLIENT_ID CLIENT_SECRET EXPIRES_IN [INTROSPECT_ID INTROSPECT_SECRET]

Writes `TOKEN_PORT ORIGIN_PORT` to PORT_FILE (both on 127.0.0.1).
Token server: POST /oauth/token (Authlib checks the client secret; a wrong one is 401
invalid_client). Origin: any path answers 200 {"ok": true, ...} for a valid token, else 401;
GET /_stats gives the counts, POST /_revoke drops every token issued so far.
Introspection: POST /oauth/introspect, client_secret_basic, only for INTROSPECT_ID (a
resource server, registered when given); tokens are opaque strings, revoked ones (and
unknown or expired ones) answer {"active": false}.
"""

import hmac
import json
import os
import sys
import threading
import time

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

LOCK = threading.Lock()
TOKENS = {}  # access_token -> {"client_id", "scope", "audience", "expires_at"}
STATS = {"token_requests": 0, "issued": 0, "origin_ok": 0, "origin_refused": 0, "introspections": 0,
         "introspection_clients": [], "introspection_auth_methods": []}
ISSUER = "https://authlib.interop"
INTROSPECTOR = {"client_id": None}


class StoredToken:
    """A token as the introspection endpoint sees it."""

    def __init__(self, access_token, record):
        self.access_token, self.record = access_token, record

    def is_expired(self):
        return self.record["expires_at"] <= time.time()

    def is_revoked(self):
        with LOCK:
            return self.access_token not in TOKENS


class Introspection(IntrospectionEndpoint):
    def query_token(self, token_string, token_type_hint):
        with LOCK:
            record = TOKENS.get(token_string)
        return StoredToken(token_string, record) if record else None

    def check_permission(self, token, client, request):
        # Only the resource server may introspect.
        with LOCK:
            STATS["introspection_clients"].append(client.get_client_id())
        return client.get_client_id() == INTROSPECTOR["client_id"]

    def introspect_token(self, token):
        r = token.record
        payload = {"active": True, "client_id": r["client_id"], "sub": r["client_id"], "scope": r["scope"],
                   "iss": ISSUER, "exp": int(r["expires_at"]), "iat": int(r["issued_at"]), "token_type": "Bearer"}
        if r.get("audience"):
            payload["aud"] = r["audience"]
        return payload


class Client(ClientMixin):
    def __init__(self, client_id, secret):
        self.client_id, self.secret = client_id, secret

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        allowed = {"api", "read"}
        return " ".join(s for s in (scope or "").split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return hmac.compare_digest(client_secret.encode(), self.secret.encode())

    def check_endpoint_auth_method(self, method, endpoint):
        if endpoint == "introspection":
            with LOCK:
                STATS["introspection_auth_methods"].append(method)
        return method == "client_secret_basic"

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type == "client_credentials"


def main():
    if len(sys.argv) not in (5, 7):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    port_file, client_id, client_secret, expires_in = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    clients = {client_id: Client(client_id, client_secret)}
    if len(sys.argv) == 7:
        INTROSPECTOR["client_id"] = sys.argv[5]
        clients[sys.argv[5]] = Client(sys.argv[5], sys.argv[6])

    idp = Flask("idp")
    idp.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"client_credentials": expires_in}

    def save_token(token, req):
        with LOCK:
            STATS["issued"] += 1
            TOKENS[token["access_token"]] = {
                "client_id": req.client.get_client_id(),
                "scope": token.get("scope", ""),
                "audience": request.form.get("audience"),
                "expires_at": time.time() + token.get("expires_in", expires_in),
                "issued_at": time.time(),
            }

    server = AuthorizationServer(idp, query_client=clients.get, save_token=save_token)
    server.register_grant(grants.ClientCredentialsGrant)
    server.register_endpoint(Introspection)

    @idp.route("/oauth/token", methods=["POST"])
    def token():
        with LOCK:
            STATS["token_requests"] += 1
        return server.create_token_response()

    @idp.route("/oauth/introspect", methods=["POST"])
    def introspect():
        with LOCK:
            STATS["introspections"] += 1
        return server.create_endpoint_response(Introspection.ENDPOINT_NAME)

    origin = Flask("origin")

    @origin.route("/_stats")
    def stats():
        with LOCK:
            return jsonify(dict(STATS))

    @origin.route("/_revoke", methods=["POST"])
    def revoke():
        with LOCK:
            TOKENS.clear()
        return jsonify({"ok": True})

    @origin.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "DELETE"])
    @origin.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE"])
    def serve(path):
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with LOCK:
            t = TOKENS.get(token) if token else None
            ok = t is not None and t["expires_at"] > time.time() and "api" in t["scope"].split()
            STATS["origin_ok" if ok else "origin_refused"] += 1
        if not ok:
            return jsonify({"ok": False, "error": "invalid or expired token"}), 401
        return jsonify({"ok": True, "client_id": t["client_id"], "scope": t["scope"], "audience": t["audience"],
                        "path": "/" + path, "body": request.get_data(as_text=True)})

    servers = [make_server("127.0.0.1", 0, app, threaded=True) for app in (idp, origin)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    with open(port_file + ".tmp", "w") as f:
        f.write(f"{servers[0].server_port} {servers[1].server_port}")
    os.rename(port_file + ".tmp", port_file)
    threading.Event().wait()


if __name__ == "__main__":
    main()
