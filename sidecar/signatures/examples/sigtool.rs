//! `sigtool`: sign and verify HTTP requests from the command line, JSON in and out — the
//! interop harness's view of this crate (tests/suite.d/40-signatures-interop.sh).
//!
//! ```text
//! sigtool sign   [FILE]   # request JSON (stdin or FILE) → the same request, signed
//! sigtool verify [FILE]   # request JSON → {"ok":true,...} (exit 0) or {"ok":false,"error":...} (exit 1)
//! ```
//!
//! Request JSON: `standard` (`rfc9421` | `cavage`), `method`, `url` (absolute), `headers`
//! (object: name → string or array of strings), `body` (string), `key_id`, `key`
//! (`{"file": PATH}` | `{"pem": TEXT}` | `{"hmac": TEXT}` | `{"hmac_b64": B64}`), `alg`
//! (RFC 9421 name). Signing: `components` (RFC 9421 components or cavage headers), `label`,
//! `created` (default now), `expires`, `nonce`, `tag`, `include_alg` (default true), `digest`
//! (`sha-256` | `sha-512`: add Content-Digest, or Digest for cavage, from the body), `date`
//! (true: add a Date header for now when missing), `algorithm_name` (cavage: `legacy` |
//! `hs2019`), `authorization` (cavage: use `Authorization: Signature`). Verifying: `now`
//! (default the clock), `max_age` (default 300), `clock_skew` (default 5), `algorithms`
//! (default all), `required` (components that must be covered), `label`.

use std::io::Read as _;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use portcullis_signatures::cavage::{self, AlgorithmName};
use portcullis_signatures::digest::{self, DigestAlgorithm};
use portcullis_signatures::rfc9421;
use portcullis_signatures::{Algorithm, Key, Message};
use serde_json::{Map, Value, json};

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, file) = match args.as_slice() {
        [c] => (c.as_str(), None),
        [c, f] => (c.as_str(), Some(f.as_str())),
        _ => usage(),
    };
    let mut input = String::new();
    let read = match file {
        Some(f) => std::fs::read_to_string(f).map(|s| input = s),
        None => std::io::stdin().read_to_string(&mut input).map(|_| ()),
    };
    if let Err(e) = read {
        eprintln!("sigtool: cannot read input: {e}");
        std::process::exit(2);
    }
    let req: Map<String, Value> = match serde_json::from_str(&input) {
        Ok(Value::Object(m)) => m,
        _ => {
            eprintln!("sigtool: input is not a JSON object");
            std::process::exit(2);
        }
    };
    match cmd {
        "sign" => match sign(req) {
            Ok(v) => println!("{v}"),
            Err(e) => {
                eprintln!("sigtool: {e}");
                std::process::exit(2);
            }
        },
        "verify" => match verify(&req) {
            Ok(v) => println!("{v}"),
            Err(e) => {
                println!("{}", json!({"ok": false, "error": e}));
                std::process::exit(1);
            }
        },
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: sigtool sign|verify [FILE]   (request JSON on stdin or in FILE)");
    std::process::exit(2);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn str_field<'a>(req: &'a Map<String, Value>, name: &str) -> Res<Option<&'a str>> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn u64_field(req: &Map<String, Value>, name: &str) -> Res<Option<u64>> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{name} must be a non-negative integer")),
    }
}

fn strings(req: &Map<String, Value>, name: &str) -> Res<Vec<String>> {
    match req.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| format!("{name} must hold strings"))
            })
            .collect(),
        Some(_) => Err(format!("{name} must be an array of strings")),
    }
}

fn headers(req: &Map<String, Value>) -> Res<HeaderMap> {
    let mut h = HeaderMap::new();
    let Some(obj) = req.get("headers") else {
        return Ok(h);
    };
    let obj = obj.as_object().ok_or("headers must be an object")?;
    for (name, v) in obj {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name}"))?;
        let values: Vec<&str> = match v {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().ok_or("header values must be strings"))
                .collect::<Result<_, _>>()?,
            _ => return Err("header values must be strings".into()),
        };
        for s in values {
            h.append(
                name.clone(),
                HeaderValue::from_str(s).map_err(|_| format!("bad value for {name}"))?,
            );
        }
    }
    Ok(h)
}

fn headers_json(h: &HeaderMap) -> Value {
    let mut m = Map::new();
    for name in h.keys() {
        let vals: Vec<Value> = h
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        m.insert(
            name.as_str().to_string(),
            if vals.len() == 1 {
                vals[0].clone()
            } else {
                Value::Array(vals)
            },
        );
    }
    Value::Object(m)
}

fn load_key(req: &Map<String, Value>) -> Res<Key> {
    let k = req
        .get("key")
        .and_then(Value::as_object)
        .ok_or("key must be an object")?;
    let key = if let Some(f) = k.get("file").and_then(Value::as_str) {
        let bytes = std::fs::read(f).map_err(|e| format!("cannot read key file {f}: {e}"))?;
        Key::from_secret(&bytes)
    } else if let Some(p) = k.get("pem").and_then(Value::as_str) {
        Key::from_pem(p)
    } else if let Some(s) = k.get("hmac").and_then(Value::as_str) {
        Key::hmac(s.as_bytes())
    } else if let Some(b) = k.get("hmac_b64").and_then(Value::as_str) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|_| "hmac_b64 is not base64")?;
        Key::hmac(&raw)
    } else {
        return Err("key needs file, pem, hmac or hmac_b64".into());
    };
    key.map_err(|e| e.to_string())
}

fn algorithm(name: &str) -> Res<Algorithm> {
    Algorithm::from_name(name).ok_or_else(|| format!("unknown algorithm {name}"))
}

fn digest_alg(name: &str) -> Res<DigestAlgorithm> {
    match name {
        "sha-256" => Ok(DigestAlgorithm::Sha256),
        "sha-512" => Ok(DigestAlgorithm::Sha512),
        _ => Err(format!("unknown digest {name}")),
    }
}

struct Parsed {
    method: http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    standard: String,
}

fn parse(req: &Map<String, Value>) -> Res<Parsed> {
    let method = str_field(req, "method")?.unwrap_or("GET");
    let method = http::Method::from_bytes(method.as_bytes()).map_err(|_| "bad method")?;
    let url = str_field(req, "url")?.ok_or("url is required")?;
    let uri: Uri = url.parse().map_err(|_| format!("bad url {url}"))?;
    if uri.scheme().is_none() || uri.authority().is_none() {
        return Err("url must be absolute".into());
    }
    Ok(Parsed {
        method,
        uri,
        headers: headers(req)?,
        body: str_field(req, "body")?.map(|s| s.as_bytes().to_vec()),
        standard: str_field(req, "standard")?.unwrap_or("rfc9421").to_string(),
    })
}

fn message<'a>(p: &'a Parsed) -> Message<'a> {
    Message::from_parts(&p.method, &p.uri, &p.headers, "https")
}

fn sign(mut req: Map<String, Value>) -> Res<Value> {
    let mut p = parse(&req)?;
    let key = load_key(&req)?;
    let key_id = str_field(&req, "key_id")?.ok_or("key_id is required")?.to_string();
    let alg = algorithm(str_field(&req, "alg")?.ok_or("alg is required")?)?;
    let created = u64_field(&req, "created")?.unwrap_or_else(now);
    let expires = u64_field(&req, "expires")?;
    let components = strings(&req, "components")?;
    let comps: Vec<&str> = components.iter().map(String::as_str).collect();
    let body = p.body.clone().unwrap_or_default();
    if req.get("date").and_then(Value::as_bool) == Some(true) && !p.headers.contains_key("date") {
        let d = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(created));
        p.headers
            .insert("date", HeaderValue::from_str(&d).map_err(|e| e.to_string())?);
    }
    if p.standard == "cavage" {
        if let Some(d) = str_field(&req, "digest")? {
            let v = digest::digest_header(digest_alg(d)?, &body);
            p.headers
                .insert("digest", HeaderValue::from_str(&v).map_err(|e| e.to_string())?);
        }
        let algorithm_name = match str_field(&req, "algorithm_name")?.unwrap_or("legacy") {
            "hs2019" => AlgorithmName::Hs2019,
            "legacy" => AlgorithmName::Legacy,
            other => return Err(format!("unknown algorithm_name {other}")),
        };
        let uses = |n: &str| comps.iter().any(|c| c.eq_ignore_ascii_case(n));
        let params = cavage::SignParams {
            key_id: &key_id,
            alg,
            algorithm_name,
            headers: &comps,
            created: (uses("(created)") || u64_field(&req, "created")?.is_some()).then_some(created),
            expires,
        };
        let signed = cavage::sign(&message(&p), &key, &params).map_err(|e| e.to_string())?;
        let (name, value) = if req.get("authorization").and_then(Value::as_bool) == Some(true) {
            ("authorization", signed.authorization_header())
        } else {
            ("signature", signed.params.clone())
        };
        p.headers
            .insert(name, HeaderValue::from_str(&value).map_err(|e| e.to_string())?);
    } else {
        if let Some(d) = str_field(&req, "digest")? {
            let v = digest::content_digest(digest_alg(d)?, &body);
            p.headers
                .insert("content-digest", HeaderValue::from_str(&v).map_err(|e| e.to_string())?);
        }
        let label = str_field(&req, "label")?.unwrap_or("sig1").to_string();
        let nonce = str_field(&req, "nonce")?.map(String::from);
        let tag = str_field(&req, "tag")?.map(String::from);
        let mut params = rfc9421::SignParams::new(&label, &key_id, alg, created, &comps);
        params.expires = expires;
        params.nonce = nonce.as_deref();
        params.tag = tag.as_deref();
        params.include_alg = req.get("include_alg").and_then(Value::as_bool).unwrap_or(true);
        let signed = rfc9421::sign(&message(&p), &key, &params).map_err(|e| e.to_string())?;
        signed.apply(&mut p.headers).map_err(|e| e.to_string())?;
    }
    req.insert("headers".into(), headers_json(&p.headers));
    req.insert("created".into(), json!(created));
    Ok(Value::Object(req))
}

fn verify(req: &Map<String, Value>) -> Res<Value> {
    let p = parse(req)?;
    let key = load_key(req)?;
    let key_id = str_field(req, "key_id")?.ok_or("key_id is required")?.to_string();
    let now = u64_field(req, "now")?.unwrap_or_else(now);
    let max_age = u64_field(req, "max_age")?.unwrap_or(300);
    let skew = u64_field(req, "clock_skew")?.unwrap_or(5);
    let algs = strings(req, "algorithms")?;
    let algs: Vec<Algorithm> = if algs.is_empty() {
        Algorithm::ALL.to_vec()
    } else {
        algs.iter().map(|a| algorithm(a)).collect::<Res<_>>()?
    };
    let required = strings(req, "required")?;
    let required: Vec<&str> = required.iter().map(String::as_str).collect();
    let keys = (key_id.as_str(), &key);
    let body = p.body.as_deref();
    if p.standard == "cavage" {
        let mut policy = cavage::Policy::new(&algs, max_age);
        policy.clock_skew = skew;
        policy.required_headers = &required;
        let v = cavage::verify(&message(&p), body, &keys, &policy, now).map_err(|e| e.to_string())?;
        Ok(
            json!({"ok": true, "key_id": v.key_id, "alg": v.alg.name(), "created": v.created,
                  "headers": v.headers, "digest_checked": v.digest_checked}),
        )
    } else {
        let label = str_field(req, "label")?;
        let mut policy = rfc9421::Policy::new(&algs, max_age);
        policy.clock_skew = skew;
        policy.required_components = &required;
        policy.label = label;
        let v = rfc9421::verify(&message(&p), body, &keys, &policy, now).map_err(|e| e.to_string())?;
        Ok(
            json!({"ok": true, "label": v.label, "key_id": v.key_id, "alg": v.alg.name(),
                  "created": v.created, "components": v.components, "digest_checked": v.digest_checked}),
        )
    }
}
