//! Test certificates (rcgen), TLS clients over 127.0.0.1 (rustls, HTTP/1.1 or HTTP/2 by
//! ALPN), TLS test origins, and `openssl s_client` probes.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

/// A test certificate authority.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// The `TlsMaterial` JSON of the secrets file.
    pub fn material(&self) -> Value {
        json!({"certChainPem": self.cert_pem, "keyPem": self.key_pem})
    }

    /// The leaf's DER.
    pub fn der(&self) -> Vec<u8> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .next()
            .expect("a certificate")
            .expect("PEM")
            .to_vec()
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Portcullis Tests");
    dn.push(DnType::CommonName, cn);
    dn
}

impl Ca {
    pub fn new(cn: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = dn(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one (its `pem` is the intermediate alone).
    pub fn intermediate(&self, cn: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = dn(cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("intermediate key");
        let cert = params.signed_by(&key, &self.issuer).expect("intermediate certificate");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn sign(&self, mut params: CertificateParams, cn: &str, key: KeyPair) -> Leaf {
        params.distinguished_name = dn(cn);
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A server certificate for `sans` (DNS names or IP addresses), ECDSA P-256.
    pub fn server(&self, cn: &str, sans: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("p");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, cn, KeyPair::generate().expect("key"))
    }

    /// A server certificate with an RSA key (made by `openssl genpkey`).
    pub fn server_rsa(&self, cn: &str, sans: &[&str]) -> Leaf {
        let out = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
            .output()
            .expect("openssl genpkey runs (tests/setup.d/20-openssl.sh installs openssl)");
        assert!(out.status.success(), "openssl genpkey failed");
        let pem = String::from_utf8(out.stdout).expect("PEM");
        let key = KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).expect("RSA key");
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("p");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, cn, key)
    }

    /// A server certificate that expired in 2021.
    pub fn expired_server(&self, cn: &str, sans: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("p");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(params, cn, KeyPair::generate().expect("key"))
    }

    /// A client certificate with subject `CN=cn,O=Portcullis Tests` and DNS SANs.
    pub fn client(&self, cn: &str, sans: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("p");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, cn, KeyPair::generate().expect("key"))
    }
}

/// The RFC 4514 subject of a leaf made by [`Ca`].
pub fn subject(cn: &str) -> String {
    format!("CN={cn},O=Portcullis Tests")
}

/// Trust `ca_pem` only.
pub fn roots(ca_pem: &str) -> RootCertStore {
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        store.add(c.expect("PEM")).expect("root");
    }
    store
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration: trust `ca_pem`, offer `versions` and ALPN `alpn`, present
/// `client` when given.
pub fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&str],
    client: Option<&Leaf>,
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(ring())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(roots(ca_pem));
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("chain"),
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// TLS 1.3 and 1.2, ALPN h2 and http/1.1.
pub fn default_client(ca_pem: &str, client: Option<&Leaf>) -> Arc<ClientConfig> {
    client_config(
        ca_pem,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
        &["h2", "http/1.1"],
        client,
    )
}

/// An answer over TLS.
#[derive(Debug)]
pub struct TlsAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: Version,
    pub protocol: Option<rustls::ProtocolVersion>,
    /// DER of the server's leaf certificate.
    pub server_cert: Vec<u8>,
}

/// An open TLS connection to the sidecar carrying HTTP/1.1 or HTTP/2 (by ALPN).
pub struct TlsConn {
    sender: Sender,
    host: String,
    pub protocol: Option<rustls::ProtocolVersion>,
    pub server_cert: Vec<u8>,
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl TlsConn {
    /// Connects to `addr`, verifying the server as `host` (SNI `host` unless
    /// `config.enable_sni` is false).
    pub async fn open(addr: SocketAddr, host: &str, config: Arc<ClientConfig>) -> Result<Self, String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
        let tls = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| format!("handshake: {e}"))?;
        let (_, session) = tls.get_ref();
        let protocol = session.protocol_version();
        let server_cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let h2 = session.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let sender = if h2 {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("h1 handshake: {e}"))?;
            tokio::spawn(conn);
            Sender::H1(sender)
        };
        Ok(Self {
            sender,
            host: host.to_owned(),
            protocol,
            server_cert,
        })
    }

    /// GET `path` on this connection.
    pub async fn get(&mut self, path: &str) -> Result<TlsAnswer, String> {
        let sent = match &mut self.sender {
            Sender::H1(s) => {
                let req = Request::get(path)
                    .header("host", &self.host)
                    .body(Full::default())
                    .expect("request");
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                let req = Request::get(format!("https://{}{path}", self.host))
                    .body(Full::default())
                    .expect("request");
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
        };
        let resp = tokio::time::timeout(Duration::from_secs(10), async { sent })
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| format!("request: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
        Ok(TlsAnswer {
            status: parts.status,
            headers: parts.headers,
            body,
            version: parts.version,
            protocol: self.protocol,
            server_cert: self.server_cert.clone(),
        })
    }
}

/// GET `path` over a new TLS connection.
pub async fn tls_get(addr: SocketAddr, host: &str, config: Arc<ClientConfig>, path: &str) -> Result<TlsAnswer, String> {
    TlsConn::open(addr, host, config).await?.get(path).await
}

/// A TLS origin on 127.0.0.1 (HTTP/2 and HTTP/1.1 by ALPN) answering a JSON echo: path,
/// query, Host, version, and the subject of the client certificate it verified.
pub struct TlsOrigin {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsOrigin {
    /// Serves with `server` (chain and key); requires a client certificate from
    /// `client_ca_pem` when given.
    pub async fn start(server: &Leaf, client_ca_pem: Option<&str>) -> Self {
        let builder = ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_ca_pem {
            Some(ca) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)), ring())
                    .build()
                    .expect("verifier"),
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(
                CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("chain"),
                PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).expect("key"),
            )
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let client = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(portcullis_sidecar::base::tls::describe)
                        .map(|p| p.subject);
                    let service = service_fn(move |req: Request<Incoming>| {
                        let client = client.clone();
                        async move { Ok::<_, Infallible>(echo(req, client)) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }
}

fn echo(req: Request<Incoming>, client: Option<String>) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let v = json!({
        "path": req.uri().path(),
        "query": req.uri().query(),
        "host": host,
        "version": format!("{:?}", req.version()),
        "client": client,
        "identity": req.headers().get("x-portcullis-identity").and_then(|h| h.to_str().ok()),
    });
    Response::new(Full::new(Bytes::from(v.to_string())))
}

/// The outcome of an `openssl s_client` handshake.
#[derive(Debug)]
pub struct Probe {
    pub connected: bool,
    pub output: String,
}

/// `openssl s_client` against `addr` with SNI `host` and `args` (e.g. `-tls1_2 -cipher X`).
pub fn s_client(addr: SocketAddr, host: &str, args: &[&str]) -> Probe {
    let out = std::process::Command::new("openssl")
        .arg("s_client")
        .args(["-connect", &addr.to_string(), "-servername", host])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs (tests/setup.d/20-openssl.sh installs it)");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A completed handshake prints the negotiated cipher; a refused one "Cipher is (NONE)"
    // or nothing at all.
    let connected = out.status.success() && output.lines().any(|l| l.contains("Cipher is") && !l.contains("(NONE)"));
    Probe { connected, output }
}
