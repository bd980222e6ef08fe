//! Path confusion (issue 14, item 1): routes are matched on the path's normal form
//! ([`crate::path`]), and the admitted call carries that path for the proxy to forward.

use super::*;

/// The Builtin provider's token signing key in these tests (EC P-256).
const SIGNING_PEM: &str = include_str!("../../../signatures/tests/keys/test-key-ecc-p256.key");

/// `/` anonymous, `/admin` behind Basic.
fn public_and_admin(admin_case_insensitive: bool) -> Engine {
    let mut admin = route("admin", "/admin", &["office"]);
    if admin_case_insensitive {
        admin["caseInsensitive"] = json!(true);
    }
    engine(
        json!({
            "profiles": [{"name": "office", "auth": {"type": "Basic"}}],
            "routes": [route("public", "/", &[]), admin],
        }),
        json!({"profiles": {"office": {"basic": {"username": "alice", "password": "pw"}}}}),
    )
}

/// The path an admitted call is forwarded with, and whether it is the path as sent (nothing
/// allocated).
fn forwarded(e: &Engine, r: &Req) -> Option<(String, bool)> {
    let view = r.view();
    match e.decide(&view, T0) {
        Outcome::Allow(a) => Some((a.path.resolve(view.path).to_owned(), a.path == NormalPath::AsSent)),
        _ => None,
    }
}

fn reason(e: &Engine, r: &Req) -> &'static str {
    match e.decide(&r.view(), T0) {
        Outcome::BadRequest { reason } => reason,
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn the_five_attacks_are_refused_or_reach_the_admin_route() {
    let e = public_and_admin(false);
    assert_eq!(verdict(&e, &get("/x"), T0).1, "public");
    assert_eq!(verdict(&e, &get("/admin/x"), T0).0, 401);
    for path in ["/%61dmin/x", "//admin/x", "/admin;x=1/y", "/admin%2fx", "/Admin/x"] {
        let (status, route, _, _) = verdict(&e, &get(path), T0);
        assert!(
            status == 400 || (status, route.as_str()) == (401, "admin"),
            "{path}: {status} on route {route}"
        );
        // Never forwarded anonymously, whatever the credentials.
        assert_ne!(verdict(&e, &get(path), T0).2, "anonymous", "{path}");
    }
    // Which of the two, exactly.
    assert_eq!(verdict(&e, &get("/%61dmin/x"), T0).0, 401);
    assert_eq!(verdict(&e, &get("//admin/x"), T0).0, 401);
    assert_eq!(reason(&e, &get("/admin;x=1/y")), "path parameter (; or %3B) in path");
    assert_eq!(reason(&e, &get("/admin%2fx")), "encoded slash (%2F) in path");
    assert_eq!(
        reason(&e, &get("/Admin/x")),
        "path differs only in letter case from a more specific route's prefix"
    );
    // More of the same.
    for path in [
        "/%41dmin/x",
        "/ADMIN",
        "/admin%3Bx/y",
        "/admin%5Cx",
        "/admin\\x",
        "/admin%00",
        "/%2e%2e/admin",
        "/x/%2E%2E/admin",
        "/x/../admin",
        "/./admin",
        "/..",
        "/%zz",
        "/%4",
    ] {
        assert_eq!(status(&e, &get(path)), 400, "{path}");
    }
    assert_eq!(verdict(&e, &get("///admin//x"), T0).1, "admin");
    assert_eq!(verdict(&e, &get("/%61%64%6d%69%6e"), T0).1, "admin");
}

#[test]
fn the_admission_carries_the_normal_path() {
    let e = public_and_admin(false);
    let alice = |path: &str| get(path).basic("alice", "pw");
    assert_eq!(forwarded(&e, &alice("/admin/x")), Some(("/admin/x".into(), true)));
    assert_eq!(forwarded(&e, &alice("/%61dmin/x")), Some(("/admin/x".into(), false)));
    assert_eq!(forwarded(&e, &alice("//admin//x/")), Some(("/admin/x/".into(), false)));
    assert_eq!(forwarded(&e, &get("/caf%c3%a9")), Some(("/caf%C3%A9".into(), false)));
    assert_eq!(forwarded(&e, &get("/caf%C3%A9")), Some(("/caf%C3%A9".into(), true)));
    assert_eq!(forwarded(&e, &get("/public?q=%2F")), Some(("/public".into(), true)));
    // The query is not the path's business: it is forwarded as sent.
    assert_eq!(verdict(&e, &get("/x?a=..;%2f"), T0).0, 200);
}

#[test]
fn case_insensitive_routes_match_any_case() {
    let e = public_and_admin(true);
    for path in ["/Admin/x", "/ADMIN", "/aDmIn/y", "/%41dmin/x", "/admin/x"] {
        let (status, route, _, _) = verdict(&e, &get(path), T0);
        assert_eq!((status, route.as_str()), (401, "admin"), "{path}");
    }
    // The app receives the path in its normal form, its case kept.
    assert_eq!(
        forwarded(&e, &get("/Admin/x").basic("alice", "pw")),
        Some(("/Admin/x".into(), true))
    );
    assert_eq!(verdict(&e, &get("/Adminx"), T0).1, "public");
}

#[test]
fn case_variants_only_matter_against_more_specific_routes() {
    // No broader route: a case variant is simply not found.
    let e = engine(json!({"routes": [route("admin", "/admin", &[])]}), json!({}));
    assert_eq!(status(&e, &get("/Admin/x")), 404);
    // A broader route wins over a case variant of itself.
    let e = engine(
        json!({"routes": [route("api", "/api", &[]), route("v1", "/api/v1", &[])]}),
        json!({}),
    );
    assert_eq!(verdict(&e, &get("/api/V1"), T0).0, 400);
    assert_eq!(verdict(&e, &get("/api/v2"), T0).1, "api");
    assert_eq!(verdict(&e, &get("/API/v2"), T0).0, 404);
    // A case variant of a route for another method does not count.
    let mut posts = route("posts", "/admin", &[]);
    posts["methods"] = json!(["POST"]);
    let e = engine(json!({"routes": [route("public", "/", &[]), posts]}), json!({}));
    assert_eq!(verdict(&e, &get("/Admin"), T0).1, "public");
}

#[test]
fn route_prefixes_are_matched_in_normal_form() {
    let e = engine(
        json!({"routes": [route("public", "/", &[]), route("home", "/%7Euser//files%c3%a9", &[])]}),
        json!({}),
    );
    assert_eq!(verdict(&e, &get("/~user/files%C3%A9/x"), T0).1, "home");
    assert_eq!(verdict(&e, &get("/%7euser/files%c3%a9"), T0).1, "home");
    assert_eq!(e.routes()[0].path_prefix(), "/~user/files%C3%A9");
}

#[test]
fn redirects_carry_the_normal_path() {
    let mut r = route("secure", "/", &[]);
    r["sslOnly"] = json!(true);
    let e = engine(json!({"routes": [r]}), json!({}));
    match e.decide(&get("//%61/b?x=1").view(), T0) {
        Outcome::Redirect { location, .. } => assert_eq!(location, "https://api.example.com/a/b?x=1"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_token_endpoint_is_found_on_the_normal_path_only() {
    let e = engine(
        json!({
            "profiles": [{"name": "idp", "auth": {"type": "OAuth2", "provider": "Builtin",
                          "builtinTokenTtlSeconds": 600}}],
            "routes": [route("api", "/api", &["idp"])],
        }),
        json!({"profiles": {"idp": {"oauth2SigningKeys": [{"name": "key-1", "pem": SIGNING_PEM}], "oauth2Clients": {"app-1": "s3cret"}}}}),
    );
    let post = |path: &str| {
        let mut r = get(path);
        r.method = "POST";
        r
    };
    assert!(e.provider_endpoint(&post("/api/oauth2/token").view()).is_some());
    assert!(e.provider_endpoint(&post("//api/%6Fauth2/token").view()).is_some());
    assert!(e.provider_endpoint(&post("/api/oauth2;x/token").view()).is_none());
    assert!(e.provider_endpoint(&post("/API/oauth2/token").view()).is_none());
    assert_eq!(status(&e, &post("/API/oauth2/token")), 404);
}
