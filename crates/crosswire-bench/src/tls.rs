//! TLS for `wss://` runs: the client configuration trusting a given authority
//! (`--ca-file`). `crosswire-bench gen-certs DIR` writes a test authority and a server
//! certificate for 127.0.0.1 and localhost with `crosswire_testkit::TestCerts`, so that
//! `crosswire serve --tls-cert --tls-key` can be measured without a real certificate.

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A client configuration (ring's algorithms, TLS 1.2 and 1.3) trusting only the
/// authorities of the PEM text `ca_pem`.
pub fn client_config_from_pem(ca_pem: &[u8]) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| anyhow!("invalid PEM certificate: {e}"))?;
        roots.add(cert).context("unusable authority certificate")?;
    }
    if roots.is_empty() {
        anyhow::bail!("no certificate found in the PEM text");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`client_config_from_pem`] for the PEM file at `path`.
pub fn client_config(path: &Path) -> Result<Arc<ClientConfig>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    client_config_from_pem(&pem).with_context(|| format!("--ca-file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_authority_makes_a_client_config() {
        let certs = crosswire_testkit::TestCerts::generate().unwrap();
        assert!(client_config_from_pem(certs.ca_pem.as_bytes()).is_ok());
        assert!(client_config_from_pem(b"not pem").is_err());
    }
}
