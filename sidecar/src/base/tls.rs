//! TLS primitives every TLS configuration of the sidecar is made of: the crypto provider and
//! protocol versions, PEM parsing, certificate/key pairs, CA stores, the system roots, the
//! RFC 4514 names and descriptions of peer certificates, and the
//! error that names the route or profile whose material is refused (never a key).
//!
//! Used by the client-facing server configuration ([`crate::listen::server_tls`]), the origin
//! clients ([`crate::upstream::origin`]) and the identity-provider client
//! ([`crate::identity::client`]). Uses only [`crate::base::engine`] (the peer certificate
//! type the policy engine judges).

use std::sync::{Arc, OnceLock};

use portcullis_config::TlsMaterial;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::base::engine::PeerCertificate;

/// Why the TLS material of a configuration is refused. Names the route or profile (and so
/// the Secret behind it), never a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("route {route:?}: TLS certificate (ApiRoute tls.secretName): {what}")]
    RouteCertificate { route: String, what: String },
    #[error("profile {profile:?}: client CA bundle (clientCertificate CA Secret): {what}")]
    ClientCa { profile: String, what: String },
    #[error("route {route:?}: origin CA bundle (backend.origin.tls.caSecretRef): {what}")]
    OriginCa { route: String, what: String },
    #[error("route {route:?}: origin client certificate (backend.origin.tls.clientCertificate): {what}")]
    OriginClient { route: String, what: String },
    #[error("route {route:?}: origin: {what}")]
    Origin { route: String, what: String },
}

/// The crypto provider of every TLS configuration: ring, restricted to ECDHE key exchange
/// with AEAD suites (rustls offers nothing weaker, but the list is explicit).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            use rustls::crypto::ring::cipher_suite as cs;
            let mut p = rustls::crypto::ring::default_provider();
            p.cipher_suites = vec![
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ];
            Arc::new(p)
        })
        .clone()
}

/// TLS 1.3 and TLS 1.2, nothing older.
pub static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Certificates of a PEM bundle, in order; an error message when there is none or one is
/// unreadable.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the PEM certificates cannot be read ({e})"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    for (i, c) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(c)
            .map_err(|e| format!("certificate {} is not valid X.509 ({e})", i + 1))?;
    }
    Ok(certs)
}

/// A certificate chain and its key, checked: the key reads, matches the leaf, and the leaf
/// is within its validity period. Returns the key and the leaf's notAfter (Unix seconds).
pub fn certified_key(material: &TlsMaterial, now: i64) -> Result<(Arc<CertifiedKey>, i64), String> {
    let chain = parse_certs(&material.cert_chain_pem).map_err(|e| format!("tls.crt: {e}"))?;
    let key = key_der(material)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| "tls.key: unsupported or invalid private key".to_owned())?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err("tls.key does not match the certificate in tls.crt".into()),
    }
    let (_, leaf) = x509_parser::parse_x509_certificate(&ck.cert[0])
        .map_err(|e| format!("tls.crt: the certificate is not valid X.509 ({e})"))?;
    let not_after = leaf.validity().not_after.timestamp();
    let not_before = leaf.validity().not_before.timestamp();
    if not_after < now {
        return Err(format!(
            "tls.crt: the certificate expired (notAfter {})",
            leaf.validity().not_after
        ));
    }
    if not_before > now {
        return Err(format!(
            "tls.crt: the certificate is not valid yet (notBefore {})",
            leaf.validity().not_before
        ));
    }
    Ok((Arc::new(ck), not_after))
}

/// The private key of `material`.
pub fn key_der(material: &TlsMaterial) -> Result<PrivateKeyDer<'static>, String> {
    // The PEM parser's message could quote the input: never show it for a key.
    PrivateKeyDer::from_pem_slice(material.key_pem.expose().as_bytes())
        .map_err(|_| "tls.key: missing or not a PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned())
}

/// A trust store from a CA bundle: every certificate must be a CA certificate.
pub fn ca_store(pem: &str) -> Result<RootCertStore, String> {
    let certs = parse_certs(pem)?;
    let mut store = RootCertStore::empty();
    for (i, der) in certs.into_iter().enumerate() {
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("certificate {} is not X.509 ({e})", i + 1))?;
        if !cert.is_ca() {
            return Err(format!(
                "certificate {} ({}) is not a CA certificate (basicConstraints CA:TRUE missing)",
                i + 1,
                rfc4514(cert.subject())
            ));
        }
        store
            .add(der)
            .map_err(|e| format!("certificate {} cannot be a trust anchor ({e})", i + 1))?;
    }
    Ok(store)
}

/// The RFC 4514 string of a name: RDNs last to first, `,` between them, `+` inside one.
pub fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let oid = atv.attr_type().to_id_string();
                    let key = match oid.as_str() {
                        "2.5.4.3" => "CN",
                        "2.5.4.6" => "C",
                        "2.5.4.7" => "L",
                        "2.5.4.8" => "ST",
                        "2.5.4.9" => "STREET",
                        "2.5.4.10" => "O",
                        "2.5.4.11" => "OU",
                        "0.9.2342.19200300.100.1.25" => "DC",
                        "0.9.2342.19200300.100.1.1" => "UID",
                        _ => oid.as_str(),
                    }
                    .to_owned();
                    match atv.as_str() {
                        Ok(v) => format!("{key}={}", escape_value(v)),
                        Err(_) => {
                            let hex: String = atv.attr_value().data.iter().map(|b| format!("{b:02x}")).collect();
                            format!("{key}=#{hex}")
                        }
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}

/// Subject and SANs (DNS, URI, e-mail) of a certificate; `verified_for` left empty.
pub fn describe(der: &CertificateDer<'_>) -> Option<PeerCertificate> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            use x509_parser::extensions::GeneralName;
            match name {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    sans.push((*s).to_owned())
                }
                _ => {}
            }
        }
    }
    Some(PeerCertificate {
        subject: rfc4514(cert.subject()),
        sans,
        verified_for: Vec::new(),
    })
}

/// The system's root certificates, loaded once.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "cannot read some system CA certificates");
            }
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system roots loaded");
            Arc::new(store)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4514_escapes() {
        assert_eq!(escape_value("a,b"), "a\\,b");
        assert_eq!(escape_value(" x "), "\\ x\\ ");
        assert_eq!(escape_value("#x"), "\\#x");
    }

    #[test]
    fn subject_is_rfc4514() {
        let mut params = rcgen::CertificateParams::new(vec!["client.example.test".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc");
        params.distinguished_name.push(rcgen::DnType::CommonName, "partner-a");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let peer = describe(cert.der()).unwrap();
        assert_eq!(peer.subject, "CN=partner-a,O=Example\\, Inc");
        assert_eq!(peer.sans, vec!["client.example.test".to_owned()]);
    }
}
