//! `spec.rateLimit`: what reaches the compiled profile (`rateLimitPerMinute`,
//! `rateLimitPer`, `quota`), and what is refused (neither field, zeros, a quota without a
//! shared limits store).

use super::*;

fn limit(requests_per_minute: Option<u32>, per: Option<LimitPer>, quota: Option<(u32, QuotaPeriod)>) -> RateLimit {
    RateLimit {
        requests_per_minute,
        per,
        quota: quota.map(|(requests, period)| Quota { requests, period }),
        on_store_unavailable: None,
    }
}

/// The World with `finance` limited by `rate_limit` and served by route `api`.
fn limited(rate_limit: RateLimit, limits_store: bool) -> Output {
    let mut w = World::new();
    w.limits_store = limits_store;
    w.profiles
        .iter_mut()
        .find(|p| p.metadata.name.as_deref() == Some("finance"))
        .unwrap()
        .spec
        .rate_limit = Some(rate_limit);
    w.routes.push(route("api", &["finance"]));
    w.compile()
}

fn compiled_finance(out: &Output) -> &portcullis_config::Profile {
    assert_eq!(out.profiles["finance"], Verdict::Accepted);
    assert_eq!(out.routes["api"], Verdict::Accepted);
    out.loaded.config.check(&out.loaded.secrets).unwrap();
    out.loaded.config.profiles.iter().find(|p| p.name == "finance").unwrap()
}

/// `finance` as `config.json` holds it.
fn finance_json(out: &Output) -> serde_json::Value {
    let config: serde_json::Value = serde_json::from_slice(&out.loaded.config_json()).unwrap();
    let profiles = config["profiles"].as_array().unwrap();
    profiles.iter().find(|p| p["name"] == "finance").unwrap().clone()
}

#[test]
fn per_consumer_and_quota_reach_the_compiled_profile() {
    let out = limited(
        limit(Some(60), Some(LimitPer::Consumer), Some((5000, QuotaPeriod::Day))),
        true,
    );
    let p = compiled_finance(&out);
    assert_eq!(p.rate_limit_per_minute, Some(60));
    assert_eq!(p.rate_limit_per, portcullis_config::LimitPer::Consumer);
    assert_eq!(
        p.quota,
        Some(portcullis_config::Quota {
            requests: 5000,
            period: portcullis_config::QuotaPeriod::Day,
        })
    );
    let json = finance_json(&out);
    assert_eq!(json["rateLimitPer"], "Consumer");
    assert_eq!(json["quota"], serde_json::json!({"requests": 5000, "period": "Day"}));

    // Each period, and a quota alone.
    for (api, cfg) in [
        (QuotaPeriod::Hour, portcullis_config::QuotaPeriod::Hour),
        (QuotaPeriod::Month, portcullis_config::QuotaPeriod::Month),
    ] {
        let out = limited(limit(None, None, Some((1, api))), true);
        let p = compiled_finance(&out);
        assert_eq!(p.rate_limit_per_minute, None);
        assert_eq!(p.rate_limit_per, portcullis_config::LimitPer::Profile);
        assert_eq!(p.quota.map(|q| (q.requests, q.period)), Some((1, cfg)));
    }
}

#[test]
fn a_per_minute_limit_alone_compiles_as_before_with_or_without_a_store() {
    for store in [false, true] {
        let out = limited(limit(Some(5), None, None), store);
        let p = compiled_finance(&out);
        assert_eq!(p.rate_limit_per_minute, Some(5));
        assert_eq!(p.rate_limit_per, portcullis_config::LimitPer::Profile);
        assert_eq!(p.quota, None);
        let json = finance_json(&out);
        assert!(json.get("rateLimitPer").is_none(), "the default is left out: {json}");
        assert!(json.get("quota").is_none(), "{json}");
    }
    // Per consumer needs no store.
    let out = limited(limit(Some(5), Some(LimitPer::Consumer), None), false);
    assert_eq!(
        compiled_finance(&out).rate_limit_per,
        portcullis_config::LimitPer::Consumer
    );
}

#[test]
fn a_quota_without_a_limits_store_is_refused_naming_the_field_and_the_setting() {
    let out = limited(limit(Some(60), None, Some((5000, QuotaPeriod::Day))), false);
    let (reason, field, message) = rejected(&out, "finance");
    assert_eq!(reason, reason::INVALID_SPEC);
    assert_eq!(field, "spec.rateLimit.quota");
    assert_eq!(
        message,
        "spec.rateLimit.quota: SecurityProfile prod/finance sets a quota, which only a shared limits store \
         counts, and the operator has none configured: set the Helm value sidecar.limitsStore.url, or remove \
         spec.rateLimit.quota"
    );
    // Its routes are refused as for any invalid profile, and nothing of it is served.
    let (reason, _, message) = rejected(&out, "api");
    assert_eq!(reason, reason::PROFILE_INVALID);
    assert!(message.contains("spec.rateLimit.quota"), "{message}");
    assert!(out.loaded.config.routes.iter().all(|r| r.name != "api"));
    assert!(out.loaded.config.profiles.iter().all(|p| p.name != "finance"));
    // Reported before the Secrets: a missing Secret does not hide it.
    let mut w = World::new();
    w.secrets.retain(|s| s.metadata.name.as_deref() != Some("finance-user"));
    w.profiles[0].spec.rate_limit = Some(limit(None, None, Some((1, QuotaPeriod::Hour))));
    assert_eq!(rejected(&w.compile(), "finance").1, "spec.rateLimit.quota");
}

#[test]
fn a_rate_limit_must_set_requests_per_minute_or_a_quota() {
    for store in [false, true] {
        let out = limited(limit(None, Some(LimitPer::Consumer), None), store);
        let (reason, field, message) = rejected(&out, "finance");
        assert_eq!((reason, field.as_str()), (reason::INVALID_SPEC, "spec.rateLimit"));
        assert_eq!(
            message,
            "spec.rateLimit: sets neither requestsPerMinute nor quota: set one or both, or leave rateLimit out"
        );
    }
}

#[test]
fn zero_limits_are_refused() {
    let out = limited(limit(Some(0), None, None), true);
    let (reason, field, message) = rejected(&out, "finance");
    assert_eq!(
        (reason, field.as_str()),
        (reason::INVALID_SPEC, "spec.rateLimit.requestsPerMinute")
    );
    assert_eq!(message, "spec.rateLimit.requestsPerMinute: must be at least 1");
    let out = limited(limit(None, None, Some((0, QuotaPeriod::Day))), true);
    let (reason, field, _) = rejected(&out, "finance");
    assert_eq!(
        (reason, field.as_str()),
        (reason::INVALID_SPEC, "spec.rateLimit.quota.requests")
    );
}

#[test]
fn admission_gives_the_message_the_status_carries() {
    let mut p = basic("finance", "finance-user");
    p.spec.rate_limit = Some(limit(None, None, Some((10, QuotaPeriod::Month))));
    let status = rejected(&limited(p.spec.rate_limit.clone().unwrap(), false), "finance").2;
    assert_eq!(check_profile_settings(&p, false), Err(status));
    assert_eq!(check_profile_settings(&p, true), Ok(()));
    p.spec.rate_limit = Some(limit(None, None, None));
    assert!(
        check_profile_settings(&p, true)
            .unwrap_err()
            .starts_with("spec.rateLimit: ")
    );
    p.spec.rate_limit = None;
    assert_eq!(check_profile_settings(&p, false), Ok(()));
}
