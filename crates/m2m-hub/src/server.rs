//! The accept loop and the HTTP/1.1 side of every connection.
//!
//! ```text
//!  accept ─► admit (connection cap incl. descriptor reserve, per-IP share, memory charge)
//!        └─► task: first byte (plain TCP) or TLS handshake
//!              └─► hyper: head within header_timeout, ≤ max_header_bytes
//!                    └─► router ─► /ws takes the Ticket into its client task
//! ```
//!
//! Every connection holds a [`Ticket`] for as long as it is open: its place in the
//! connection count, its share of its IP, and its charge on the memory budget. Refusals
//! close the connection at once (nothing is written: the client may be the attacker).

use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::budget::{Charge, Memory};
use crate::config::HubLimits;
use crate::defaults::{self, ACCEPT_RETRY, HTTP_DRAIN, HYPER_MIN_BUF};
use crate::http::ClientAddr;
use crate::metered::WriteDeadline;
use crate::metrics::{Metrics, Refusal};
use crate::per_ip::{IpConnections, IpSlot};
use crate::state::HubState;

/// The local address a connection came in on (what `/info` shows when no public URL is
/// configured: unlike `Host`, the client does not choose it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalAddr(pub SocketAddr);

/// Admission of new connections: counts, shares and the memory budget.
#[derive(Debug)]
pub(crate) struct Admission {
    /// The hub-wide memory budget.
    pub(crate) memory: Memory,
    per_ip: Arc<IpConnections>,
    open: Arc<AtomicUsize>,
    max_open: usize,
    /// Whether the last refusal was logged (once per episode, not once per connection).
    refusing: AtomicBool,
    trust_proxy: bool,
    max_per_ip: usize,
}

impl Admission {
    /// Admission for a hub with these limits. The connection cap is also held below the
    /// descriptor limit by `descriptor_reserve`.
    pub(crate) fn new(limits: &HubLimits, trust_proxy: bool) -> Admission {
        let max_open = match descriptor_limit() {
            Some(nofile) => {
                let usable = nofile.saturating_sub(limits.descriptor_reserve).max(1);
                if usable < limits.max_http_connections {
                    tracing::info!(
                        nofile,
                        reserve = limits.descriptor_reserve,
                        connections = usable,
                        "the descriptor limit caps connections below max_http_connections"
                    );
                }
                usable.min(limits.max_http_connections)
            }
            None => limits.max_http_connections,
        };
        Admission {
            memory: Memory::new(limits.memory_budget),
            per_ip: Arc::new(IpConnections::default()),
            open: Arc::new(AtomicUsize::new(0)),
            max_open,
            refusing: AtomicBool::new(false),
            trust_proxy,
            max_per_ip: limits.max_connections_per_ip,
        }
    }

    /// Connections open now (HTTP and WebSocket).
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admits a connection from `peer`, or says which limit refused it. Behind a trusted
    /// proxy every connection comes from the proxy: the per-IP share is then taken by the
    /// WebSocket upgrade, from the forwarded address ([`Admission::share_of`]).
    pub(crate) fn admit(&self, peer: IpAddr, metrics: &Metrics) -> Result<Ticket, Refusal> {
        let result = self.try_admit(peer);
        match &result {
            Ok(_) => {
                if self.refusing.swap(false, Ordering::Relaxed) {
                    tracing::info!("accepting connections again");
                }
            }
            Err(refusal) => {
                metrics.refused(*refusal);
                if !self.refusing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        limit = refusal.label(),
                        open = self.open(),
                        max = self.max_open,
                        "refusing new connections (logged once until one is accepted)"
                    );
                }
            }
        }
        result
    }

    fn try_admit(&self, peer: IpAddr) -> Result<Ticket, Refusal> {
        // Counted first and undone by the guard, so that concurrent accepts never overshoot.
        let open = OpenGuard::take(&self.open);
        if open.count > self.max_open {
            return Err(Refusal::HttpConnections);
        }
        let ip = if self.trust_proxy {
            None
        } else {
            Some(self.share_of(peer).ok_or(Refusal::ConnectionsPerIp)?)
        };
        let charge = self
            .memory
            .connections
            .charge(defaults::HTTP_CONNECTION_COST)
            .ok_or(Refusal::MemoryConnection)?;
        Ok(Ticket {
            charge,
            ip,
            _open: open,
        })
    }

    /// A connection share of `ip`, or `None` when it holds its maximum.
    pub(crate) fn share_of(&self, ip: IpAddr) -> Option<IpSlot> {
        self.per_ip.try_open(ip, self.max_per_ip())
    }

    fn max_per_ip(&self) -> usize {
        self.max_per_ip
    }
}

/// What an open connection holds; released on drop.
#[derive(Debug)]
pub(crate) struct Ticket {
    charge: Charge,
    ip: Option<IpSlot>,
    _open: OpenGuard,
}

impl Ticket {
    /// Re-sizes the memory charge (an upgraded WebSocket costs less than an HTTP head).
    pub(crate) fn resize(&mut self, bytes: usize) -> bool {
        self.charge.resize(bytes)
    }

    /// Adds the per-IP share taken at the upgrade (behind a trusted proxy).
    pub(crate) fn set_share(&mut self, slot: IpSlot) {
        self.ip = Some(slot);
    }
}

/// One place in the connection count.
#[derive(Debug)]
struct OpenGuard {
    open: Arc<AtomicUsize>,
    count: usize,
}

impl OpenGuard {
    fn take(open: &Arc<AtomicUsize>) -> OpenGuard {
        let count = open.fetch_add(1, Ordering::Relaxed) + 1;
        OpenGuard {
            open: open.clone(),
            count,
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The ticket of a connection, for the `/ws` handler to take over (request extension).
#[derive(Debug, Clone)]
pub(crate) struct TicketSlot(pub(crate) Arc<Mutex<Option<Ticket>>>);

/// `RLIMIT_NOFILE` (soft), if it can be read.
fn descriptor_limit() -> Option<usize> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{getrlimit, Resource};
        getrlimit(Resource::RLIMIT_NOFILE)
            .ok()
            .and_then(|(soft, _)| usize::try_from(soft).ok())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (a hub holds one descriptor per
/// connection; the usual soft default of 1,024 would cap it far below its design). Returns
/// the limit now in force. For the `m2m hub` binary; a library embedding the hub decides
/// for its own process.
pub fn raise_descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
            return Some(hard);
        }
        Some(soft)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Serves `listener` until `stop` is cancelled: one task per admitted connection, which
/// waits for the first byte (plain TCP) or completes the TLS handshake (with `tls`), then
/// serves HTTP on it. The tasks belong to this loop's [`JoinSet`]: at shutdown they get
/// [`HTTP_DRAIN`] to finish, and whatever is left (or everything, if this future is
/// dropped) is aborted.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<HubState>,
    stop: CancellationToken,
) {
    let app = crate::http::router(state.clone());
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer, local, ticket) = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            // Finished connections are reaped as they end, so the set holds open ones only.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = accept(&listener, &state) => accepted,
        };
        let (state, app, stop, tls) = (state.clone(), app.clone(), stop.clone(), tls.clone());
        connections.spawn(async move {
            match tls {
                None => {
                    if first_byte(&stream, &state).await {
                        serve_connection(state, app, stream, peer, local, ticket, stop).await;
                    }
                }
                Some(acceptor) => {
                    if let Some(stream) =
                        crate::tls::handshake(&acceptor, stream, peer, &state).await
                    {
                        serve_connection(state, app, stream, peer, local, ticket, stop).await;
                    }
                }
            }
        });
    }
    drain(connections).await;
}

/// The next admitted connection on `listener`: the stream, the peer, the local address and
/// its ticket. Refused connections are closed here; a failed `accept` (out of descriptors
/// despite the reserve: another part of the process used them) backs off rather than spins.
async fn accept(
    listener: &TcpListener,
    state: &HubState,
) -> (TcpStream, SocketAddr, SocketAddr, Ticket) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let Ok(ticket) = state.admission.admit(peer.ip(), &state.metrics) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(state.config.bind);
        return (stream, peer, local, ticket);
    }
}

/// Lets the connections in flight finish, for at most [`HTTP_DRAIN`]; aborts the rest.
async fn drain(mut connections: JoinSet<()>) {
    let all_done = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(HTTP_DRAIN, all_done).await;
    connections.abort_all();
}

/// Waits for the first byte of a plain connection; `false` (counted) when none came in time.
async fn first_byte(stream: &TcpStream, state: &HubState) -> bool {
    let limit = state.config.limits.first_byte_timeout;
    // `peek` waits for data (readiness alone can be reported before any byte arrived).
    let mut byte = [0u8; 1];
    match tokio::time::timeout(limit, stream.peek(&mut byte)).await {
        Ok(Ok(n)) => n > 0,
        Ok(Err(_)) => false,
        Err(_) => {
            state.metrics.refused(Refusal::FirstByteTimeout);
            false
        }
    }
}

/// One HTTP/1.1 connection: hyper with the header bounds, the router as its service, and
/// the connection's [`Ticket`] available to `/ws`.
pub(crate) async fn serve_connection<I>(
    state: Arc<HubState>,
    app: Router,
    io: I,
    peer: SocketAddr,
    local: SocketAddr,
    ticket: Ticket,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slot = TicketSlot(Arc::new(Mutex::new(Some(ticket))));
    let service = {
        let slot = slot.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(Body::new);
            let extensions = request.extensions_mut();
            extensions.insert(ConnectInfo(ClientAddr(peer)));
            extensions.insert(LocalAddr(local));
            extensions.insert(slot.clone());
            let app = app.clone();
            // The router never fails (`Infallible`): every error is a response.
            app.oneshot(request)
        })
    };
    let limits = &state.config.limits;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(HYPER_MIN_BUF));
    let io = WriteDeadline::new(io, limits.write_timeout);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            state.metrics.refused(Refusal::HeaderTimeout);
        } else if e.is_parse_too_large() {
            state.metrics.refused(Refusal::HeaderTooLarge);
        }
        tracing::debug!(%peer, error = %e, "HTTP connection ended");
    }
    // The ticket goes with the connection unless `/ws` took it.
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_reserve_caps_connections_below_the_limit() {
        let Some(nofile) = descriptor_limit() else {
            return;
        };
        let metrics = Metrics::default();
        let limits = HubLimits {
            // Leaves room for exactly two connections.
            descriptor_reserve: nofile - 2,
            ..HubLimits::default()
        };
        let admission = Admission::new(&limits, false);
        let ip = IpAddr::from([192, 0, 2, 1]);
        let first = admission.admit(ip, &metrics).unwrap();
        let _second = admission.admit(ip, &metrics).unwrap();
        assert_eq!(
            admission.admit(ip, &metrics).unwrap_err(),
            Refusal::HttpConnections
        );
        drop(first);
        assert!(
            admission.admit(ip, &metrics).is_ok(),
            "a place is free again"
        );
    }

    #[test]
    fn a_spent_connection_share_refuses_new_connections() {
        let metrics = Metrics::default();
        let limits = HubLimits {
            // Connection share 3/4 of 64 KiB: two 20 KiB heads fit, a third does not.
            memory_budget: 64 * 1024,
            ..HubLimits::default()
        };
        let admission = Admission::new(&limits, false);
        let ip = IpAddr::from([192, 0, 2, 1]);
        let _a = admission.admit(ip, &metrics).unwrap();
        let mut b = admission.admit(ip, &metrics).unwrap();
        assert_eq!(
            admission.admit(ip, &metrics).unwrap_err(),
            Refusal::MemoryConnection
        );
        // An upgraded connection costs less, which makes room.
        assert!(b.resize(defaults::WEBSOCKET_COST));
        assert!(admission.admit(ip, &metrics).is_ok());
    }
}
