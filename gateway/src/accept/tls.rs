//! TLS for the Postgres listener (rustls). Without configured files, the
//! first `ogel up` makes a local CA and a server certificate signed by it
//! (rcgen) in `<data-dir>/tls/`, so `sslmode=require` works at once and
//! `sslmode=verify-full sslrootcert=<data-dir>/tls/ca.pem` works for
//! `localhost`, `*.localhost`, `*.<domain>`, 127.0.0.1 and ::1. `ogel reload`
//! re-reads the files. The client's SNI name may select a database and
//! branch: `<db>--<branch>.<domain>` (or `<db>.<domain>`).

use crate::config::TlsConfig;
use crate::error::file;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::TlsAcceptor;

/// The acceptor in force, swapped on reload.
pub struct Tls {
    acceptor: RwLock<Option<TlsAcceptor>>,
    /// Settings.
    pub config: TlsConfig,
    files: (PathBuf, PathBuf),
    /// The generated CA's certificate, when the gateway made its own.
    pub ca_file: Option<PathBuf>,
}

/// Where the generated files live.
pub fn tls_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// Why TLS could not be set up; the previous certificate stays on reload.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `tls.cert` without `tls.key`, or the other way round.
    #[error(
        "tls.cert and tls.key go together: set both, or neither to use a generated certificate"
    )]
    HalfConfigured,
    /// A file it needs.
    #[error(transparent)]
    File(#[from] crate::error::FileError),
    /// The key file holds no private key.
    #[error("{} holds no private key", .0.display())]
    NoKey(PathBuf),
    /// rustls refused the certificate (or its key).
    #[error("the certificate does not match its key, or is not usable")]
    Rustls(#[from] rustls::Error),
    /// Making the local CA or certificate failed.
    #[error("could not make the local certificate")]
    Generate(#[from] rcgen::Error),
}

impl Tls {
    /// Loads the configured files, or the generated ones (making them on
    /// first use).
    pub fn load(data_dir: &Path, config: &TlsConfig) -> Result<Tls, TlsError> {
        let (cert, key, ca_file) = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone(), None),
            (None, None) => {
                let dir = tls_dir(data_dir);
                let ca = dir.join("ca.pem");
                let cert = dir.join("server.pem");
                let key = dir.join("server.key");
                if !(ca.exists() && cert.exists() && key.exists()) {
                    generate(&dir, &config.domain)?;
                }
                (cert, key, Some(ca))
            }
            _ => return Err(TlsError::HalfConfigured),
        };
        let tls = Tls {
            acceptor: RwLock::new(None),
            config: config.clone(),
            files: (cert, key),
            ca_file,
        };
        if config.enabled {
            tls.reload()?;
        }
        Ok(tls)
    }

    /// Re-reads the certificate and key.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (cert, key) = &self.files;
        let acceptor = acceptor(cert, key)?;
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = Some(acceptor);
        Ok(())
    }

    /// The acceptor, if TLS is on.
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.acceptor
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The database and branch an SNI name selects, if it is one of ours.
    pub fn route<'a>(&self, sni: &'a str) -> Option<(&'a str, Option<&'a str>)> {
        let label = sni.strip_suffix(&format!(".{}", self.config.domain))?;
        if label.contains('.') {
            return None;
        }
        Some(match label.split_once("--") {
            Some((db, branch)) => (db, Some(branch)),
            None => (label, None),
        })
    }
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).map_err(file("read", cert))?,
    ))
    .collect::<Result<_, _>>()
    .map_err(file("parse", cert))?;
    let key_der = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).map_err(file("read", key))?,
    ))
    .map_err(file("parse", key))?
    .ok_or_else(|| TlsError::NoKey(key.to_path_buf()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Makes a CA and a server certificate signed by it in `dir`.
fn generate(dir: &Path, domain: &str) -> Result<(), TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).map_err(file("create", dir))?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "OgelBase local CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let mut names = vec![
        "localhost".to_string(),
        "*.localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if domain != "localhost" {
        names.push(domain.to_string());
        names.push(format!("*.{domain}"));
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && host != "localhost" {
            names.push(host.to_string());
        }
    }
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(names)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "OgelBase gateway");
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;
    for (name, pem) in [("ca.pem", ca_cert.pem()), ("server.pem", server_cert.pem())] {
        let path = dir.join(name);
        std::fs::write(&path, pem).map_err(file("write", &path))?;
    }
    let key_path = dir.join("server.key");
    ogel_plugin_sdk::files::write_private(&key_path, server_key.serialize_pem().as_bytes())
        .map_err(file("write", &key_path))?;
    // The CA's key is not needed again: a new CA is made if the files go.
    eprintln!(
        "ogel: made a local CA and server certificate in {} (clients: sslrootcert={}/ca.pem)",
        dir.display(),
        dir.display()
    );
    Ok(())
}

impl crate::config::Reload for Tls {
    fn reload(&self, _: &crate::config::Config) -> Result<(), crate::config::ReloadError> {
        Tls::reload(self).map_err(|e| crate::config::ReloadError::Refused {
            what: "TLS certificate",
            message: crate::error::chain(&e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_loads_and_routes() {
        let dir = tempfile::tempdir().unwrap();
        let tls = Tls::load(dir.path(), &TlsConfig::default()).unwrap();
        assert!(tls.acceptor().is_some());
        assert!(tls_dir(dir.path()).join("ca.pem").exists());
        assert_eq!(
            tls.route("shop--dev.localhost"),
            Some(("shop", Some("dev")))
        );
        assert_eq!(tls.route("shop.localhost"), Some(("shop", None)));
        assert_eq!(tls.route("localhost"), None);
        assert_eq!(tls.route("a.b.localhost"), None);
        assert_eq!(tls.route("shop--dev.example.com"), None);
        tls.reload().unwrap();
        let bad = TlsConfig {
            cert: Some(dir.path().join("missing.pem")),
            ..TlsConfig::default()
        };
        assert!(Tls::load(dir.path(), &bad).is_err());
    }
}
