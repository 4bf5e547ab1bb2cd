//! TLS, both ways: `kiln serve`'s listener speaks HTTPS when `[server] tls_cert_file` and
//! `tls_key_file` are set, and the hop between nodes (`forward.rs`) speaks TLS to a node
//! whose address is `https://…`, verifying it against `[cluster] tls_ca_file` (or the
//! system's roots). rustls with its `ring` provider, the one already in the build (no
//! second crypto library); TLS 1.2 and 1.3 only.
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use kiln_config::{ClusterConfig, Config, ServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;

/// TLS 1.3 first; 1.2 for older clients. Nothing older exists in rustls.
const VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Why a TLS file could not be used. Each message names the setting and the file, since
/// it is what an operator sees when `kiln serve` refuses to start, and holds its cause
/// (not a `source()`, which `{:#}` would print a second time).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {setting} ({}): {cause}", path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    #[error("{setting} ({}) is not valid PEM: {cause}", path.display())]
    Pem {
        setting: &'static str,
        path: PathBuf,
        cause: pem::Error,
    },
    #[error("{setting} ({}) holds no {what} in PEM (\"-----BEGIN …-----\")", path.display())]
    Missing {
        setting: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("{setting} ({}) cannot be used: {cause}", path.display())]
    Refused {
        setting: &'static str,
        path: PathBuf,
        cause: rustls::Error,
    },
    #[error("TLS cannot be set up: {0}")]
    Setup(rustls::Error),
}

/// Reads every TLS file the configuration names, so that `kiln serve` refuses to start
/// (before it registers as a node) rather than fail its first handshake or hop.
pub fn check(config: &Config) -> Result<(), TlsError> {
    listener_config(&config.server)?;
    if let Some(path) = &config.cluster.tls_ca_file {
        ca_roots(path)?;
    }
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The listener's TLS settings, when `[server]` names a certificate and key.
pub(crate) fn listener_config(
    server: &ServerConfig,
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&server.tls_cert_file, &server.tls_key_file) else {
        return Ok(None);
    };
    let certs = certificates("server.tls_cert_file", cert_file)?;
    let key_setting = "server.tls_key_file";
    let key =
        PrivateKeyDer::from_pem_slice(&read(key_setting, key_file)?).map_err(|e| match e {
            pem::Error::NoItemsFound => TlsError::Missing {
                setting: key_setting,
                path: key_file.clone(),
                what: "private key",
            },
            e => TlsError::Pem {
                setting: key_setting,
                path: key_file.clone(),
                cause: e,
            },
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Setup)?
        .with_no_client_auth()
        // Also checks that the key is the certificate's.
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Refused {
            setting: "server.tls_cert_file and tls_key_file",
            path: cert_file.clone(),
            cause: e,
        })?;
    // The server speaks HTTP/1.1 only (our own accept loop over hyper's http1).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// The hop's TLS settings: nodes are verified against `cluster.tls_ca_file`, or the
/// system's trusted roots when it is unset.
pub(crate) fn peer_config(cluster: &ClusterConfig) -> Result<ClientConfig, TlsError> {
    let roots = match &cluster.tls_ca_file {
        Some(path) => ca_roots(path)?,
        None => system_roots(),
    };
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The CA certificates of `cluster.tls_ca_file`, every one of them a trust anchor.
fn ca_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let setting = "cluster.tls_ca_file";
    let mut roots = RootCertStore::empty();
    for cert in certificates(setting, path)? {
        roots.add(cert).map_err(|e| TlsError::Refused {
            setting,
            path: path.to_path_buf(),
            cause: e,
        })?;
    }
    Ok(roots)
}

/// The system's trusted roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the distribution's
/// bundle); where the system has none (a bare container), the Mozilla roots built in.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "a system root certificate could not be loaded");
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        tracing::warn!(
            "no system root certificates: nodes are verified against the built-in Mozilla roots"
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        setting,
        path: path.to_path_buf(),
        cause: e,
    })
}

/// Every certificate of a PEM file (other sections, e.g. a key in the same file, are
/// skipped); none is an error.
fn certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&read(setting, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            setting,
            path: path.to_path_buf(),
            cause: e,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            setting,
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// A client connection, in TLS or not, as the listener is configured.
pub(crate) enum Stream<S> {
    Plain(S),
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
}

/// Opens `stream` for HTTP: as it is, or after a TLS handshake when the listener has a
/// certificate. The handshake must end within `limit` (the header-read timeout: a client
/// that connects and never finishes it would otherwise hold its place under the
/// connection caps); `None` when it does not, or fails (a plain HTTP request to an HTTPS
/// listener among others), and the connection is then closed without an answer.
pub(crate) async fn open<S>(
    acceptor: Option<&TlsAcceptor>,
    stream: S,
    limit: Duration,
) -> Option<Stream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(acceptor) = acceptor else {
        return Some(Stream::Plain(stream));
    };
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(Stream::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(
                "closing a connection that did not finish its TLS handshake in {limit:?}"
            );
            None
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(cert: &Path, key: &Path) -> ServerConfig {
        ServerConfig {
            tls_cert_file: Some(cert.to_path_buf()),
            tls_key_file: Some(key.to_path_buf()),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn unusable_files_are_refused_naming_the_setting_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n").expect("write");

        assert!(matches!(
            listener_config(&ServerConfig::default()),
            Ok(None)
        ));
        let err = listener_config(&server(&missing, &garbage)).expect_err("missing");
        let text = err.to_string();
        assert!(
            text.starts_with("cannot read server.tls_cert_file") && text.contains("missing.pem"),
            "{text}"
        );
        let err = listener_config(&server(&garbage, &garbage)).expect_err("no certificate");
        assert!(
            matches!(
                err,
                TlsError::Missing {
                    what: "certificate",
                    ..
                }
            ),
            "{err}"
        );
        let err = listener_config(&server(&broken, &garbage)).expect_err("broken PEM");
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");

        let cluster = |path: &Path| ClusterConfig {
            tls_ca_file: Some(path.to_path_buf()),
            ..ClusterConfig::default()
        };
        let err = peer_config(&cluster(&missing)).expect_err("missing CA");
        assert!(
            err.to_string()
                .starts_with("cannot read cluster.tls_ca_file"),
            "{err}"
        );
        let err = peer_config(&cluster(&garbage)).expect_err("no CA");
        assert!(err.to_string().contains("holds no certificate"), "{err}");
        assert!(
            peer_config(&ClusterConfig::default()).is_ok(),
            "system roots"
        );
    }
}
