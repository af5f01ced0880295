//! The proxy's TLS: a CA and a certificate for `*.<domain>` (and
//! `<domain>`) made by rcgen at start; the CA is written to `ca.pem` so
//! clients can use `sslmode=verify-full`.

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The proxy's TLS material.
pub(crate) struct ProxyTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub ca_pem: String,
    pub ca_path: PathBuf,
}

/// Makes a fresh CA and server certificate for `domain`, writes the CA to `dir/ca.pem`.
pub(crate) fn make(dir: &Path, domain: &str) -> anyhow::Result<ProxyTls> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "Neon emulator local CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![domain.to_string(), format!("*.{domain}")])?;
    server
        .distinguished_name
        .push(DnType::CommonName, format!("*.{domain}"));
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;
    let ca_pem = ca_cert.pem();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca_pem).with_context(|| format!("writing {}", ca_path.display()))?;

    let chain = vec![
        CertificateDer::from(server_cert.der().to_vec()),
        CertificateDer::from(ca_cert.der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    // PostgreSQL 17's direct SSL negotiation requires this ALPN.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(ProxyTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_pem,
        ca_path,
    })
}
