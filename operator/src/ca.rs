//! The operator's certificate authority: a CA kept in a Secret in the operator's namespace,
//! which issues serving certificates (`ApiRoute.tls.issue: true`) and client certificates
//! (`backend.origin.tls.clientCertificate.issue: true`), renews them at two thirds of their
//! lifetime, and publishes a trust bundle that holds both the old and the new CA while a CA
//! rotation is under way.
//!
//! Pure: every function takes the time (`now`, Unix seconds) and returns PEM; the controller
//! reads and writes the Secrets.

use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why a certificate operation failed. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot generate a key or certificate: {0}")]
    Generate(String),
    #[error("{what}: not a PEM certificate")]
    NotPem { what: String },
    #[error("{what}: cannot parse the certificate: {message}")]
    Parse { what: String, message: String },
    #[error("{what}: the private key cannot be read")]
    BadKey { what: String },
    #[error("{what}: the private key does not match the certificate")]
    KeyMismatch { what: String },
    #[error("{what}: the certificate is not a CA (basicConstraints CA:TRUE missing)")]
    NotCa { what: String },
    #[error("{what}: the certificate expired at {not_after} (Unix seconds)")]
    Expired { what: String, not_after: i64 },
}

/// What to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A serving certificate for these host names (wildcards allowed).
    Serving { hosts: Vec<String> },
    /// A client certificate with this common name.
    Client { common_name: String },
}

/// A certificate and key in PEM, with the facts a status or a rotation decision needs.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// Leaf first, then the CA.
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub info: CertInfo,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Facts read from a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256_fingerprint: String,
    pub is_ca: bool,
    pub dns_names: Vec<String>,
}

impl CertInfo {
    /// `notAfter` as RFC 3339, for status.
    pub fn not_after_rfc3339(&self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.not_after)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
    }
}

/// The operator's CA.
#[derive(Clone)]
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    info: CertInfo,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("info", &self.info).finish_non_exhaustive()
    }
}

/// Whether a certificate valid over `[not_before, not_after]` is due for renewal at `now`:
/// from two thirds of its lifetime on.
pub fn needs_renewal(not_before: i64, not_after: i64, now: i64) -> bool {
    let lifetime = (not_after - not_before).max(0);
    now >= not_before + lifetime * 2 / 3
}

impl Ca {
    /// A new self-signed CA (ECDSA P-256) valid from `now` for `validity_secs`.
    pub fn generate(name: &str, now: i64, validity_secs: i64) -> Result<Self, CaError> {
        let key = rcgen::KeyPair::generate().map_err(gen_err)?;
        let mut params = params_at(now, validity_secs)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Portcullis");
        let cert = params.self_signed(&key).map_err(gen_err)?;
        Self::from_pem(&cert.pem(), &key.serialize_pem(), now)
    }

    /// A CA read back from its Secret: must parse, be a CA, be unexpired, and match its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str, now: i64) -> Result<Self, CaError> {
        let what = "CA certificate";
        let info = inspect(cert_pem, what)?;
        if !info.is_ca {
            return Err(CaError::NotCa { what: what.into() });
        }
        if info.not_after <= now {
            return Err(CaError::Expired {
                what: what.into(),
                not_after: info.not_after,
            });
        }
        check_key_matches(cert_pem, key_pem, what)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            info,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// Issues a certificate valid from `now` for `validity_secs` (never beyond the CA's own
    /// expiry).
    pub fn issue(&self, subject: &Subject, now: i64, validity_secs: i64) -> Result<Issued, CaError> {
        let ca_key = rcgen::KeyPair::from_pem(&self.key_pem).map_err(|_| CaError::BadKey {
            what: "CA certificate".into(),
        })?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(gen_err)?;
        let validity = validity_secs.min(self.info.not_after - now).max(1);
        let key = rcgen::KeyPair::generate().map_err(gen_err)?;
        let mut params = match subject {
            Subject::Serving { hosts } => {
                let mut p = rcgen::CertificateParams::new(hosts.clone()).map_err(gen_err)?;
                p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
                if let Some(first) = hosts.first() {
                    p.distinguished_name.push(rcgen::DnType::CommonName, first.as_str());
                }
                p
            }
            Subject::Client { common_name } => {
                let mut p = rcgen::CertificateParams::default();
                p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
                p.distinguished_name
                    .push(rcgen::DnType::CommonName, common_name.as_str());
                p
            }
        };
        let base = params_at(now, validity)?;
        params.not_before = base.not_before;
        params.not_after = base.not_after;
        params.serial_number = base.serial_number;
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
        let leaf = cert.pem();
        let info = inspect(&leaf, "issued certificate")?;
        Ok(Issued {
            cert_chain_pem: format!("{leaf}{}", self.cert_pem),
            key_pem: key.serialize_pem(),
            info,
        })
    }
}

/// The CA bundle origins and sidecars should trust: the current CA, plus the previous one
/// while it is still valid (during a rotation, certificates from both are in use).
pub fn trust_bundle(current: &Ca, previous_pem: Option<&str>, now: i64) -> String {
    let mut bundle = current.cert_pem.clone();
    if let Some(prev) = previous_pem
        && inspect(prev, "previous CA")
            .is_ok_and(|i| i.not_after > now && i.sha256_fingerprint != current.info.sha256_fingerprint)
    {
        bundle.push_str(prev);
    }
    bundle
}

/// Reads the first certificate of a PEM chain.
pub fn inspect(pem: &str, what: &str) -> Result<CertInfo, CaError> {
    let der = first_der(pem, what)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| CaError::Parse {
        what: what.into(),
        message: e.to_string(),
    })?;
    let dns_names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        sha256_fingerprint: hex::encode(Sha256::digest(&der)),
        is_ca: cert.is_ca(),
        dns_names,
    })
}

/// Checks that `key_pem` is the private key of the first certificate in `cert_pem`.
pub fn check_key_matches(cert_pem: &str, key_pem: &str, what: &str) -> Result<(), CaError> {
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|_| CaError::BadKey { what: what.into() })?;
    let der = first_der(cert_pem, what)?;
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| CaError::Parse {
        what: what.into(),
        message: e.to_string(),
    })?;
    if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
        return Err(CaError::KeyMismatch { what: what.into() });
    }
    Ok(())
}

fn first_der(pem: &str, what: &str) -> Result<Vec<u8>, CaError> {
    let not_pem = || CaError::NotPem { what: what.into() };
    let start = pem.find("-----BEGIN CERTIFICATE-----").ok_or_else(not_pem)?;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(&pem.as_bytes()[start..]).map_err(|_| not_pem())?;
    Ok(parsed.contents)
}

fn params_at(now: i64, validity_secs: i64) -> Result<rcgen::CertificateParams, CaError> {
    let mut p = rcgen::CertificateParams::default();
    // Back-date for clock skew between the operator and its peers: a minute, or a tenth of a
    // short lifetime (so renewal at two thirds still falls after `now`).
    let skew = (validity_secs / 10).clamp(0, 60);
    p.not_before = time::OffsetDateTime::from_unix_timestamp(now - skew).map_err(gen_err)?;
    p.not_after = time::OffsetDateTime::from_unix_timestamp(now + validity_secs).map_err(gen_err)?;
    let mut serial = [0u8; 16];
    serial[..8].copy_from_slice(&now.to_be_bytes());
    serial[8..].copy_from_slice(&rand_u64().to_be_bytes());
    serial[0] &= 0x7f;
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok(p)
}

/// A random u64 from a fresh key's public bytes (avoids another RNG dependency).
fn rand_u64() -> u64 {
    let key = rcgen::KeyPair::generate().expect("key generation");
    let digest = Sha256::digest(key.public_key_raw());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn gen_err(e: impl std::fmt::Display) -> CaError {
    CaError::Generate(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    #[test]
    fn issues_serving_certificates_that_chain_to_the_ca() {
        let ca = Ca::generate("portcullis-ca", NOW, 365 * DAY).unwrap();
        assert!(ca.info().is_ca);
        let issued = ca
            .issue(
                &Subject::Serving {
                    hosts: vec!["api.example.com".into(), "*.api.example.com".into()],
                },
                NOW,
                90 * DAY,
            )
            .unwrap();
        assert_eq!(issued.info.dns_names, ["api.example.com", "*.api.example.com"]);
        assert!(!issued.info.is_ca);
        assert_eq!(issued.info.not_after, NOW + 90 * DAY);
        assert_eq!(issued.info.sha256_fingerprint.len(), 64);
        check_key_matches(&issued.cert_chain_pem, &issued.key_pem, "leaf").unwrap();
        // The chain holds the leaf then the CA, and the leaf's signature verifies with the CA key.
        assert_eq!(issued.cert_chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        let leaf_der = first_der(&issued.cert_chain_pem, "leaf").unwrap();
        let ca_der = first_der(ca.cert_pem(), "ca").unwrap();
        let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
        let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
        assert_eq!(leaf.issuer(), ca_cert.subject());
        leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
    }

    #[test]
    fn issues_client_certificates() {
        let ca = Ca::generate("portcullis-ca", NOW, 365 * DAY).unwrap();
        let issued = ca
            .issue(
                &Subject::Client {
                    common_name: "prod/finance".into(),
                },
                NOW,
                30 * DAY,
            )
            .unwrap();
        assert_eq!(issued.info.subject, "CN=prod/finance");
    }

    #[test]
    fn certificates_never_outlive_the_ca() {
        let ca = Ca::generate("portcullis-ca", NOW, 10 * DAY).unwrap();
        let issued = ca
            .issue(
                &Subject::Client {
                    common_name: "x".into(),
                },
                NOW,
                90 * DAY,
            )
            .unwrap();
        assert!(issued.info.not_after <= ca.info().not_after);
    }

    #[test]
    fn renewal_at_two_thirds_of_the_lifetime() {
        assert!(!needs_renewal(0, 90, 59));
        assert!(needs_renewal(0, 90, 60));
        assert!(needs_renewal(0, 90, 200));
    }

    #[test]
    fn bad_ca_input_is_refused_with_a_clear_error() {
        let ca = Ca::generate("portcullis-ca", NOW, 365 * DAY).unwrap();
        let other = Ca::generate("other", NOW, 365 * DAY).unwrap();
        let err = Ca::from_pem(ca.cert_pem(), other.key_pem(), NOW).unwrap_err();
        assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
        let leaf = ca
            .issue(
                &Subject::Client {
                    common_name: "x".into(),
                },
                NOW,
                DAY,
            )
            .unwrap();
        let err = Ca::from_pem(&leaf.cert_chain_pem, &leaf.key_pem, NOW).unwrap_err();
        assert!(matches!(err, CaError::NotCa { .. }), "{err}");
        let err = Ca::from_pem(ca.cert_pem(), ca.key_pem(), NOW + 400 * DAY).unwrap_err();
        assert!(matches!(err, CaError::Expired { .. }), "{err}");
        let err = Ca::from_pem("garbage", ca.key_pem(), NOW).unwrap_err();
        assert!(err.to_string().contains("not a PEM certificate"), "{err}");
        let err = Ca::from_pem(ca.cert_pem(), "not a key", NOW).unwrap_err();
        assert!(matches!(err, CaError::BadKey { .. }), "{err}");
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn trust_bundle_holds_both_cas_during_rotation() {
        let old = Ca::generate("old", NOW, 365 * DAY).unwrap();
        let new = Ca::generate("new", NOW + 200 * DAY, 365 * DAY).unwrap();
        let bundle = trust_bundle(&new, Some(old.cert_pem()), NOW + 200 * DAY);
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
        // Once the old CA has expired, only the new one remains.
        let bundle = trust_bundle(&new, Some(old.cert_pem()), NOW + 366 * DAY);
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 1);
    }
}
