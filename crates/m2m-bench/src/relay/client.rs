//! One relay client of the raw bench: a raw WebSocket (`rawws.rs`, so the generator stays
//! cheaper than the hub it measures) that registered a fresh 2.1 identity as relay-only
//! (answering the hub's challenge) and attached to the relay, plus the frame I/O the
//! scenarios need.

use std::net::SocketAddr;

use anyhow::{bail, Context};
use m2m_proto::hub::reply::RelayAttached;
use m2m_proto::identity::registration_message;
use m2m_proto::relay::{self, data_header, CloseReason, Opener, RawAgentId, RelayFrame, StreamIds};
use m2m_proto::Identity;
use serde_json::{json, Value};

use crate::defaults;
use crate::hub::open_ws;
use crate::rawws::RawWs;

/// What a received relay frame was, with the payload's length (the scenarios count bytes
/// and echo fixed-size records, so they need no borrow of the read buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Got {
    /// A stream opened towards this client.
    Open { stream: u32, peer: RawAgentId },
    /// `len` bytes on `stream`.
    Data { stream: u32, len: usize },
    /// `bytes` of credit back on `stream`.
    Credit { stream: u32, bytes: u32 },
    /// `stream` closed.
    Close { stream: u32, reason: CloseReason },
}

/// A registered, attached relay client.
pub(super) struct RelayClient {
    pub(super) ws: RawWs,
    /// Its agent id, raw (what OPEN frames name).
    pub(super) raw_id: RawAgentId,
    /// The flow-control window the hub announced.
    pub(super) window: u32,
    /// Streams it may have open at once.
    pub(super) max_streams: u32,
    ids: StreamIds,
}

impl RelayClient {
    /// Connects, registers a fresh identity with port 0 and attaches.
    pub(super) async fn connect(url: &str, addr: SocketAddr) -> anyhow::Result<RelayClient> {
        let mut ws = open_ws(url, addr, None).await?;
        let challenge: Value = serde_json::from_str(ws.recv().await?)
            .context("the hub's first message is not JSON")?;
        let Some(nonce) = challenge.get("nonce").and_then(Value::as_str) else {
            bail!("the hub sent no 2.1 challenge: the relay needs a 2.1 hub (got {challenge})");
        };
        let identity = Identity::generate(&mut rand::thread_rng());
        let key = identity.public();
        let signature = identity.sign_b64(&registration_message(
            nonce,
            &key,
            relay::RELAY_ONLY_ADDRESS,
            &[],
        ));
        let register = json!({
            "action": "register",
            "correlationId": "register",
            "address": relay::RELAY_ONLY_ADDRESS,
            "capabilities": [],
            "identity": key.to_b64(),
            "signature": signature,
        });
        expect_ok(&mut ws, &register.to_string(), "register").await?;
        let attach = json!({"action": relay::ACTION, "correlationId": "attach"});
        let reply = expect_ok(&mut ws, &attach.to_string(), "relay").await?;
        let attached: RelayAttached =
            serde_json::from_value(reply).context("the relay reply lacks its fields")?;
        let raw_id = relay::raw_id(&attached.agent_id)
            .with_context(|| format!("the hub routes to a bad agent id {}", attached.agent_id))?;
        if attached.agent_id != identity.agent_id() {
            bail!(
                "the hub attached id {} instead of this identity's",
                attached.agent_id
            );
        }
        Ok(RelayClient {
            ws,
            raw_id,
            window: attached.window,
            max_streams: attached.max_streams,
            ids: StreamIds::new(Opener::Client),
        })
    }

    /// Queues an OPEN of a new stream to `peer`; returns the stream's id.
    pub(super) fn open(&mut self, peer: RawAgentId) -> anyhow::Result<u32> {
        let stream = self.ids.next_id().context("stream ids spent")?;
        let frame = RelayFrame::Open { stream, peer }.to_vec();
        self.ws.feed_binary(&[&frame]);
        Ok(stream)
    }

    /// Queues DATA of `bytes` (1 ..= MAX_DATA) on `stream`.
    pub(super) fn data(&mut self, stream: u32, bytes: &[u8]) {
        self.ws.feed_binary(&[&data_header(stream), bytes]);
    }

    /// Queues CREDIT of `bytes` on `stream`.
    pub(super) fn credit(&mut self, stream: u32, bytes: u32) {
        let frame = RelayFrame::Credit { stream, bytes }.to_vec();
        self.ws.feed_binary(&[&frame]);
    }

    /// Queues CLOSE(normal) of `stream`.
    pub(super) fn close(&mut self, stream: u32) {
        let frame = RelayFrame::Close {
            stream,
            reason: CloseReason::Normal,
            detail: "",
        }
        .to_vec();
        self.ws.feed_binary(&[&frame]);
    }

    /// Writes what is queued.
    pub(super) async fn flush(&mut self) -> anyhow::Result<()> {
        self.ws.flush().await
    }

    /// The next relay frame (text messages in between, e.g. hub events, are skipped).
    pub(super) async fn next(&mut self) -> anyhow::Result<Got> {
        loop {
            let (binary, bytes) = self.ws.recv_any().await?;
            if !binary {
                continue;
            }
            let frame = RelayFrame::parse(bytes).context("the hub sent a bad relay frame")?;
            return Ok(match frame {
                RelayFrame::Open { stream, peer } => Got::Open { stream, peer },
                RelayFrame::Data { stream, bytes } => Got::Data {
                    stream,
                    len: bytes.len(),
                },
                RelayFrame::Credit { stream, bytes } => Got::Credit { stream, bytes },
                RelayFrame::Close { stream, reason, .. } => Got::Close { stream, reason },
            });
        }
    }

    /// Waits for the hub's OPEN of a stream from `peer`; returns this side's stream id.
    pub(super) async fn accept(&mut self, peer: RawAgentId) -> anyhow::Result<u32> {
        loop {
            match self.next().await? {
                Got::Open { stream, peer: p } if p == peer => return Ok(stream),
                Got::Open { stream, .. } => bail!("stream {stream} opened by an unexpected peer"),
                _ => {}
            }
        }
    }

    /// Queued bytes beyond which a sender writes before queueing more: one large write per
    /// batch, not one per frame.
    pub(super) fn should_flush(&self) -> bool {
        self.ws.queued() >= defaults::RELAY_WRITE_BATCH
    }
}

/// Sends `request` and waits for its reply (events before it skipped); the reply as JSON.
async fn expect_ok(ws: &mut RawWs, request: &str, what: &str) -> anyhow::Result<Value> {
    ws.send(request).await?;
    loop {
        let text = ws.recv().await?;
        if text.starts_with(r#"{"event""#) {
            continue;
        }
        let reply: Value =
            serde_json::from_str(text).with_context(|| format!("the {what} reply is not JSON"))?;
        if reply.get("status").and_then(Value::as_str) != Some("ok") {
            bail!("the hub refused {what}: {reply}");
        }
        return Ok(reply);
    }
}
