//! The client-facing TLS configuration (`--inbound-tls`), built from a configuration when it
//! is compiled, out of the primitives of [`crate::base::tls`].
//!
//! [`ServerTls::build`] turns the routes' certificates and the ClientCertificate profiles' CA
//! bundles into rustls configurations (ring provider): TLS 1.3 and TLS 1.2 with ECDHE and
//! AEAD suites only, ALPN `h2` and `http/1.1`, the certificate chosen by SNI
//! ([`SniResolver`]). It lives next to the engine in the configuration in force, so a reload swaps
//! both at once and a connection keeps the configuration it was accepted with.
//!
//! Client certificates are asked for (never required) when the SNI names a host whose route
//! has a ClientCertificate profile. [`ProfileCaVerifier`] accepts a chain valid under any
//! profile's CA; after the handshake [`ServerTls::peer_certificate`] records which profiles'
//! CAs verified it, which the policy engine checks against the route's profiles.
//!
//! Bad material (a missing or unreadable key, a key that does not match its certificate, an
//! expired certificate, a CA bundle holding a certificate that is not a CA) is a [`TlsError`]
//! naming the route or profile; the configuration is refused and the last good one serves.
//! No error or log line ever carries key material.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use portcullis_config::{Loaded, ProfileAuth, Route};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, NoClientAuth, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use crate::base::clock::unix_now;
use crate::base::engine::PeerCertificate;
use crate::base::tls::{TlsError, VERSIONS, ca_store, certified_key, describe, provider};

/// A host pattern of a route: exact, `*.` wildcard (one or more labels), or any host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `.example.com` for `*.example.com`.
    Suffix(String),
    Any,
}

impl HostPattern {
    fn of(route: &Route) -> Vec<Self> {
        if route.hosts.is_empty() {
            return vec![Self::Any];
        }
        route
            .hosts
            .iter()
            .map(|h| {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix('*') {
                    Some(suffix) if suffix.starts_with('.') => Self::Suffix(suffix.to_owned()),
                    _ => Self::Exact(h.trim_end_matches('.').to_owned()),
                }
            })
            .collect()
    }

    /// 0 exact, 1 wildcard (longer suffix first: ranked by negative length), 2 any; None:
    /// no match.
    fn rank(&self, host: &str) -> Option<(u8, i64)> {
        match self {
            Self::Exact(h) => (h == host).then_some((0, 0)),
            Self::Suffix(s) => (host.len() > s.len() && host.ends_with(s.as_str())).then_some((1, -(s.len() as i64))),
            Self::Any => Some((2, 0)),
        }
    }
}

/// One route's client-facing certificate.
#[derive(Debug)]
struct SiteCert {
    route: String,
    patterns: Vec<HostPattern>,
    key: Arc<CertifiedKey>,
}

/// Chooses the certificate of the route whose hosts match the SNI name (exact before
/// wildcard before any-host); without SNI, or for an unknown name, the first TLS route's.
#[derive(Debug)]
pub struct SniResolver {
    sites: Vec<SiteCert>,
    /// Hosts of the routes (with or without a certificate of their own) that have a
    /// ClientCertificate profile.
    client_cert_hosts: Vec<HostPattern>,
}

impl SniResolver {
    fn site(&self, sni: Option<&str>) -> Option<&SiteCert> {
        let best = sni.and_then(|sni| {
            let sni = sni.trim_end_matches('.').to_ascii_lowercase();
            self.sites
                .iter()
                .filter_map(|s| s.patterns.iter().filter_map(|p| p.rank(&sni)).min().map(|r| (r, s)))
                .min_by_key(|(r, _)| *r)
                .map(|(_, s)| s)
        });
        best.or_else(|| self.sites.first())
    }

    /// Whether some route the SNI name reaches has a ClientCertificate profile (without SNI:
    /// whether any route has one).
    fn wants_client_cert(&self, sni: Option<&str>) -> bool {
        match sni {
            None => !self.client_cert_hosts.is_empty(),
            Some(sni) => {
                let sni = sni.trim_end_matches('.').to_ascii_lowercase();
                self.client_cert_hosts.iter().any(|p| p.rank(&sni).is_some())
            }
        }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.site(hello.server_name()).map(|s| s.key.clone())
    }
}

/// One ClientCertificate profile's trust.
struct ProfileCa {
    profile: String,
    verifier: Arc<dyn ClientCertVerifier>,
}

/// Accepts a client chain valid under any ClientCertificate profile's CA (a chain valid
/// under none fails the handshake); offered, never required.
pub struct ProfileCaVerifier {
    cas: Vec<ProfileCa>,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for ProfileCaVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfileCaVerifier")
            .field(
                "profiles",
                &self.cas.iter().map(|c| c.profile.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl ProfileCaVerifier {
    /// The profiles whose CA verifies the chain.
    pub fn verified_for(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Vec<String> {
        let now = UnixTime::now();
        self.cas
            .iter()
            .filter(|ca| ca.verifier.verify_client_cert(end_entity, intermediates, now).is_ok())
            .map(|ca| ca.profile.clone())
            .collect()
    }
}

impl ClientCertVerifier for ProfileCaVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let mut last = rustls::Error::General("no client certificate profile".into());
        for ca in &self.cas {
            match ca.verifier.verify_client_cert(end_entity, intermediates, now) {
                Ok(v) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client-facing TLS of one configuration.
pub struct ServerTls {
    resolver: Arc<SniResolver>,
    /// Without client authentication.
    plain: Arc<ServerConfig>,
    /// Asking for a client certificate (when some profile wants one).
    with_client_auth: Option<Arc<ServerConfig>>,
    verifier: Option<Arc<ProfileCaVerifier>>,
    /// (route, notAfter in Unix seconds) of every route certificate.
    expiry: Vec<(String, i64)>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("routes", &self.expiry)
            .field("client_auth", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Builds the TLS of `loaded`; `None` when no route has a certificate.
    pub fn build(loaded: &Loaded) -> Result<Option<Self>, TlsError> {
        let now = unix_now();
        let config = &loaded.config;
        // Every ClientCertificate profile's CA bundle, checked even when no TLS route uses it.
        let mut cas = Vec::new();
        let mut hints = Vec::new();
        let mut cert_profiles = BTreeSet::new();
        for p in &config.profiles {
            if !matches!(p.auth, ProfileAuth::ClientCertificate { .. }) {
                continue;
            }
            cert_profiles.insert(p.name.as_str());
            let bad = |what: String| TlsError::ClientCa {
                profile: p.name.clone(),
                what,
            };
            let pem = loaded
                .secrets
                .profiles
                .get(&p.name)
                .and_then(|s| s.client_ca_pem.as_deref())
                .ok_or_else(|| bad("ca.crt missing".into()))?;
            let store = ca_store(pem).map_err(bad)?;
            hints.extend(store.subjects());
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| bad(format!("cannot verify with it ({e})")))?;
            cas.push(ProfileCa {
                profile: p.name.clone(),
                verifier,
            });
        }
        let mut sites = Vec::new();
        let mut expiry = Vec::new();
        for r in config.routes.iter().filter(|r| r.tls) {
            let material = loaded
                .secrets
                .routes
                .get(&r.name)
                .and_then(|s| s.tls.as_ref())
                .ok_or_else(|| TlsError::RouteCertificate {
                    route: r.name.clone(),
                    what: "tls.crt and tls.key missing".into(),
                })?;
            let (key, not_after) = certified_key(material, now).map_err(|what| TlsError::RouteCertificate {
                route: r.name.clone(),
                what,
            })?;
            expiry.push((r.name.clone(), not_after));
            sites.push(SiteCert {
                route: r.name.clone(),
                patterns: HostPattern::of(r),
                key,
            });
        }
        let client_cert_hosts = config
            .routes
            .iter()
            .filter(|r| r.profiles.iter().any(|p| cert_profiles.contains(p.as_str())))
            .flat_map(HostPattern::of)
            .collect();
        if sites.is_empty() {
            return Ok(None);
        }
        let resolver = Arc::new(SniResolver {
            sites,
            client_cert_hosts,
        });
        let server_config = |verifier: Arc<dyn ClientCertVerifier>| {
            let mut c = ServerConfig::builder_with_provider(provider())
                .with_protocol_versions(VERSIONS)
                .map_err(|e| TlsError::RouteCertificate {
                    route: resolver.sites[0].route.clone(),
                    what: format!("no usable TLS configuration ({e})"),
                })?
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(resolver.clone());
            c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Ok::<_, TlsError>(Arc::new(c))
        };
        let plain = server_config(Arc::new(NoClientAuth))?;
        let (with_client_auth, verifier) = if cas.is_empty() {
            (None, None)
        } else {
            let v = Arc::new(ProfileCaVerifier {
                cas,
                hints,
                algorithms: provider().signature_verification_algorithms,
            });
            (Some(server_config(v.clone())?), Some(v))
        };
        Ok(Some(Self {
            resolver,
            plain,
            with_client_auth,
            verifier,
            expiry,
        }))
    }

    /// The configuration for a connection whose ClientHello named `sni`.
    pub fn config_for(&self, sni: Option<&str>) -> Arc<ServerConfig> {
        match &self.with_client_auth {
            Some(c) if self.resolver.wants_client_cert(sni) => c.clone(),
            _ => self.plain.clone(),
        }
    }

    /// What the policy engine knows of a client's verified chain.
    pub fn peer_certificate(&self, chain: &[CertificateDer<'_>]) -> Option<PeerCertificate> {
        let (leaf, intermediates) = chain.split_first()?;
        let mut peer = describe(leaf)?;
        if let Some(v) = &self.verifier {
            peer.verified_for = v.verified_for(leaf, intermediates);
        }
        Some(peer)
    }

    /// (route, notAfter in Unix seconds) of every client-facing certificate.
    pub fn expiry(&self) -> &[(String, i64)] {
        &self.expiry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_rank() {
        let exact = HostPattern::Exact("api.example.test".into());
        let wild = HostPattern::Suffix(".example.test".into());
        assert_eq!(exact.rank("api.example.test"), Some((0, 0)));
        assert!(wild.rank("api.example.test").is_some());
        assert!(wild.rank("a.b.example.test").is_some());
        assert!(wild.rank("example.test").is_none());
        assert!(exact.rank("x.example.test").is_none());
        assert!(HostPattern::Any.rank("anything").is_some());
    }
}
