//! Entry points for the fuzz targets in `fuzz/` (not a stable API): the `/ws` client task
//! without a TCP listener or an HTTP upgrade in front of it.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tungstenite::protocol::Role;

use crate::metered::Metered;
use crate::state::HubState;

/// Serves `io` as an upgraded `/ws` connection from `ip` (the frame reader, the hub's
/// WebSocket limits, request handling, replies) until the stream ends or the client
/// closes.
pub async fn serve_websocket<S>(state: Arc<HubState>, io: S, ip: IpAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(permit) = state.slots.clone().try_acquire_owned() else {
        return;
    };
    let config = crate::ws::socket_config(&state);
    // Metered as `/ws` meters it: partial frames count against the hub's memory budget.
    // No admission ticket: no accept loop saw this stream.
    let io = Metered::new(io, state.admission.memory.frames.empty());
    let socket =
        tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    crate::ws::serve_client(state, socket, ip, None, (permit, None)).await;
}

/// Stops the state's writer task and closes its registry, so that a fuzz target can
/// start over with an empty hub.
pub async fn close(state: &HubState) {
    state.stop_writer();
    state.registry.close().await;
}
