#!/usr/bin/env python3
"""A test origin that verifies every request it receives with the third-party Python
`http-message-signatures` (RFC 9421), through rfc9421_peer.verify.

    rfc9421_origin.py PORT_FILE KEYS_JSON

KEYS_JSON: {"<keyid>": {"alg": "<RFC 9421 name>", "key": <key spec, as rfc9421_peer>}, ...}.
Listens on 127.0.0.1 (a free port, written to PORT_FILE). Each request: the keyid is read from
Signature-Input, the request (URL rebuilt from Host and the path) is verified with a 60 s max
age, requiring the components in the X-Interop-Require header (space-separated) if any, the
body checked against Content-Digest when one is present. Answers 200 {"ok": true, ...} or 401
{"ok": false, "error": ...}.
"""

import base64
import hashlib
import json
import os
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rfc9421_peer  # noqa: E402

KEYS = {}


def check_content_digest(headers, body):
    """True when a Content-Digest is present and its sha-256 / sha-512 members match the body
    (the library checked it too; this makes sure)."""
    value = next((v for k, v in headers.items() if k.lower() == "content-digest"), None)
    if value is None:
        return False
    checked = False
    for member in value.split(","):
        name, _, item = member.strip().partition("=")
        h = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}.get(name.strip().lower())
        if h is None:
            continue
        if base64.b64encode(h(body).digest()).decode() != item.strip().strip(":"):
            raise ValueError("Content-Digest does not match the body")
        checked = True
    return checked


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("latin-1") if length else ""
        headers = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        required = tuple((self.headers.get("X-Interop-Require") or "").split())
        headers.pop("X-Interop-Require", None)
        try:
            m = re.search(r'keyid="([^"]*)"', self.headers.get("Signature-Input") or "")
            if not m:
                raise ValueError("no Signature-Input keyid")
            entry = KEYS[m.group(1)]
            req = {
                "method": self.command,
                "url": f"http://{self.headers['Host']}{self.path}",
                "headers": headers,
                "body": body,
                "key_id": m.group(1),
                "alg": entry["alg"],
                "key": entry["key"],
                "required": required,
                "max_age": 60,
            }
            out, status = rfc9421_peer.verify(req), 200
            out["digest_checked"] = check_content_digest(headers, body.encode("latin-1"))
        except Exception as e:  # any refusal is a 401
            out, status = {"ok": False, "error": f"{type(e).__name__}: {e}"}, 401
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_one


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    KEYS.update(json.loads(sys.argv[2]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
