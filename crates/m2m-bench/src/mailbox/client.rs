//! One mailbox client of the bench: a raw WebSocket (`rawws.rs`) that registered a fresh
//! 2.1 identity with a published mailbox key (answering the hub's challenge), and the three
//! mailbox actions of docs/MAILBOX.md section 3 on it: `mail` pipelined, `mailbox` (the
//! subscription) and `mail_ack` in batches.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use m2m_proto::hub::reply::LookedUp;
use m2m_proto::identity::{registration_message, IdentityKey};
use m2m_proto::mailbox::{
    self, period_start, MailBody, MailboxSecret, ACTION_ACK, ACTION_MAIL, ACTION_MAILBOX,
    EVENT_DRAINED, EVENT_MAIL,
};
use m2m_proto::Identity;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::defaults::MAIL_REPLY_TIMEOUT;
use crate::hub::open_ws;
use crate::rawws::RawWs;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The address the bench's agents register (nobody dials them: mail goes through the hub).
const ADDRESS: &str = "127.0.0.1:9";

/// A registered 2.1 agent with a mailbox key.
pub(super) struct MailClient {
    ws: RawWs,
    pub(super) identity: Identity,
    pub(super) secret: MailboxSecret,
}

/// What the hub answered to a run of `mail` actions.
#[derive(Debug, Default)]
pub(super) struct Stored {
    pub(super) ok: u64,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) elapsed: Duration,
}

/// What a drain received.
#[derive(Debug, Default)]
pub(super) struct Drained {
    pub(super) pending: u64,
    pub(super) received: u64,
    pub(super) acked: u64,
    pub(super) elapsed: Duration,
    /// The first message opened and checked (docs/MAILBOX.md section 2) against the sender.
    pub(super) first_opened: bool,
}

/// The fields of a hub message the drain looks at (the rest is skipped unparsed).
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(default, borrow)]
    event: Option<&'a str>,
    #[serde(default, borrow)]
    id: Option<&'a str>,
    #[serde(default, borrow)]
    from: Option<&'a str>,
    #[serde(default, borrow)]
    sealed: Option<&'a str>,
    #[serde(default, borrow)]
    status: Option<&'a str>,
    #[serde(default)]
    acked: Option<u64>,
    #[serde(default)]
    pending: Option<u64>,
    #[serde(default, borrow)]
    error: Option<&'a str>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The next text message, or an error after [`MAIL_REPLY_TIMEOUT`] of silence.
async fn recv(ws: &mut RawWs, what: &str) -> anyhow::Result<String> {
    match tokio::time::timeout(MAIL_REPLY_TIMEOUT, ws.recv()).await {
        Ok(text) => Ok(text?.to_owned()),
        Err(_) => bail!("the hub sent nothing for {MAIL_REPLY_TIMEOUT:?} waiting for {what}"),
    }
}

impl MailClient {
    /// Connects and registers a fresh 2.1 identity that publishes its current mailbox key.
    pub(super) async fn connect(url: &str, addr: SocketAddr) -> anyhow::Result<MailClient> {
        let mut ws = open_ws(url, addr, None).await?;
        let challenge: Value = serde_json::from_str(&recv(&mut ws, "the challenge").await?)
            .context("the hub's first message is not JSON")?;
        let Some(nonce) = challenge.get("nonce").and_then(Value::as_str) else {
            bail!("the hub sent no 2.1 challenge: the mailbox needs a 2.1 hub (got {challenge})");
        };
        let identity = Identity::generate(&mut rand::thread_rng());
        let secret = MailboxSecret::derive(&identity, period_start(now_ms()));
        let key = identity.public();
        let signature = identity.sign_b64(&registration_message(nonce, &key, ADDRESS, &[]));
        let register = json!({
            "action": "register",
            "correlationId": "register",
            "address": ADDRESS,
            "capabilities": [],
            "identity": key.to_b64(),
            "signature": signature,
            "mailbox": secret.publish(&identity),
        });
        let mut client = MailClient {
            ws,
            identity,
            secret,
        };
        client.call(&register.to_string(), "register").await?;
        Ok(client)
    }

    /// Sends `request`, waits for its reply (events before it skipped); the ok reply.
    pub(super) async fn call(&mut self, request: &str, what: &str) -> anyhow::Result<Value> {
        self.ws.send(request).await?;
        loop {
            let text = recv(&mut self.ws, what).await?;
            if text.starts_with(r#"{"event""#) {
                continue;
            }
            let reply: Value = serde_json::from_str(&text)
                .with_context(|| format!("the {what} reply is not JSON"))?;
            if reply.get("status").and_then(Value::as_str) != Some("ok") {
                bail!("the hub refused {what}: {reply}");
            }
            return Ok(reply);
        }
    }

    /// Looks `id` up and checks its published mailbox key as a sender must (section 1);
    /// the raw key and its period.
    pub(super) async fn mailbox_key_of(&mut self, id: &str) -> anyhow::Result<([u8; 32], u64)> {
        let request = json!({"action": "lookup", "correlationId": "lookup", "id": id});
        let reply = self.call(&request.to_string(), "lookup").await?;
        let found: LookedUp =
            serde_json::from_value(reply).context("the lookup reply lacks its fields")?;
        let key = found
            .agent
            .mailbox
            .with_context(|| format!("the record of {id} has no mailbox key"))?;
        let identity = found
            .agent
            .identity
            .as_deref()
            .context("the record has no identity")?;
        let identity = IdentityKey::from_b64(identity).context("the record's identity")?;
        let raw = key
            .verify(&identity, id, now_ms())
            .context("the record's mailbox key does not verify")?;
        Ok((raw, key.issued))
    }

    /// `count` `mail` actions to `to`, each `size` bytes of payload sealed to `key`, ids
    /// `{prefix}-{i}`: the `mail` request lines, sealed before any is sent.
    pub(super) fn seal_all(
        &self,
        to: &str,
        key: &[u8; 32],
        issued: u64,
        count: usize,
        size: usize,
        prefix: &str,
    ) -> anyhow::Result<Vec<String>> {
        let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let mut rng = rand::thread_rng();
        let now = now_ms();
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let id = format!("{prefix}-{i}");
            let body = MailBody {
                from: self.identity.agent_id().to_owned(),
                to: to.to_owned(),
                id: id.clone(),
                message_type: "bench.mail".to_owned(),
                payload: Value::String(text.clone()),
                correlation_id: None,
                sent_at: now,
                expires_at: now + 3_600_000,
            };
            let sealed = mailbox::seal(&mut rng, &self.identity, key, issued, &body)
                .context("sealing to the recipient's key")?;
            let request = json!({
                "action": ACTION_MAIL,
                "correlationId": i.to_string(),
                "to": to,
                "id": id,
                "ttl": 3600,
                "sealed": B64.encode(&sealed),
            });
            out.push(request.to_string());
        }
        Ok(out)
    }

    /// Sends `requests` with `pipeline` of them in flight; counts the replies.
    pub(super) async fn store(
        &mut self,
        requests: &[String],
        pipeline: usize,
    ) -> anyhow::Result<Stored> {
        let mut stored = Stored::default();
        let started = Instant::now();
        let mut next = 0;
        let mut replies = 0;
        while replies < requests.len() {
            while next < requests.len() && next - replies < pipeline.max(1) {
                self.ws.feed(&requests[next]);
                next += 1;
            }
            self.ws.flush().await?;
            let text = recv(&mut self.ws, "a mail reply").await?;
            let reply: Incoming = serde_json::from_str(&text).context("a reply is not JSON")?;
            if reply.event.is_some() {
                continue;
            }
            replies += 1;
            match (reply.status, reply.error) {
                (Some("ok"), _) => stored.ok += 1,
                (_, error) => {
                    let e = error.unwrap_or("no error field").to_owned();
                    *stored.errors.entry(e).or_default() += 1;
                }
            }
        }
        stored.elapsed = started.elapsed();
        Ok(stored)
    }

    /// Subscribes and receives `expected` messages, acking every `ack_batch` (and the rest
    /// at the end); timed from the subscription until the last ack's reply. The first
    /// message is opened and checked as the SDK does, from `sender`.
    pub(super) async fn drain(
        &mut self,
        expected: u64,
        ack_batch: usize,
        sender: &str,
    ) -> anyhow::Result<Drained> {
        let mut d = Drained::default();
        let me = self.identity.agent_id().to_owned();
        let started = Instant::now();
        let sub = json!({"action": ACTION_MAILBOX, "correlationId": "sub"});
        self.ws.send(&sub.to_string()).await?;
        let mut batch: Vec<String> = Vec::with_capacity(ack_batch);
        let mut acks_out = 0u64;
        let mut subscribed = false;
        while !subscribed || d.received < expected || acks_out > 0 {
            let text = recv(&mut self.ws, "mail").await?;
            let m: Incoming = serde_json::from_str(&text).context("a hub message is not JSON")?;
            match (m.event, m.status) {
                (Some(EVENT_MAIL), _) => {
                    let id = m.id.context("a mail event without id")?;
                    if d.received == 0 {
                        let sealed = B64
                            .decode(m.sealed.context("a mail event without sealed")?)
                            .context("sealed is not base64")?;
                        let from = m.from.unwrap_or_default();
                        mailbox::open(&self.secret, &me, from, id, &sealed, now_ms())
                            .map_err(|e| anyhow::anyhow!("the first message: {}", e.reason()))?;
                        if from != sender {
                            bail!("the hub stamped {from}, not the sender {sender}");
                        }
                        d.first_opened = true;
                    }
                    d.received += 1;
                    batch.push(id.to_owned());
                    if batch.len() >= ack_batch || d.received >= expected {
                        self.ack(&mut batch).await?;
                        acks_out += 1;
                    }
                }
                (Some(EVENT_DRAINED), _) => {
                    if !batch.is_empty() {
                        self.ack(&mut batch).await?;
                        acks_out += 1;
                    }
                }
                (Some(_), _) => {}
                (None, Some("ok")) => {
                    if let Some(n) = m.acked {
                        d.acked += n;
                        acks_out -= 1;
                    } else {
                        d.pending = m.pending.unwrap_or(0);
                        subscribed = true;
                    }
                }
                (None, _) => bail!("the hub refused a mailbox action: {text}"),
            }
        }
        d.elapsed = started.elapsed();
        Ok(d)
    }

    async fn ack(&mut self, batch: &mut Vec<String>) -> anyhow::Result<()> {
        let request = json!({"action": ACTION_ACK, "correlationId": "ack", "ids": batch});
        batch.clear();
        self.ws.send(&request.to_string()).await
    }

    /// Closes the WebSocket.
    pub(super) async fn close(mut self) {
        self.ws.close().await;
    }
}
