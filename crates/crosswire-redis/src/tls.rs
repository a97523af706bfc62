//! TLS for `rediss://` nodes: which certificate authorities are trusted and which client
//! certificate is shown, the same on the publish connection (redis-rs) and the subscribe
//! connection (rustls directly).

use std::fmt;
use std::sync::Arc;

/// TLS settings of the `rediss://` nodes of a broker (see [`RedisConfig::tls`]).
///
/// Without any setting, server certificates are checked against the built-in web roots
/// (webpki), which suits managed Redis services with public certificates. A self-hosted Redis
/// with its own certificate authority needs [`RedisTls::with_ca_pem`]; one started with
/// `tls-auth-clients yes` (Redis's default) also needs [`RedisTls::with_client_cert_pem`].
/// Certificate checks cannot be turned off.
///
/// [`RedisConfig::tls`]: crate::RedisConfig::tls
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct RedisTls {
    /// PEM certificates of the authorities to trust, *instead of* the built-in web roots.
    /// Default: none (web roots).
    pub ca_pem: Option<Arc<[u8]>>,
    /// The client certificate presented to servers that ask for one. Default: none.
    pub client_cert: Option<ClientCertificate>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientCertificate {
    /// The certificate chain, leaf first.
    pub cert_pem: Arc<[u8]>,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Arc<[u8]>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .field("client_cert", &self.client_cert.is_some())
            .finish()
    }
}

impl RedisTls {
    /// Trusts the authorities in `pem` (one or more `CERTIFICATE` blocks) instead of the
    /// built-in web roots.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(Arc::from(pem.into()));
        self
    }

    /// Presents the certificate chain `cert_pem` with its private key `key_pem` (PKCS#8,
    /// PKCS#1 or SEC1) when a server asks for a client certificate.
    pub fn with_client_cert_pem(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.client_cert = Some(ClientCertificate {
            cert_pem: Arc::from(cert_pem.into()),
            key_pem: Arc::from(key_pem.into()),
        });
        self
    }

    /// Whether anything differs from the defaults.
    pub(crate) fn is_custom(&self) -> bool {
        self.ca_pem.is_some() || self.client_cert.is_some()
    }
}

#[cfg(feature = "tls")]
mod imp {
    use std::sync::Arc;

    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

    use super::RedisTls;

    fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{what}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{what}: no CERTIFICATE block in the PEM data"));
        }
        Ok(certs)
    }

    /// The rustls configuration of a subscribe connection; also how settings are checked.
    pub(crate) fn client_config(tls: &RedisTls) -> Result<Arc<ClientConfig>, String> {
        let mut roots = RootCertStore::empty();
        match &tls.ca_pem {
            Some(pem) => {
                for cert in certificates(pem, "TLS CA certificates")? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("TLS CA certificate: {e}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match &tls.client_cert {
            Some(client) => {
                let chain = certificates(&client.cert_pem, "TLS client certificate")?;
                let key = PrivateKeyDer::from_pem_slice(&client.key_pem)
                    .map_err(|e| format!("TLS client key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("TLS client certificate: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// The same settings for redis-rs (publish connections).
    pub(crate) fn redis_certificates(tls: &RedisTls) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: tls.client_cert.as_ref().map(|c| redis::ClientTlsConfig {
                client_cert: c.cert_pem.to_vec(),
                client_key: c.key_pem.to_vec(),
            }),
            root_cert: tls.ca_pem.as_ref().map(|pem| pem.to_vec()),
        }
    }
}

#[cfg(feature = "tls")]
pub(crate) use imp::{client_config, redis_certificates};

/// Checks the settings (PEM data parses) without connecting.
pub(crate) fn check(tls: &RedisTls) -> Result<(), String> {
    #[cfg(feature = "tls")]
    {
        client_config(tls).map(|_| ())
    }
    #[cfg(not(feature = "tls"))]
    {
        if tls.is_custom() {
            Err("TLS settings need the `tls` feature of crosswire-redis".into())
        } else {
            Ok(())
        }
    }
}
