//! HttpSignature profiles in the engine: RFC 9421 and draft-cavage with HMAC keys, the
//! profile's policy, replay protection, and the body-digest seam.

use portcullis_signatures::digest::{DigestAlgorithm, content_digest, digest_header};
use portcullis_signatures::{Algorithm, Key, Message, cavage, rfc9421};

use super::*;

const SECRET: &str = "a shared secret for gw-1";
const NOW: u64 = T0 / 1000;

fn config(standard: &str, required: &[&str]) -> Value {
    json!({
        "profiles": [{"name": "signed", "auth": {"type": "HttpSignature", "standard": standard,
            "algorithms": ["hmac-sha256"], "requiredComponents": required, "maxAgeSeconds": 300}}],
        "routes": [route("api", "/", &["signed"])],
    })
}

fn secrets() -> Value {
    json!({"profiles": {"signed": {"signatureKeys": {"gw-1": SECRET}}}})
}

fn signing_engine(standard: &str, required: &[&str], limiter: Arc<InMemoryLimiter>) -> Engine {
    Engine::compile(&loaded(config(standard, required), secrets()), limiter).unwrap()
}

fn message(r: &Req) -> Message<'_> {
    Message {
        method: r.method,
        scheme: "http",
        authority: r.host.unwrap(),
        path: &r.path,
        query: r.query.as_deref(),
        headers: &r.headers,
    }
}

/// `r` signed (RFC 9421) with `secret` at `created`, covering `components`.
fn sign_9421(mut r: Req, secret: &str, created: u64, components: &[&str]) -> Req {
    let key = Key::from_secret(secret.as_bytes()).unwrap();
    let params = rfc9421::SignParams::new("sig1", "gw-1", Algorithm::HmacSha256, created, components);
    let signed = rfc9421::sign(&message(&r), &key, &params).unwrap();
    signed.apply(&mut r.headers).unwrap();
    r
}

/// `r` signed (draft-cavage) with `secret` at `created`, covering `headers`.
fn sign_cavage(r: Req, secret: &str, created: u64, headers: &[&str]) -> Req {
    let key = Key::from_secret(secret.as_bytes()).unwrap();
    let params = cavage::SignParams {
        key_id: "gw-1",
        alg: Algorithm::HmacSha256,
        algorithm_name: cavage::AlgorithmName::Hs2019,
        headers,
        created: Some(created),
        expires: None,
    };
    let signed = cavage::sign(&message(&r), &key, &params).unwrap();
    r.header("signature", signed.signature_header())
}

/// (status, identity or denial reason).
fn outcome(e: &Engine, r: &Req, now_secs: u64) -> (u16, String) {
    match e.decide(&r.view(), now_secs * 1000) {
        Outcome::Allow(a) => (200, a.identity.into_owned()),
        Outcome::Deny(d) => {
            let status = match d.kind {
                DenialKind::Unauthorized { .. } => 401,
                DenialKind::Forbidden | DenialKind::InsufficientScope { .. } => 403,
                DenialKind::RateLimited { .. } | DenialKind::Throttled { .. } => 429,
                DenialKind::StoreUnavailable { .. } | DenialKind::TooManyConsumers { .. } => 503,
                DenialKind::MethodNotAllowed { .. } => 405,
            };
            (status, d.reason.to_owned())
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A copy of `r` from `peer`.
fn at(r: &Req, peer: &str) -> Req {
    Req {
        method: r.method,
        host: r.host,
        path: r.path.clone(),
        query: r.query.clone(),
        headers: r.headers.clone(),
        peer: peer.parse().unwrap(),
        tls: r.tls,
        listener: r.listener,
        cert: r.cert.clone(),
    }
}

const COMPONENTS: &[&str] = &["@method", "@authority", "@path", "@query"];

#[test]
fn rfc9421_hmac_admits_the_key_id() {
    let e = signing_engine("RFC9421", &["@method", "@path"], Arc::default());
    let r = sign_9421(get("/orders?id=7"), SECRET, NOW - 10, COMPONENTS);
    assert_eq!(outcome(&e, &r, NOW), (200, "gw-1".into()));
    assert_eq!(
        verdict(&e, &sign_9421(get("/b"), SECRET, NOW, COMPONENTS), T0).2,
        "signed"
    );
}

#[test]
fn cavage_hmac_admits_the_key_id() {
    let e = signing_engine("Cavage", &["(request-target)", "host"], Arc::default());
    let r = sign_cavage(
        get("/orders"),
        SECRET,
        NOW - 10,
        &["(request-target)", "host", "(created)"],
    );
    assert_eq!(outcome(&e, &r, NOW), (200, "gw-1".into()));
    // Authorization: Signature works too.
    let mut r = sign_cavage(get("/x"), SECRET, NOW, &["(request-target)", "host", "(created)"]);
    let v = r.headers.remove("signature").unwrap();
    let r = r.header("authorization", &format!("Signature {}", v.to_str().unwrap()));
    assert_eq!(outcome(&e, &r, NOW), (200, "gw-1".into()));
}

#[test]
fn wrong_key_stale_future_and_unsigned_are_401_with_a_challenge() {
    let e = signing_engine("RFC9421", &[], Arc::default());
    let wrong = sign_9421(get("/a"), "another secret", NOW, COMPONENTS);
    assert_eq!(outcome(&e, &wrong, NOW), (401, "signature does not verify".into()));
    let stale = sign_9421(get("/a"), SECRET, NOW - 301, COMPONENTS);
    assert_eq!(
        outcome(&e, &stale, NOW),
        (401, "signature is stale (older than maxAgeSeconds)".into())
    );
    let future = sign_9421(get("/a"), SECRET, NOW + 60, COMPONENTS);
    assert_eq!(
        outcome(&e, &future, NOW),
        (401, "signature created in the future".into())
    );
    assert_eq!(outcome(&e, &get("/a"), NOW), (401, "no HTTP message signature".into()));
    // A changed component: signed for /a, sent to /b.
    let mut moved = sign_9421(get("/a"), SECRET, NOW, COMPONENTS);
    moved.path = "/b".into();
    assert_eq!(outcome(&e, &moved, NOW), (401, "signature does not verify".into()));
    match e.decide(&get("/a").view(), T0) {
        Outcome::Deny(Denial {
            kind: DenialKind::Unauthorized { challenges },
            ..
        }) => assert_eq!(challenges, ["Signature realm=\"api\"".to_owned()]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn cavage_wrong_key_stale_date_and_changed_method_are_401() {
    let e = signing_engine("Cavage", &[], Arc::default());
    let signed = ["(request-target)", "host", "(created)"];
    let wrong = sign_cavage(get("/a"), "another secret", NOW, &signed);
    assert_eq!(outcome(&e, &wrong, NOW), (401, "signature does not verify".into()));
    let stale = sign_cavage(get("/a"), SECRET, NOW - 301, &signed);
    assert_eq!(
        outcome(&e, &stale, NOW),
        (401, "signature is stale (older than maxAgeSeconds)".into())
    );
    // Without (created), the signed Date is the creation time.
    let dated = get("/a").header("date", &portcullis_signatures::http_date(NOW - 400));
    let stale = sign_cavage(dated, SECRET, NOW - 400, &["(request-target)", "date"]);
    assert_eq!(
        outcome(&e, &stale, NOW),
        (401, "signature is stale (older than maxAgeSeconds)".into())
    );
    let mut posted = sign_cavage(get("/a"), SECRET, NOW, &signed);
    posted.method = "POST";
    assert_eq!(outcome(&e, &posted, NOW), (401, "signature does not verify".into()));
}

#[test]
fn missing_required_component_is_refused() {
    let e = signing_engine("RFC9421", &["@method", "@path", "date"], Arc::default());
    let r = sign_9421(get("/a"), SECRET, NOW, COMPONENTS);
    assert_eq!(
        outcome(&e, &r, NOW),
        (401, "signature does not cover a required component".into())
    );
    let dated = get("/a").header("date", &portcullis_signatures::http_date(NOW));
    let r = sign_9421(dated, SECRET, NOW, &["@method", "@path", "date"]);
    assert_eq!(outcome(&e, &r, NOW).0, 200);

    let e = signing_engine("Cavage", &["digest"], Arc::default());
    let r = sign_cavage(get("/a"), SECRET, NOW, &["(request-target)", "(created)"]);
    assert_eq!(
        outcome(&e, &r, NOW),
        (401, "signature does not cover a required component".into())
    );
}

#[test]
fn replays_are_refused_inside_the_window_even_across_reloads() {
    let limiter = Arc::new(InMemoryLimiter::new());
    let e = signing_engine("RFC9421", &[], limiter.clone());
    let r = sign_9421(get("/a"), SECRET, NOW, COMPONENTS);
    assert_eq!(outcome(&e, &r, NOW).0, 200);
    assert_eq!(outcome(&e, &r, NOW + 1), (401, "signature replayed".into()));
    let again = signing_engine("RFC9421", &[], limiter);
    assert_eq!(outcome(&again, &r, NOW + 2), (401, "signature replayed".into()));
    // Another signature of the same request (another created) is a new one.
    let r2 = sign_9421(get("/a"), SECRET, NOW + 1, COMPONENTS);
    assert_eq!(outcome(&again, &r2, NOW + 2).0, 200);

    let e = signing_engine("Cavage", &[], Arc::default());
    let r = sign_cavage(get("/a"), SECRET, NOW, &["(request-target)", "host", "(created)"]);
    assert_eq!(outcome(&e, &r, NOW).0, 200);
    assert_eq!(outcome(&e, &r, NOW + 299), (401, "signature replayed".into()));
}

#[test]
fn a_full_replay_cache_fails_closed() {
    // 16 slots: one per shard.
    let e = signing_engine("RFC9421", &[], Arc::new(InMemoryLimiter::with_replay_capacity(16)));
    let mut admitted = Vec::new();
    let mut full = 0;
    for i in 0..200 {
        let r = sign_9421(get(&format!("/item/{i}")), SECRET, NOW, COMPONENTS);
        match outcome(&e, &r, NOW) {
            (200, _) => admitted.push(r),
            (401, reason) if reason.starts_with("replay cache full") => full += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(admitted.len(), 16);
    assert_eq!(full, 200 - 16);
    // Nothing live was evicted: every admitted signature is still a replay.
    for r in &admitted {
        assert_eq!(outcome(&e, r, NOW + 1), (401, "signature replayed".into()));
    }
    // Once the window is over, new signatures get in again.
    let fresh = sign_9421(get("/later"), SECRET, NOW + 400, COMPONENTS);
    assert_eq!(outcome(&e, &fresh, NOW + 400).0, 200);
}

/// One key holder cannot lock the whole profile out by filling its replay cache: each key
/// holds at most its share, and the other keys keep theirs.
#[test]
fn one_key_cannot_fill_the_replay_cache_for_the_others() {
    let secrets = json!({"profiles": {"signed": {"signatureKeys": {"gw-1": SECRET, "gw-2": "second-secret"}}}});
    let limiter = Arc::new(InMemoryLimiter::with_replay_capacity(16 * 64));
    let e = Engine::compile(&loaded(config("RFC9421", &[]), secrets), limiter).unwrap();
    let sign = |r: Req, key_id: &str, secret: &str| {
        let mut r = r;
        let key = Key::from_secret(secret.as_bytes()).unwrap();
        let params = rfc9421::SignParams::new("sig1", key_id, Algorithm::HmacSha256, NOW, COMPONENTS);
        rfc9421::sign(&message(&r), &key, &params)
            .unwrap()
            .apply(&mut r.headers)
            .unwrap();
        r
    };
    let mut admitted = 0;
    for i in 0..1500 {
        match outcome(&e, &sign(get(&format!("/flood/{i}")), "gw-1", SECRET), NOW) {
            (200, _) => admitted += 1,
            (401, reason) if reason.starts_with("replay cache full") => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(admitted <= 16 * 32, "one key of two held {admitted} of 1024 slots");
    for i in 0..100 {
        let r = sign(get(&format!("/honest/{i}")), "gw-2", "second-secret");
        assert_eq!(outcome(&e, &r, NOW), (200, "gw-2".into()), "honest call {i}");
    }
}

#[test]
fn refused_calls_do_not_use_their_signature_up() {
    let mut config = config("RFC9421", &[]);
    config["profiles"][0]["trustedIpRanges"] = json!([{"from": "10.0.0.0", "to": "10.0.0.255"}]);
    config["profiles"][0]["rateLimitPerMinute"] = json!(1);
    let e = Engine::compile(&loaded(config, secrets()), Arc::default()).unwrap();
    let first = sign_9421(get("/1"), SECRET, NOW, COMPONENTS).from("10.0.0.1");
    let second = sign_9421(get("/2"), SECRET, NOW, COMPONENTS).from("10.0.0.1");
    // Outside the ranges: 403, the signature is not recorded.
    assert_eq!(outcome(&e, &at(&first, "192.0.2.1"), NOW).0, 403);
    assert_eq!(outcome(&e, &first, NOW).0, 200);
    // Over the limit: 429, not recorded either: the same request passes a minute later.
    assert_eq!(outcome(&e, &second, NOW + 1).0, 429);
    assert_eq!(outcome(&e, &second, NOW + 61).0, 200);
    // A replay gives its limit hit back: the next fresh signature still gets in.
    assert_eq!(outcome(&e, &second, NOW + 122), (401, "signature replayed".into()));
    let third = sign_9421(get("/3"), SECRET, NOW + 122, COMPONENTS).from("10.0.0.1");
    assert_eq!(outcome(&e, &third, NOW + 122).0, 200);
}

#[test]
fn a_covered_digest_asks_the_proxy_to_check_the_body() {
    let body = br#"{"hello": "world"}"#;
    let e = signing_engine("RFC9421", &[], Arc::default());
    let r = get("/a").header("content-digest", &content_digest(DigestAlgorithm::Sha256, body));
    let covered = sign_9421(r, SECRET, NOW, &["@method", "@path", "content-digest"]);
    match e.decide(&covered.view(), T0) {
        Outcome::Allow(a) => assert_eq!(a.body_digest, Some(BodyDigest::ContentDigest)),
        other => panic!("{other:?}"),
    }
    let plain = sign_9421(get("/b"), SECRET, NOW, COMPONENTS);
    match e.decide(&plain.view(), T0) {
        Outcome::Allow(a) => assert_eq!(a.body_digest, None),
        other => panic!("{other:?}"),
    }
    assert!(
        BodyDigest::ContentDigest
            .verify(&content_digest(DigestAlgorithm::Sha256, body), body)
            .is_ok()
    );
    assert!(
        BodyDigest::ContentDigest
            .verify(&content_digest(DigestAlgorithm::Sha256, body), b"{}")
            .is_err()
    );

    let e = signing_engine("Cavage", &[], Arc::default());
    let r = get("/a").header("digest", &digest_header(DigestAlgorithm::Sha256, body));
    let covered = sign_cavage(r, SECRET, NOW, &["(request-target)", "(created)", "digest"]);
    match e.decide(&covered.view(), T0) {
        Outcome::Allow(a) => assert_eq!(a.body_digest, Some(BodyDigest::Digest)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_keys_are_compile_errors_naming_the_key_id_only() {
    let pem = "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n";
    let l = loaded(
        config("RFC9421", &[]),
        json!({"profiles": {"signed": {"signatureKeys": {"gw-1": SECRET, "broken": pem}}}}),
    );
    let err = Engine::compile(&l, Arc::new(InMemoryLimiter::new()))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("profile \"signed\": signature key \"broken\": "),
        "{err}"
    );
    assert!(!err.contains("bm90IGEga2V5") && !err.contains(SECRET), "{err}");
    let l = loaded(config("RFC9421", &[]), json!({}));
    assert!(Engine::compile(&l, Arc::new(InMemoryLimiter::new())).is_err());
}

/// A limiter that decides nothing at once, as a shared store far from its counters: every
/// admission waits for its limits, taken afterwards with [`Engine::settle`].
struct Deferring(InMemoryLimiter);

impl Limiter for Deferring {
    type Counter = crate::limit::SharedWindow;

    fn counter(&self, id: CounterId<'_>) -> Self::Counter {
        self.0.counter(id)
    }

    fn consumer(&self, id: CounterId<'_>, now: Now) -> Option<Self::Counter> {
        self.0.consumer(id, now)
    }

    fn kept_consumer(&self, id: CounterId<'_>) -> Option<Self::Counter> {
        self.0.kept_consumer(id)
    }

    fn acquire(&self, hits: &[(&Self::Counter, u32)], now: Now) -> Result<Grant, Refusal> {
        self.0.acquire(hits, now)
    }

    fn try_acquire(&self, _: &[(&Self::Counter, u32)], _: Now) -> Option<Result<Grant, Refusal>> {
        None
    }

    fn refund(&self, counters: &[&Self::Counter], grant: &Grant) {
        self.0.refund(counters, grant)
    }

    fn replay_cache(&self, profile: &str) -> Arc<portcullis_signatures::ReplayCache> {
        self.0.replay_cache(profile)
    }
}

/// (status, identity or denial reason), the limits taken after the decision.
fn settled(e: &Engine<Deferring>, limiter: &Deferring, r: &Req, now_secs: u64) -> (u16, String) {
    let now = now_secs * 1000;
    match e.decide(&r.view(), now) {
        Outcome::Allow(mut a) => {
            assert!(a.limits_pending(), "nothing may be taken before the store answers");
            assert!(a.rate.is_none());
            let taken = limiter.acquire(&e.pending_hits(&a, now.into()).unwrap().list(), now.into());
            match e.settle(&mut a, Some(taken), None, now.into()) {
                Ok(()) => {
                    assert!(!a.limits_pending() && a.rate.is_some());
                    (200, a.identity.into_owned())
                }
                Err(d) => match d.kind {
                    DenialKind::RateLimited { .. } => (429, d.reason.to_owned()),
                    DenialKind::Unauthorized { .. } => (401, d.reason.to_owned()),
                    other => panic!("unexpected {other:?}"),
                },
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Limits taken on a shared store after the decision keep the order of limits taken at once:
/// a call refused for its rate keeps its signature usable, a replay gives its hit back.
#[test]
fn limits_settled_after_the_decision_record_the_signature_only_when_admitted() {
    let mut config = config("RFC9421", &[]);
    config["profiles"][0]["rateLimitPerMinute"] = json!(1);
    let limiter = Arc::new(Deferring(InMemoryLimiter::new()));
    let e = Engine::compile(&loaded(config, secrets()), Arc::clone(&limiter)).unwrap();
    let first = sign_9421(get("/1"), SECRET, NOW, COMPONENTS);
    let second = sign_9421(get("/2"), SECRET, NOW, COMPONENTS);
    assert_eq!(settled(&e, &limiter, &first, NOW), (200, "gw-1".into()));
    assert_eq!(
        settled(&e, &limiter, &second, NOW + 1),
        (429, "profile rate limit exceeded".into())
    );
    assert_eq!(settled(&e, &limiter, &second, NOW + 61), (200, "gw-1".into()));
    assert_eq!(
        settled(&e, &limiter, &second, NOW + 122),
        (401, "signature replayed".into())
    );
    let third = sign_9421(get("/3"), SECRET, NOW + 122, COMPONENTS);
    assert_eq!(settled(&e, &limiter, &third, NOW + 122), (200, "gw-1".into()));
}

/// A limiter whose counts are decided at once but whose signatures live on a shared store:
/// the engine leaves each signature to the caller ([`Engine::pending_replay`]).
struct SharingReplays(InMemoryLimiter);

impl Limiter for SharingReplays {
    type Counter = crate::limit::SharedWindow;

    fn counter(&self, id: CounterId<'_>) -> Self::Counter {
        self.0.counter(id)
    }

    fn consumer(&self, id: CounterId<'_>, now: Now) -> Option<Self::Counter> {
        self.0.consumer(id, now)
    }

    fn kept_consumer(&self, id: CounterId<'_>) -> Option<Self::Counter> {
        self.0.kept_consumer(id)
    }

    fn acquire(&self, hits: &[(&Self::Counter, u32)], now: Now) -> Result<Grant, Refusal> {
        self.0.acquire(hits, now)
    }

    fn refund(&self, counters: &[&Self::Counter], grant: &Grant) {
        self.0.refund(counters, grant)
    }

    fn replay_cache(&self, profile: &str) -> Arc<portcullis_signatures::ReplayCache> {
        self.0.replay_cache(profile)
    }

    fn shares_replays(&self) -> bool {
        true
    }
}

/// (status, identity or denial reason) of `r` when the store says `store` of its signature;
/// the entry the engine asked about is checked.
fn with_store(e: &Engine<SharingReplays>, r: &Req, now_secs: u64, store: SharedReplay) -> (u16, String) {
    let now = now_secs * 1000;
    match e.decide(&r.view(), now) {
        Outcome::Allow(mut a) => {
            assert!(a.limits_pending(), "the signature waits for the store");
            assert!(
                e.pending_hits(&a, now.into()).is_none(),
                "the limits were taken at once"
            );
            let entry = e.pending_replay(&a, now.into()).expect("a signature to remember");
            assert_eq!(
                (entry.profile, entry.key_id),
                ("demo/signed", "gw-1"),
                "remembered per profile, namespace included"
            );
            assert!(
                (300..=300 + 2 * 5 + 2).contains(&entry.ttl_secs) && entry.window_secs == 312,
                "{entry:?}"
            );
            match e.settle(&mut a, None, Some(store), now.into()) {
                Ok(()) => (200, a.identity.into_owned()),
                Err(d) => match d.kind {
                    DenialKind::Unauthorized { .. } => (401, d.reason.to_owned()),
                    DenialKind::StoreUnavailable { retry_after_secs: 1 } => (503, d.reason.to_owned()),
                    other => panic!("unexpected {other:?}"),
                },
            }
        }
        Outcome::Deny(d) => (429, d.reason.to_owned()),
        other => panic!("unexpected {other:?}"),
    }
}

/// With the replay cache on a shared store, the store's word decides: a signature seen there
/// (through any replica) is a replay and gives its hit back; an unavailable store refuses
/// signed calls (503, fail closed) unless the profile says `Local`, which remembers them in
/// this process.
#[test]
fn a_shared_replay_cache_decides_replays_and_fails_closed_without_its_store() {
    let mut config = config("RFC9421", &[]);
    config["profiles"][0]["rateLimitPerMinute"] = json!(2);
    let limiter = Arc::new(SharingReplays(InMemoryLimiter::new()));
    let e = Engine::compile(&loaded(config.clone(), secrets()), Arc::clone(&limiter)).unwrap();
    let first = sign_9421(get("/1"), SECRET, NOW, COMPONENTS);
    assert_eq!(with_store(&e, &first, NOW, SharedReplay::Fresh), (200, "gw-1".into()));
    // Seen through another replica: refused, and its hit given back (the limit is 2).
    assert_eq!(
        with_store(&e, &first, NOW, SharedReplay::Seen),
        (401, "signature replayed".into())
    );
    assert_eq!(
        with_store(&e, &first, NOW, SharedReplay::Full),
        (401, "replay cache full (refused, fails closed)".into())
    );
    assert_eq!(
        with_store(&e, &first, NOW, SharedReplay::Unavailable),
        (503, "replay store unavailable (signed calls refused)".into())
    );
    let second = sign_9421(get("/2"), SECRET, NOW, COMPONENTS);
    assert_eq!(with_store(&e, &second, NOW, SharedReplay::Fresh), (200, "gw-1".into()));
    assert_eq!(
        with_store(&e, &second, NOW, SharedReplay::Fresh),
        (429, "profile rate limit exceeded".into()),
        "two admitted: the refused ones took nothing"
    );

    config["profiles"][0]["auth"]["onStoreUnavailable"] = json!("Local");
    config["profiles"][0]["rateLimitPerMinute"] = json!(10);
    let limiter = Arc::new(SharingReplays(InMemoryLimiter::new()));
    let e = Engine::compile(&loaded(config, secrets()), limiter).unwrap();
    assert_eq!(
        with_store(&e, &first, NOW, SharedReplay::Unavailable),
        (200, "gw-1".into())
    );
    assert_eq!(
        with_store(&e, &first, NOW, SharedReplay::Unavailable),
        (401, "signature replayed".into()),
        "remembered in this process meanwhile"
    );
    // The store back, not knowing it: still a replay here. And one the store admitted is
    // remembered here too, for the next outage.
    assert_eq!(
        with_store(&e, &first, NOW, SharedReplay::Fresh),
        (401, "signature replayed".into()),
        "admitted here during the outage"
    );
    assert_eq!(with_store(&e, &second, NOW, SharedReplay::Fresh), (200, "gw-1".into()));
    assert_eq!(
        with_store(&e, &second, NOW, SharedReplay::Unavailable),
        (401, "signature replayed".into()),
        "admitted here before the outage"
    );
}

/// What a decision's limits do while the shared store is unavailable comes from the admitting
/// profile: its share of each limit (divided by the sidecars the operator counted, rounded
/// up), or admit, or refuse.
#[test]
fn limits_carry_the_profiles_fallback_and_shares() {
    let mut config = config("RFC9421", &[]);
    config["orgAllowance"] = json!(1000);
    config["replicas"] = json!(3);
    config["profiles"][0]["rateLimitPerMinute"] = json!(10);
    config["profiles"][0]["replicas"] = json!(4);
    let fallback = |config: &Value| {
        let limiter = Arc::new(Deferring(InMemoryLimiter::new()));
        let e = Engine::compile(&loaded(config.clone(), secrets()), limiter).unwrap();
        let r = sign_9421(get("/1"), SECRET, NOW, COMPONENTS);
        match e.decide(&r.view(), NOW * 1000) {
            Outcome::Allow(a) => e.pending_hits(&a, (NOW * 1000).into()).unwrap().fallback(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(fallback(&config), Fallback::LocalShare([334, 3, 0]));
    config["profiles"][0]["onStoreUnavailable"] = json!("Allow");
    assert_eq!(fallback(&config), Fallback::Allow);
    config["profiles"][0]["onStoreUnavailable"] = json!("Deny");
    assert_eq!(fallback(&config), Fallback::Deny);
}
