//! The relay extension (docs/RELAY.md): binary frames that carry P2P byte streams between
//! two agents through the hub they are attached to, and the flow-control accounting both
//! ends and the hub apply to them.
//!
//! ```text
//! sender's session bytes ─▶ RelayFrame::Data (within SendCredit) ─▶ hub (checks the same
//!   SendCredit, re-numbers the stream, stamps the source in Open) ─▶ receiver
//!   ─▶ RecvWindow::on_data (never beyond the window) ─▶ application consumes
//!   ─▶ RecvWindow::on_consumed ─▶ RelayFrame::Credit back the same way
//! ```
//!
//! Pure: no IO, no time. [`RelayFrame::parse`] never panics on peer input (fuzzed by
//! `fuzz/relay_frame`).

mod frame;
mod window;

#[cfg(test)]
mod tests;

pub use frame::{
    data_header, set_stream, CloseReason, RelayFrame, RelayFrameError, DATA_HEADER,
    MAX_CLOSE_DETAIL, MAX_DATA,
};
pub use window::{FlowError, RecvWindow, SendCredit};

use serde::{Deserialize, Serialize};

/// The kind byte of each frame.
pub mod kind {
    /// Open a stream.
    pub const OPEN: u8 = 0x01;
    /// Stream bytes.
    pub const DATA: u8 = 0x02;
    /// Flow-control credit.
    pub const CREDIT: u8 = 0x03;
    /// Stream closed.
    pub const CLOSE: u8 = 0x04;
}

/// The `relay` action's name.
pub const ACTION: &str = "relay";

/// An agent id on the wire of a relay frame: the 16 bytes its 32 hex characters spell.
pub type RawAgentId = [u8; 16];

/// The raw bytes of a 32-lowercase-hex agent id, or `None` when `id` is not one.
pub fn raw_id(id: &str) -> Option<RawAgentId> {
    let hex = id.as_bytes();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The 32 lowercase hex characters of a raw agent id.
pub fn id_text(raw: &RawAgentId) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for b in raw {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

/// Who numbered a stream: a client opens odd ids, the hub even ones (0 is never a stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// The client attached to the WebSocket opened it (odd id).
    Client,
    /// The hub opened it towards the client (even id).
    Hub,
}

impl Opener {
    /// Who opened stream `id`, or `None` for 0.
    pub fn of(id: u32) -> Option<Opener> {
        match id {
            0 => None,
            id if id % 2 == 1 => Some(Opener::Client),
            _ => Some(Opener::Hub),
        }
    }
}

/// Hands out the stream ids of one opener on one WebSocket: 1, 3, 5, … or 2, 4, 6, …, never
/// reused. `None` once the id space is spent (after 2^31 streams: the WebSocket must be
/// reopened).
#[derive(Debug, Clone)]
pub struct StreamIds {
    next: Option<u32>,
}

impl StreamIds {
    /// The ids of `opener`.
    pub fn new(opener: Opener) -> Self {
        StreamIds {
            next: Some(match opener {
                Opener::Client => 1,
                Opener::Hub => 2,
            }),
        }
    }

    /// The next unused id.
    pub fn next_id(&mut self) -> Option<u32> {
        let id = self.next?;
        self.next = id.checked_add(2);
        Some(id)
    }
}

/// How a record's agent can be reached (`reachable` in records, the attach reply and
/// `m2m listen`'s `connected` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachable {
    /// Its registered address answered the hub's P2P `ping`.
    Direct,
    /// Only through the relay: the probe failed, or the agent is relay-only (port 0).
    Relay,
}

impl Reachable {
    /// `"direct"` or `"relay"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reachable::Direct => "direct",
            Reachable::Relay => "relay",
        }
    }

    /// Parses `"direct"` / `"relay"`.
    pub fn parse(text: &str) -> Option<Reachable> {
        match text {
            "direct" => Some(Reachable::Direct),
            "relay" => Some(Reachable::Relay),
            _ => None,
        }
    }
}

impl std::fmt::Display for Reachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The address a relay-only agent registers: port 0 says "no listener" (docs/RELAY.md).
pub const RELAY_ONLY_ADDRESS: &str = "relay:0";

/// Whether a stored `host:port` address has port 0: the agent has no TCP listener.
pub fn is_relay_only_address(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(_, port)| port == "0")
}
