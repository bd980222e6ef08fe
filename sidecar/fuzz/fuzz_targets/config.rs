//! The configuration loader: any `config.json` (first half of the input) and `secrets.json`
//! (second half) is refused with an error or compiled into an engine, never a panic.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use portcullis_config::{Loaded, SecretMaterial, SidecarConfig};
use portcullis_policy::{Engine, InMemoryLimiter};

fuzz_target!(|data: &[u8]| {
    let (config, secrets) = data.split_at(data.len() / 2);
    let (Ok(config), Ok(secrets)) = (
        serde_json::from_slice::<SidecarConfig>(config),
        serde_json::from_slice::<SecretMaterial>(secrets),
    ) else {
        return;
    };
    if config.check(&secrets).is_err() {
        return;
    }
    let _ = Engine::compile(&Loaded { config, secrets }, Arc::new(InMemoryLimiter::new()));
});
