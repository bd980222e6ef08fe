//! The path normal form: never panics, and what it returns is a fixed point (normalising a
//! normal path changes nothing), absolute, and free of what could be read as another path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_policy::path::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    if portcullis_policy::routes::valid_host(path) {
        let host = portcullis_policy::routes::normal_host(path);
        assert_eq!(portcullis_policy::routes::normal_host(&host), host, "host not a fixed point");
    }
    let Ok(normal) = normalize(path) else { return };
    assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
    assert!(!normal.contains("//"), "{path:?} -> {normal:?}");
    for segment in normal.split('/') {
        assert!(segment != "." && segment != "..", "{path:?} -> {normal:?}");
    }
    assert_eq!(
        normalize(&normal).as_deref(),
        Ok(&*normal),
        "not a fixed point: {path:?}"
    );
});
