//! `https`/`wss` without a proxy: the acceptor built from PEM files, and the handshake
//! step of the accept loop ([`crate::server`]) when TLS is on.

use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::error::{HubError, TlsFileError};
use crate::state::HubState;

/// Builds the acceptor from PEM files. HTTP/1.1 only: WebSockets upgrade from it.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, HubError> {
    let certs = read_certs(&cfg.cert_path)?;
    let key = read_key(&cfg.key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| tls_error(&cfg.cert_path, e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn tls_error(path: &Path, source: impl Into<TlsFileError>) -> HubError {
    HubError::Tls {
        path: path.to_owned(),
        source: source.into(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, HubError> {
    let file = File::open(path).map_err(|e| tls_error(path, e))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, TlsFileError::NoCertificate));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, HubError> {
    let file = File::open(path).map_err(|e| tls_error(path, e))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| tls_error(path, e))?
        .ok_or_else(|| tls_error(path, TlsFileError::NoPrivateKey))
}

/// Completes the TLS handshake of an admitted connection within the hub's
/// `tls_handshake_timeout` (the connection's own task runs it, so a slow handshake never
/// holds up the accept loop); `None` when it failed or took too long.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    state: &HubState,
) -> Option<TlsStream<TcpStream>> {
    let limit = state.config.limits.tls_handshake_timeout;
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
