//! TLS for the server's own listener ([`crate::Server::serve_tls`], [`crate::Server::listen_tls`]):
//! rustls through tokio-rustls, with a certificate that can be replaced while the server
//! runs (new connections get the new one; open ones keep theirs).

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig as RustlsConfig};
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate PEM held no certificate, or could not be parsed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The key PEM held no private key, or could not be parsed.
    #[error("private key: {0}")]
    Key(String),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// The TLS side of a listener: a certificate chain and key, replaceable at run time with
/// [`Tls::reload_pem`]. Cheap to clone (clones share the certificate).
///
/// ```no_run
/// # async fn f(server: crosswire::Server) -> Result<(), Box<dyn std::error::Error>> {
/// let tls = crosswire::Tls::from_pem(&std::fs::read("cert.pem")?, &std::fs::read("key.pem")?)?;
/// let addr = server.listen_tls("0.0.0.0:443", tls.clone()).await?;
/// // later, e.g. on SIGHUP:
/// tls.reload_pem(&std::fs::read("cert.pem")?, &std::fs::read("key.pem")?)?;
/// # let _ = addr; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tls {
    resolver: Arc<Resolver>,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// From a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1). HTTP/1.1 only (ALPN `http/1.1`), TLS 1.2 and 1.3, ring's algorithms.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let resolver = Arc::new(Resolver {
            key: ArcSwap::from(certified_key(cert_pem, key_pem)?),
        });
        let provider = Arc::new(ring::default_provider());
        let mut config = RustlsConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Replaces the certificate and key for the connections that start from now on; on
    /// error the current pair stays.
    pub fn reload_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let key = certified_key(cert_pem, key_pem)?;
        self.resolver.key.store(key);
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Parses and checks a certificate chain and its key.
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("no certificate in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let provider = ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)?;
    Ok(Arc::new(certified))
}

/// Gives every handshake the current certificate.
#[derive(Debug)]
struct Resolver {
    key: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.load_full())
    }
}
