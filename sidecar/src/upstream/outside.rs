//! Name resolution for origins that never lands on this pod: an origin whose name resolves
//! to a loopback or unspecified address (`127.1`, `2130706433`, `0`, a name in `/etc/hosts`)
//! would be the pod's own app, or the sidecar's own listeners, reached around the routes that
//! guard them. Such addresses are dropped from every answer; a name left with none fails to
//! connect (502), per call, without touching any other route.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};

/// `--allow-loopback-origins`: origins on this host are allowed (tests and single-host
/// setups, where every peer is on 127.0.0.1); never in a pod.
static ALLOW_LOOPBACK: AtomicBool = AtomicBool::new(false);

/// Sets `--allow-loopback-origins`.
pub fn set_allow_loopback(allow: bool) {
    ALLOW_LOOPBACK.store(allow, Ordering::Relaxed);
}

/// Whether `ip` is this pod: loopback or unspecified, IPv4-mapped forms included (never,
/// with `--allow-loopback-origins`).
pub fn is_this_pod(ip: IpAddr) -> bool {
    if ALLOW_LOOPBACK.load(Ordering::Relaxed) {
        return false;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() || ip.is_unspecified()
}

/// The system resolver, without the addresses of this pod ([`is_this_pod`]).
#[derive(Clone)]
pub struct OutsideThePod(GaiResolver);

impl OutsideThePod {
    pub fn new() -> Self {
        Self(GaiResolver::new())
    }
}

impl Default for OutsideThePod {
    fn default() -> Self {
        Self::new()
    }
}

impl tower_service::Service<Name> for OutsideThePod {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let answer = self.0.call(name.clone());
        Box::pin(async move {
            let outside: Vec<SocketAddr> = answer.await?.filter(|a| !is_this_pod(a.ip())).collect();
            if outside.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("origin {name} resolves only to this pod (loopback or unspecified)"),
                ));
            }
            Ok(outside.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service;

    #[test]
    fn loopback_and_unspecified_in_every_spelling_are_this_pod() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "0.0.0.0",
            "::1",
            "::",
            "::ffff:127.0.0.2",
            "::ffff:0.0.0.0",
        ] {
            assert!(is_this_pod(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "192.0.2.2", "2001:db8::1", "::ffff:10.0.0.1"] {
            assert!(!is_this_pod(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn names_that_resolve_to_the_pod_are_refused() {
        for name in ["localhost", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0"] {
            let mut r = OutsideThePod::new();
            let answer = r.call(name.parse().unwrap()).await;
            assert!(
                answer.is_err(),
                "{name} resolved to {:?}",
                answer.map(|a| a.collect::<Vec<_>>())
            );
        }
    }
}
