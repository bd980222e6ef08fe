#!/usr/bin/env node
// draft-cavage peer for the interop suite, built on npm `http-signature` (Joyent's reference
// implementation). NODE_PATH must reach its node_modules.
//
//   cavage_peer.js sign   FILE   # request JSON (sigtool's format) -> the request, signed
//   cavage_peer.js verify FILE   # -> {"ok": true} (exit 0) or {"ok": false, "error": ...} (exit 1)
//
// Verification uses the real clock (clockSkew = max_age) and checks a signed Digest against
// the body (http-signature itself does not look at bodies).
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const httpSignature = require('http-signature');

const NAMES = {
  'hmac-sha256': 'hmac-sha256',
  'rsa-v1_5-sha256': 'rsa-sha256',
  'ecdsa-p256-sha256': 'ecdsa-sha256',
  'ed25519': 'ed25519-sha512',
};

function keyMaterial(spec) {
  if (spec.hmac !== undefined) return Buffer.from(spec.hmac);
  if (spec.hmac_b64 !== undefined) return Buffer.from(spec.hmac_b64, 'base64');
  return spec.file !== undefined ? fs.readFileSync(spec.file, 'utf8') : spec.pem;
}

function target(url) {
  const u = new URL(url);
  return u.pathname + u.search;
}

function lowerHeaders(h) {
  const out = {};
  for (const [k, v] of Object.entries(h || {})) out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
  return out;
}

function sign(req) {
  const headers = lowerHeaders(req.headers);
  const body = req.body || '';
  if (req.digest) {
    const alg = req.digest === 'sha-512' ? 'sha512' : 'sha256';
    headers.digest = req.digest.toUpperCase() + '=' + crypto.createHash(alg).update(body).digest('base64');
  }
  if (req.date && !headers.date) headers.date = new Date((req.created || Date.now() / 1000) * 1000).toUTCString();
  const fake = {
    method: req.method || 'GET',
    path: target(req.url),
    getHeader: (n) => headers[n.toLowerCase()],
    setHeader: (n, v) => { headers[n.toLowerCase()] = v; },
  };
  httpSignature.signRequest(fake, {
    key: keyMaterial(req.key),
    keyId: req.key_id,
    algorithm: NAMES[req.alg],
    headers: req.components,
    authorizationHeaderName: req.authorization ? 'Authorization' : 'Signature',
  });
  req.headers = headers;
  return req;
}

function verify(req) {
  const headers = lowerHeaders(req.headers);
  const fake = { method: req.method || 'GET', url: target(req.url), headers, httpVersion: '1.1' };
  const parsed = httpSignature.parseRequest(fake, {
    clockSkew: req.max_age || 300,
    headers: req.required || undefined,
  });
  if (parsed.keyId !== req.key_id) throw new Error('unknown keyId ' + parsed.keyId);
  const key = keyMaterial(req.key);
  const ok = parsed.algorithm.toLowerCase().startsWith('hmac')
    ? httpSignature.verifyHMAC(parsed, key)
    : httpSignature.verifySignature(parsed, key);
  if (!ok) throw new Error('signature does not verify');
  if (req.body !== undefined && parsed.params.headers.includes('digest')) {
    for (const part of headers.digest.split(',')) {
      const [name, value] = [part.slice(0, part.indexOf('=')).trim(), part.slice(part.indexOf('=') + 1).trim()];
      const alg = { 'SHA-256': 'sha256', 'SHA-512': 'sha512' }[name.toUpperCase()];
      if (alg && crypto.createHash(alg).update(req.body).digest('base64') !== value) {
        throw new Error('Digest does not match the body');
      }
    }
  }
  return { ok: true, keyId: parsed.keyId, algorithm: parsed.algorithm, headers: parsed.params.headers };
}

const [cmd, file] = process.argv.slice(2);
if (!['sign', 'verify'].includes(cmd) || !file) {
  console.error('usage: cavage_peer.js sign|verify FILE');
  process.exit(2);
}
const req = JSON.parse(fs.readFileSync(file, 'utf8'));
if (cmd === 'sign') {
  console.log(JSON.stringify(sign(req)));
} else {
  try {
    console.log(JSON.stringify(verify(req)));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e && e.message || e) }));
    process.exit(1);
  }
}
