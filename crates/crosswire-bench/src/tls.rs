//! TLS for `wss://` runs: the client configuration trusting a given authority
//! (`--ca-file`), and a test authority with a server certificate for 127.0.0.1 and
//! localhost (`crosswire-bench gen-certs DIR`), so that `crosswire serve --tls-cert
//! --tls-key` can be measured without a real certificate.

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// File name of the authority's certificate written by [`generate_certs`].
pub const CA_CERT: &str = "ca.pem";
/// File name of the server certificate written by [`generate_certs`].
pub const SERVER_CERT: &str = "server.pem";
/// File name of the server's private key written by [`generate_certs`].
pub const SERVER_KEY: &str = "server.key";

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

/// The PEM texts [`generate_certs`] writes.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// The authority's certificate.
    pub ca_pem: String,
    /// The server certificate (for `127.0.0.1` and `localhost`), signed by the authority.
    pub server_cert_pem: String,
    /// The server certificate's private key (PKCS#8).
    pub server_key_pem: String,
}

/// Makes a test authority and a server certificate for `127.0.0.1` and `localhost` signed
/// by it (ECDSA P-256), as crosswire-testkit's `TestCerts` does.
pub fn make_certs() -> Result<TestCerts> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.distinguished_name
        .push(DnType::CommonName, "crosswire-bench test authority");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])?;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(TestCerts {
        ca_pem: ca_cert.pem(),
        server_cert_pem: cert.pem(),
        server_key_pem: key.serialize_pem(),
    })
}

/// Writes [`make_certs`]' files into `dir` (created if missing): [`CA_CERT`] for
/// `--ca-file`, [`SERVER_CERT`] and [`SERVER_KEY`] for `crosswire serve --tls-cert
/// --tls-key`.
pub fn generate_certs(dir: &Path) -> Result<TestCerts> {
    let certs = make_certs()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in [
        (CA_CERT, &certs.ca_pem),
        (SERVER_CERT, &certs.server_cert_pem),
        (SERVER_KEY, &certs.server_key_pem),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_authority_makes_a_client_config() {
        let certs = make_certs().unwrap();
        assert!(certs.server_cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(client_config_from_pem(certs.ca_pem.as_bytes()).is_ok());
        assert!(client_config_from_pem(b"not pem").is_err());
    }
}
