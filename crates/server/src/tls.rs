//! HTTPS for the gateway and the API: one certificate and key (PEM), HTTP/2 or
//! HTTP/1.1 by ALPN, and the rule that an API reachable from other machines is not
//! served in the clear unless the operator says so.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

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

/// The acceptor both listeners use.
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("--tls-cert {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tls-cert {}: not a PEM certificate chain", files.cert.display()))?;
    if certs.is_empty() {
        bail!("--tls-cert {}: holds no certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("--tls-key {}: no PEM private key in it", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("--tls-cert and --tls-key do not make a usable pair")?;
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
        assert!(acceptor(&missing).err().unwrap().to_string().contains("--tls-cert"));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let err = acceptor(&TlsFiles {
            cert: junk.clone(),
            key: junk,
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("--tls-cert"), "{err:#}");
    }
}
