//! The client half of the hub's relay (docs/RELAY.md): one [`RelayClient`] per attached hub
//! WebSocket. It numbers the streams we open (odd ids, [`StreamIds`]), keeps the table of
//! open streams, and demultiplexes the binary frames the WebSocket's task hands it: OPEN from
//! the hub becomes an inbound stream given to the agent's inbound path ([`OnOpen`]), DATA
//! and CREDIT go to their stream's flow control ([`stream`]), CLOSE ends a stream with its
//! reason. Frames we send (OPEN, DATA within credit, CREDIT as we read, CLOSE) are queued to
//! the WebSocket's task, which writes them batched. When the WebSocket closes, every stream
//! ends as `gone`.
//!
//! Bounds: each stream holds at most a window of received bytes (a DATA beyond it closes the
//! stream `protocol`) and queues at most its send credit; at most `maxStreams` streams are
//! open at once (an OPEN beyond that is refused, our own opens fail).

pub(crate) mod stream;

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use m2m_proto::hub::reply::RelayAttached;
use m2m_proto::relay::{
    id_text, raw_id, CloseReason, Opener, Reachable, RelayFrame, RelayFrameError, StreamIds,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::error::{AgentError, Result};
pub(crate) use stream::{relay_closed, RelayStream, RelayWriter};
use stream::{Handle, Shared};

/// What the agent does with a stream the hub opened towards us.
pub(crate) type OnOpen = Arc<dyn Fn(RelayStream) + Send + Sync>;

/// The relay on one attached hub WebSocket.
pub(crate) struct RelayClient {
    out: mpsc::UnboundedSender<Vec<u8>>,
    streams: Mutex<HashMap<u32, Arc<Shared>>>,
    ids: Mutex<StreamIds>,
    attached: RelayAttached,
    on_open: Option<OnOpen>,
    /// Set once the WebSocket is gone: no more streams.
    gone: Mutex<bool>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("relay", &self.attached.relay)
            .field("streams", &self.streams.lock().len())
            .finish_non_exhaustive()
    }
}

impl RelayClient {
    /// The relay of a WebSocket the hub attached with `attached`; frames to the hub go to
    /// `out`; streams the hub opens go to `on_open` (refused without one).
    pub(crate) fn new(
        attached: RelayAttached,
        out: mpsc::UnboundedSender<Vec<u8>>,
        on_open: Option<OnOpen>,
    ) -> Arc<Self> {
        Arc::new(RelayClient {
            out,
            streams: Mutex::new(HashMap::new()),
            ids: Mutex::new(StreamIds::new(Opener::Client)),
            attached,
            on_open,
            gone: Mutex::new(false),
        })
    }

    /// The hub's public relay URL (what records name in `relay`).
    pub(crate) fn relay_url(&self) -> &str {
        &self.attached.relay
    }

    /// The hub's reachability verdict of our registration, if it made one.
    pub(crate) fn reachable(&self) -> Option<Reachable> {
        self.attached.reachable
    }

    /// Open streams (tests).
    #[cfg(test)]
    pub(crate) fn open_streams(&self) -> usize {
        self.streams.lock().len()
    }

    fn handle(self: &Arc<Self>, shared: Arc<Shared>) -> RelayStream {
        let weak: Weak<RelayClient> = Arc::downgrade(self);
        RelayStream::new(Handle {
            shared,
            forget: Box::new(move |id| {
                if let Some(client) = weak.upgrade() {
                    client.streams.lock().remove(&id);
                }
            }),
        })
    }

    /// Opens a stream to agent `peer` (32 hex). Bytes may follow at once: the hub answers
    /// with CLOSE `unreachable` when the agent is not attached.
    pub(crate) fn open(self: &Arc<Self>, peer: &str) -> Result<RelayStream> {
        let raw = raw_id(peer).ok_or_else(|| AgentError::NoRoute {
            agent: peer.to_owned(),
            reason: "not an agent id the relay can route to".into(),
        })?;
        let closed = |reason: CloseReason, detail: &str| AgentError::RelayClosed {
            agent: peer.to_owned(),
            reason,
            detail: detail.to_owned(),
        };
        if *self.gone.lock() {
            return Err(closed(CloseReason::Gone, "the hub connection closed"));
        }
        let shared = {
            let mut streams = self.streams.lock();
            if streams.len() >= self.attached.max_streams as usize {
                return Err(closed(CloseReason::Limit, "maxStreams streams are open"));
            }
            let id = self
                .ids
                .lock()
                .next_id()
                .ok_or_else(|| closed(CloseReason::Limit, "stream ids spent"))?;
            let shared = Shared::new(id, peer.to_owned(), self.attached.window, self.out.clone());
            streams.insert(id, shared.clone());
            shared
        };
        let frame = RelayFrame::Open {
            stream: shared.id,
            peer: raw,
        };
        self.out
            .send(frame.to_vec())
            .map_err(|_| closed(CloseReason::Gone, "the hub connection closed"))?;
        Ok(self.handle(shared))
    }

    fn stream(&self, id: u32) -> Option<Arc<Shared>> {
        self.streams.lock().get(&id).cloned()
    }

    /// One binary message from the hub. `Err` for one that is not a frame: the hub broke
    /// the protocol, and the WebSocket closes.
    pub(crate) fn on_frame(self: &Arc<Self>, message: &[u8]) -> Result<(), RelayFrameError> {
        match RelayFrame::parse(message)? {
            RelayFrame::Open { stream, peer } => self.on_open(stream, peer),
            RelayFrame::Data { stream, bytes } => {
                if let Some(s) = self.stream(stream) {
                    if s.on_data(bytes).is_err() {
                        tracing::debug!(stream, "relay data beyond the window");
                        s.close(CloseReason::Protocol);
                        self.streams.lock().remove(&stream);
                    }
                }
            }
            RelayFrame::Credit { stream, bytes } => {
                if let Some(s) = self.stream(stream) {
                    if s.on_credit(bytes).is_err() {
                        tracing::debug!(stream, "relay credit beyond the window");
                        s.close(CloseReason::Protocol);
                        self.streams.lock().remove(&stream);
                    }
                }
            }
            // A stream we do not know may have crossed our own CLOSE: ignored.
            RelayFrame::Close {
                stream,
                reason,
                detail,
            } => {
                let s = self.streams.lock().remove(&stream);
                if let Some(s) = s {
                    s.on_close(reason, detail);
                }
            }
        }
        Ok(())
    }

    fn on_open(self: &Arc<Self>, stream: u32, peer: [u8; 16]) {
        let refuse = |reason: CloseReason| {
            let frame = RelayFrame::Close {
                stream,
                reason,
                detail: "",
            };
            let _ = self.out.send(frame.to_vec());
        };
        if Opener::of(stream) != Some(Opener::Hub) {
            return refuse(CloseReason::Protocol);
        }
        let Some(on_open) = self.on_open.clone() else {
            return refuse(CloseReason::Refused);
        };
        let shared = {
            let mut streams = self.streams.lock();
            if streams.contains_key(&stream) {
                return refuse(CloseReason::Protocol);
            }
            if streams.len() >= self.attached.max_streams as usize {
                drop(streams);
                return refuse(CloseReason::Limit);
            }
            let shared = Shared::new(
                stream,
                id_text(&peer),
                self.attached.window,
                self.out.clone(),
            );
            streams.insert(stream, shared.clone());
            shared
        };
        on_open(self.handle(shared));
    }

    /// The WebSocket is gone: every stream ends as `gone`.
    pub(crate) fn shutdown(&self) {
        *self.gone.lock() = true;
        let streams: Vec<Arc<Shared>> = self.streams.lock().drain().map(|(_, s)| s).collect();
        for s in streams {
            s.on_close(CloseReason::Gone, "the hub connection closed");
        }
    }
}

#[cfg(test)]
mod tests;
