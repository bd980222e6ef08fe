#!/usr/bin/env python3
"""Sends a request JSON (sigtool's format, as the peers sign it) to a server, exactly as signed.

    send_request.py FILE [BODY_OVERRIDE]   # prints '<status> <response body>'

The URL's host and port are where it goes; the headers (Host included) and the body are sent
as they are in FILE, so a signature over them reaches the server intact. BODY_OVERRIDE, when
given, replaces the body (to send what was not signed).
"""

import http.client
import json
import sys
import urllib.parse


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    req = json.load(open(sys.argv[1]))
    url = urllib.parse.urlsplit(req["url"])
    body = (sys.argv[2] if len(sys.argv) == 3 else req.get("body", "")).encode()
    target = url.path or "/"
    if url.query:
        target += "?" + url.query
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
    conn.putrequest(req.get("method", "GET"), target, skip_host=True, skip_accept_encoding=True)
    for name, value in req.get("headers", {}).items():
        for v in value if isinstance(value, list) else [value]:
            conn.putheader(name, v)
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    resp = conn.getresponse()
    print(resp.status, resp.read().decode(errors="replace").strip())


if __name__ == "__main__":
    main()
