//! HTTPS for the gateway and the API: one certificate and key (PEM), a custom
//! domain's own from its secret by SNI, HTTP/2 or HTTP/1.1 by ALPN, and the rule that an API reachable from other machines is not
//! served in the clear unless the operator says so.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::secrets::Secrets;

/// The certificate chain and private key files (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Refuses to serve the API in the clear on an address other machines can reach:
/// tokens would cross the network readable.
pub fn check_exposure(api_addr: SocketAddr, tls: Option<&TlsFiles>, insecure: bool) -> anyhow::Result<()> {
    if api_addr.ip().is_loopback() || tls.is_some() || insecure {
        return Ok(());
    }
    bail!(
        "the API would listen on {api_addr}, reachable from other machines, without TLS: API tokens would cross the network in the clear. Give --tls-cert and --tls-key, bind it to 127.0.0.1, or pass --insecure to do it anyway"
    )
}

/// Which secret holds each custom domain's certificate, (namespace, secret) by domain,
/// as the route reconciler last published it.
#[derive(Default)]
pub struct TlsDomains(ArcSwap<HashMap<String, SecretName>>);

impl TlsDomains {
    pub fn replace(&self, domains: HashMap<String, SecretName>) {
        self.0.store(Arc::new(domains));
    }

    fn get(&self, domain: &str) -> Option<SecretName> {
        self.0.load().get(domain).cloned()
    }
}

/// Reads a certificate chain and its key (PEM) into what rustls presents.
fn certified_key(cert: &[u8], key: &[u8], provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|_| "is not a PEM certificate chain".to_string())?;
    if certs.is_empty() {
        return Err("holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| "has no PEM private key".to_string())?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| format!("do not make a usable pair: {e}"))
}

/// The server's certificate, or a custom domain's from its secret when the client
/// names that domain (SNI). A secret is parsed once per version it has.
struct Certificates {
    default: Arc<CertifiedKey>,
    domains: Arc<TlsDomains>,
    secrets: Arc<Secrets>,
    provider: Arc<CryptoProvider>,
    parsed: Mutex<HashMap<SecretName, (i64, Arc<CertifiedKey>)>>,
}

/// A secret by (namespace, name).
type SecretName = (String, String);

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificates")
    }
}

impl Certificates {
    fn custom(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        let (namespace, secret) = self.domains.get(domain)?;
        let Some(version) = self.secrets.version(&namespace, &secret) else {
            tracing::warn!(
                domain,
                "no certificate for the domain: namespace {namespace:?} has no secret {secret:?}"
            );
            return None;
        };
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        let cached = (namespace, secret);
        if let Some((seen, key)) = parsed.get(&cached) {
            if *seen == version {
                return Some(key.clone());
            }
        }
        let (cert, key) = match self.secrets.tls_pair(&cached.0, &cached.1) {
            Ok(pair) => pair,
            Err(why) => {
                tracing::warn!(domain, "no certificate for the domain: {why}");
                return None;
            }
        };
        match certified_key(&cert, &key, &self.provider) {
            Ok(certified) => {
                let certified = Arc::new(certified);
                parsed.insert(cached, (version, certified.clone()));
                Some(certified)
            }
            Err(why) => {
                tracing::warn!(domain, "secret {:?}: tls.crt and tls.key {why}", cached.1);
                None
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let custom = hello
            .server_name()
            .and_then(|name| self.custom(&name.to_ascii_lowercase()));
        Some(custom.unwrap_or_else(|| self.default.clone()))
    }
}

/// Checks that a secret holds a certificate and key the gateway can present.
pub fn check_tls_secret(cert: &[u8], key: &[u8]) -> Result<(), String> {
    certified_key(cert, key, &rustls::crypto::ring::default_provider()).map(|_| ())
}

/// The server's own certificate and key, read and checked before anything starts.
pub fn server_certificate(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let cert = std::fs::read(&files.cert).with_context(|| format!("--tls-cert {}", files.cert.display()))?;
    let key = std::fs::read(&files.key).with_context(|| format!("--tls-key {}", files.key.display()))?;
    certified_key(&cert, &key, &rustls::crypto::ring::default_provider()).map_err(|why| {
        anyhow::anyhow!(
            "--tls-cert {} and --tls-key {}: {why}",
            files.cert.display(),
            files.key.display()
        )
    })
}

/// The acceptor both listeners use: the server's certificate, and each custom
/// domain's own where it has one.
pub fn acceptor(
    server: CertifiedKey,
    domains: Arc<TlsDomains>,
    secrets: Arc<Secrets>,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Certificates {
            default: Arc::new(server),
            domains,
            secrets,
            provider,
            parsed: Mutex::new(HashMap::new()),
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_api_may_go_without_tls() {
        let files = TlsFiles {
            cert: "c".into(),
            key: "k".into(),
        };
        let open: SocketAddr = "0.0.0.0:8081".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:8081".parse().unwrap();
        let err = check_exposure(open, None, false).unwrap_err().to_string();
        assert!(err.contains("--tls-cert") && err.contains("--insecure"), "{err}");
        check_exposure(open, Some(&files), false).unwrap();
        check_exposure(open, None, true).unwrap();
        check_exposure(local, None, false).unwrap();
        check_exposure("[::1]:8081".parse().unwrap(), None, false).unwrap();
    }

    #[test]
    fn unreadable_or_mismatched_files_say_which_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles {
            cert: dir.path().join("none.pem"),
            key: dir.path().join("none.key"),
        };
        assert!(server_certificate(&missing)
            .err()
            .unwrap()
            .to_string()
            .contains("--tls-cert"));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let err = server_certificate(&TlsFiles {
            cert: junk.clone(),
            key: junk,
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("--tls-cert"), "{err:#}");
    }
}
