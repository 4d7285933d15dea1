//! `https`/`wss` without a proxy: a listener that completes TLS handshakes in their own
//! tasks (a slow handshake never holds up the accept loop) and hands finished streams to
//! the server.

use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::defaults::TLS_READY_QUEUE as READY_QUEUE;
use crate::error::HubError;
use crate::server::Ticket;
use crate::state::HubState;

/// Builds the acceptor from PEM files. HTTP/1.1 only: WebSockets upgrade from it.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, HubError> {
    let certs = read_certs(&cfg.cert_path)?;
    let key = read_key(&cfg.key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| HubError::Tls {
            path: cfg.cert_path.clone(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn tls_error(path: &Path, reason: impl ToString) -> HubError {
    HubError::Tls {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, HubError> {
    let file = File::open(path).map_err(|e| tls_error(path, e))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no certificate found"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, HubError> {
    let file = File::open(path).map_err(|e| tls_error(path, e))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| tls_error(path, e))?
        .ok_or_else(|| tls_error(path, "no private key found"))
}

/// A handshaken connection: the stream, the peer, the local address, its admission.
type Ready = (TlsStream<TcpStream>, SocketAddr, SocketAddr, Ticket);

/// A listener yielding TLS streams. Connections are admitted (counts, per-IP share, memory
/// charge) before their handshake, so a flood of handshakes is bounded like plain ones.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<Ready>,
    accept_task: JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `tcp`, handshaking each admitted connection within the hub's
    /// `tls_handshake_timeout`.
    pub(crate) fn new(tcp: TcpListener, acceptor: TlsAcceptor, state: Arc<HubState>) -> Self {
        let handshake_timeout = state.config.limits.tls_handshake_timeout;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer, local, ticket) = crate::server::accept(&tcp, &state).await;
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                // Bounded by the timeout; ends on its own.
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer, local, ticket)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { ready, accept_task }
    }

    /// The next handshaken connection (`None` only once the accept task is gone).
    pub(crate) async fn next(&mut self) -> Option<Ready> {
        self.ready.recv().await
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}
