//! The rustls client configuration for computes behind TLS (Neon's, RDS's,
//! any `ComputeEndpoint.tls`): the ring provider (as the gateway uses it,
//! no aws-lc), safe default protocol versions, no client certificate, and
//! trust in either the given CA PEM or, without one, the public web roots
//! (webpki-roots).

use rustls::ClientConfig;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Why a client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The CA text is not PEM.
    #[error("the CA is not a PEM certificate bundle: {0}")]
    NotPem(#[source] std::io::Error),
    /// A certificate that rustls refuses as a trust anchor.
    #[error("the CA holds a certificate rustls refuses: {0}")]
    Refused(#[source] rustls::Error),
    /// PEM without any certificate in it.
    #[error("the CA holds no certificate")]
    NoCertificate,
    /// The ring provider does not offer the default protocol versions.
    #[error("TLS setup failed: {0}")]
    Setup(#[source] rustls::Error),
}

/// A client configuration trusting `ca_pem`'s certificates (all of them,
/// and only them), or the public web roots when `None`.
pub fn client_config(ca_pem: Option<&str>) -> Result<ClientConfig, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                roots
                    .add(cert.map_err(TlsConfigError::NotPem)?)
                    .map_err(TlsConfigError::Refused)?;
            }
            if roots.is_empty() {
                return Err(TlsConfigError::NoCertificate);
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsConfigError::Setup)?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// [`client_config`], built once per distinct CA for the life of the
/// process (for callers that connect often, such as the gateway's pools).
pub fn shared_client_config(ca_pem: Option<&str>) -> Result<Arc<ClientConfig>, TlsConfigError> {
    type Cache = Mutex<HashMap<Option<String>, Arc<ClientConfig>>>;
    static CONFIGS: OnceLock<Cache> = OnceLock::new();
    let configs = CONFIGS.get_or_init(Mutex::default);
    let key = ca_pem.map(str::to_string);
    if let Some(config) = configs.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(config.clone());
    }
    let config = Arc::new(client_config(ca_pem)?);
    configs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, config.clone());
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_roots_without_a_ca() {
        let config = client_config(None).unwrap();
        assert!(config.alpn_protocols.is_empty());
        let a = shared_client_config(None).unwrap();
        let b = shared_client_config(None).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "built once");
    }

    #[test]
    fn a_ca_without_certificates_or_with_garbage_is_refused() {
        assert!(matches!(
            client_config(Some("")),
            Err(TlsConfigError::NoCertificate)
        ));
        assert!(matches!(
            client_config(Some("not pem at all")),
            Err(TlsConfigError::NoCertificate)
        ));
        let broken = "-----BEGIN CERTIFICATE-----\nnot base64!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            client_config(Some(broken)),
            Err(TlsConfigError::NotPem(_))
        ));
        // Valid base64, not a certificate.
        let bogus = "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n";
        assert!(
            matches!(client_config(Some(bogus)), Err(TlsConfigError::Refused(_))),
            "{:?}",
            client_config(Some(bogus)).err()
        );
        assert!(shared_client_config(Some("")).is_err());
    }
}
