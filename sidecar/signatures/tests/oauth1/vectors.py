"""Makes oauth1/vectors.json: OAuth 1.0a requests signed by oauthlib (a third-party client,
PyPI `oauthlib`), which tests/oauth1.rs verifies. Run from sidecar/signatures/tests:

    pip install oauthlib cryptography pyjwt && python3 oauth1/vectors.py > oauth1/vectors.json
"""
import json
from urllib.parse import urlsplit

from oauthlib.oauth1 import Client, SIGNATURE_TYPE_AUTH_HEADER, SIGNATURE_TYPE_QUERY, SIGNATURE_TYPE_BODY

RSA = open("keys/rsa2048-pkcs1.key").read()
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

CASES = [
    # (name, method, url, body, signature method, signature type, token?)
    ("hmac-sha1 header get", "GET", "http://api.example.com/photos?file=vacation.jpg&size=original", None, "HMAC-SHA1", SIGNATURE_TYPE_AUTH_HEADER, True),
    ("hmac-sha256 header get", "GET", "https://api.example.com:8443/a%20b/c?q=x+y&q=x%2By&empty=&flag", None, "HMAC-SHA256", SIGNATURE_TYPE_AUTH_HEADER, True),
    ("hmac-sha1 form post, duplicates", "POST", "http://API.Example.com:80/orders?b5=%3D%253D&a3=a&c%40=&a2=r%20b", "c2&a3=2+q&a3=a", "HMAC-SHA1", SIGNATURE_TYPE_AUTH_HEADER, True),
    ("hmac-sha1 two-legged", "GET", "https://api.example.com/v1/items?id=%E2%82%AC", None, "HMAC-SHA1", SIGNATURE_TYPE_AUTH_HEADER, False),
    ("hmac-sha256 query", "GET", "https://api.example.com/v1/items?x=1", None, "HMAC-SHA256", SIGNATURE_TYPE_QUERY, True),
    ("hmac-sha1 body", "POST", "https://api.example.com/v1/items", "name=J%C3%BCrgen&note=a%26b", "HMAC-SHA1", SIGNATURE_TYPE_BODY, True),
    ("rsa-sha1 header", "PUT", "https://api.example.com/v1/items/7?v=2", None, "RSA-SHA1", SIGNATURE_TYPE_AUTH_HEADER, True),
    ("plaintext header", "DELETE", "https://api.example.com/v1/items/7", None, "PLAINTEXT", SIGNATURE_TYPE_AUTH_HEADER, True),
]

out = []
for i, (name, method, url, body, sig, sigtype, token) in enumerate(CASES):
    client = Client(
        "key-" + str(i),
        client_secret=None if sig == "RSA-SHA1" else "consumer s3cret&%",
        resource_owner_key="token-" + str(i) if token else None,
        resource_owner_secret="token s3cret~" if token else None,
        signature_method=sig,
        signature_type=sigtype,
        rsa_key=RSA if sig == "RSA-SHA1" else None,
        timestamp=str(1700000000 + i),
        nonce="nonce" + str(i),
    )
    headers = dict(FORM) if body is not None else {}
    if body is not None:
        body_arg = body
    else:
        body_arg = None
    uri, headers, body_out = client.sign(url, http_method=method, body=body_arg, headers=headers)
    parts = urlsplit(uri)
    out.append({
        "name": name,
        "method": method,
        "scheme": parts.scheme,
        "authority": parts.netloc,
        "path": parts.path,
        "query": parts.query or None,
        "authorization": headers.get("Authorization"),
        "form": body_out if body is not None or sigtype == SIGNATURE_TYPE_BODY else None,
        "consumer_key": "key-" + str(i),
        "consumer_secret": "" if sig == "RSA-SHA1" else "consumer s3cret&%",
        "token_secret": "token s3cret~" if token else "",
        "signature_method": sig,
    })
print(json.dumps(out, indent=1))
