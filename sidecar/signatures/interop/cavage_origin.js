#!/usr/bin/env node
// A test origin that verifies every request it receives with npm `http-signature` (Joyent's
// draft-cavage implementation) — the real http.IncomingMessage handed to parseRequest.
// NODE_PATH must reach its node_modules.
//
//   cavage_origin.js PORT_FILE KEYS_JSON
//
// KEYS_JSON: {"<keyId>": {"key": {"hmac": TEXT} | {"file": PEM_PATH}}, ...}. Listens on
// 127.0.0.1 (a free port, written to PORT_FILE). Each request is verified with a 60 s clock
// skew, requiring the headers in X-Interop-Require (space-separated; default: date), and a
// signed Digest is checked against the body. Answers 200 {"ok": true, ...} or 401
// {"ok": false, "error": ...}.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const httpSignature = require('http-signature');

const [portFile, keysJson] = process.argv.slice(2);
if (!portFile || !keysJson) {
  console.error('usage: cavage_origin.js PORT_FILE KEYS_JSON');
  process.exit(2);
}
const KEYS = JSON.parse(keysJson);

function material(spec) {
  if (spec.hmac !== undefined) return Buffer.from(spec.hmac);
  return fs.readFileSync(spec.file, 'utf8');
}

function verify(req, body) {
  const required = (req.headers['x-interop-require'] || 'date').split(' ').filter(Boolean);
  const parsed = httpSignature.parseRequest(req, { clockSkew: 60, headers: required });
  const entry = KEYS[parsed.keyId];
  if (!entry) throw new Error('unknown keyId ' + parsed.keyId);
  const key = material(entry.key);
  const ok = parsed.algorithm.toLowerCase().startsWith('hmac')
    ? httpSignature.verifyHMAC(parsed, key)
    : httpSignature.verifySignature(parsed, key);
  if (!ok) throw new Error('signature does not verify');
  let digestChecked = false;
  if (parsed.params.headers.includes('digest')) {
    for (const part of req.headers.digest.split(',')) {
      const i = part.indexOf('=');
      const alg = { 'SHA-256': 'sha256', 'SHA-512': 'sha512' }[part.slice(0, i).trim().toUpperCase()];
      if (alg && crypto.createHash(alg).update(body).digest('base64') !== part.slice(i + 1).trim()) {
        throw new Error('Digest does not match the body');
      }
      digestChecked = digestChecked || Boolean(alg);
    }
  }
  return { ok: true, keyId: parsed.keyId, algorithm: parsed.algorithm, headers: parsed.params.headers, digest_checked: digestChecked };
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let status = 200;
    let out;
    try {
      out = verify(req, Buffer.concat(chunks));
    } catch (e) {
      status = 401;
      out = { ok: false, error: String((e && e.message) || e) };
    }
    const data = JSON.stringify(out);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
    res.end(data);
  });
});
server.listen(0, '127.0.0.1', () => {
  fs.writeFileSync(portFile + '.tmp', String(server.address().port));
  fs.renameSync(portFile + '.tmp', portFile);
});
