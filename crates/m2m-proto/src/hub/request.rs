//! Requests: one WebSocket text message from a client, parsed into a typed [`Action`].
//!
//! [`HubRequest`] accepts exactly what original clients send: every field optional, unknown
//! fields ignored, `correlationId` kept as the JSON value it was (so it is echoed as given).
//! [`HubRequest::action`] then validates the fields of the named action, or says which one is
//! wrong ([`RequestError`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::RequestError;
use crate::defaults;

/// One WebSocket request as a client sent it. Every field is optional so that nothing an
/// original client sends is refused at this layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubRequest {
    /// The action name (`register`, `discover`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Value>,
    /// Echoed as given in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Value>,
    /// The caller's id (discover, heartbeat, status, disconnect) or the target (lookup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// `host:port` (register).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Value>,
    /// Capabilities offered (register) or wanted, any of (discover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Value>,
    /// One capability (find).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<Value>,
    /// Agent metadata (register, status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Status filter (discover) or new status (status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
    /// Page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Value>,
    /// Page start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<Value>,
    /// 2.1: base64 Ed25519 public key of the registering agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Value>,
    /// 2.1: base64 Ed25519 signature over the registration (see `identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Value>,
    /// Mailbox: the signed mailbox key (register), docs/MAILBOX.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<Value>,
    /// Mailbox: the recipient of `mail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
    /// Mailbox: base64 of the sealed message (`mail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Value>,
    /// Mailbox: seconds the hub keeps the message (`mail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Value>,
    /// Mailbox: message ids acknowledged (`mail_ack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Value>,
}

/// A typed, validated hub request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Register the agent on this connection.
    Register(Register),
    /// List agents.
    Discover(Discover),
    /// List online agents with one capability.
    Find(Find),
    /// One agent by id.
    Lookup {
        /// The agent looked up.
        id: String,
    },
    /// Liveness from the agent `id`.
    Heartbeat {
        /// Must be this connection's agent.
        id: String,
    },
    /// Change status and merge metadata.
    Status {
        /// Must be this connection's agent.
        id: String,
        /// New status, if given.
        status: Option<String>,
        /// Shallow-merged into the stored metadata.
        metadata: Map<String, Value>,
    },
    /// Mark the agent offline.
    Disconnect {
        /// Must be this connection's agent.
        id: String,
    },
    /// Hub statistics.
    Stats,
    /// Attach this WebSocket to the hub's relay (docs/RELAY.md). `identity` and `signature`
    /// prove the key when the WebSocket did not register with one.
    Relay {
        /// 2.1 identity key (base64), for a WebSocket that did not register.
        identity: Option<String>,
        /// Signature (base64) over [`crate::identity::relay_attach_message`].
        signature: Option<String>,
    },
    /// Store a sealed message for `to` (docs/MAILBOX.md section 3).
    Mail(Mail),
    /// Subscribe this WebSocket to its identity's mail. `identity` and `signature` prove the
    /// key (the attach proof) when the WebSocket did not register with one.
    Mailbox {
        /// 2.1 identity key (base64), for a WebSocket that did not register.
        identity: Option<String>,
        /// Signature (base64) over [`crate::identity::relay_attach_message`].
        signature: Option<String>,
    },
    /// Acknowledge pushed mail (the hub deletes it).
    MailAck {
        /// Message ids, at most [`crate::mailbox::MAX_ACK_IDS`].
        ids: Vec<String>,
    },
}

/// `mail` request fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    /// Recipient id.
    pub to: String,
    /// Message id ([`crate::mailbox::valid_message_id`]).
    pub id: String,
    /// Seconds to keep it, as sent (the hub refuses ≤ 0 with `expired`, clamps the rest).
    pub ttl: Option<i64>,
    /// Base64 of the sealed message, as sent (the hub decodes and bounds it).
    pub sealed: String,
    /// 2.1 identity key (base64), for a WebSocket that did not register.
    pub identity: Option<String>,
    /// Signature (base64) over [`crate::identity::relay_attach_message`].
    pub signature: Option<String>,
}

/// `register` request fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    /// As given; the hub keeps only the port (PROTOCOL.md A2, Address).
    pub address: Option<String>,
    /// Capabilities offered.
    pub capabilities: Vec<String>,
    /// Free-form metadata object.
    pub metadata: Map<String, Value>,
    /// 2.1 identity key (base64), if the agent proves one.
    pub identity: Option<String>,
    /// 2.1 signature (base64) over the registration.
    pub signature: Option<String>,
    /// Mailbox: the signed mailbox key, if the agent publishes one.
    pub mailbox: Option<crate::mailbox::MailboxKey>,
}

/// `discover` request fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Discover {
    /// The caller, excluded from results.
    pub exclude_id: Option<String>,
    /// Match any of these; empty matches all.
    pub capabilities: Vec<String>,
    /// Only agents with this status.
    pub status: Option<String>,
    /// Page size (clamped to `1..=MAX_PAGE`).
    pub limit: u32,
    /// Page start.
    pub offset: u64,
}

/// `find` request fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Find {
    /// The one capability looked for.
    pub capability: String,
    /// Page size (clamped to `1..=MAX_PAGE`).
    pub limit: u32,
    /// Page start.
    pub offset: u64,
}

fn opt_string(v: &Option<Value>, field: &'static str) -> Result<Option<String>, RequestError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // Ids and statuses sent as numbers are accepted as their text, like JS would.
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(RequestError::InvalidField {
            field,
            reason: "must be a string",
        }),
    }
}

fn req_string(v: &Option<Value>, field: &'static str) -> Result<String, RequestError> {
    opt_string(v, field)?.ok_or(RequestError::MissingField(field))
}

fn string_list(v: &Option<Value>, field: &'static str) -> Result<Vec<String>, RequestError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(RequestError::InvalidField {
                    field,
                    reason: "must be an array of strings",
                }),
            })
            .collect(),
        // A single string is taken as a list of one: forgiving of hand-written clients.
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(_) => Err(RequestError::InvalidField {
            field,
            reason: "must be an array of strings",
        }),
    }
}

fn object(v: &Option<Value>, field: &'static str) -> Result<Map<String, Value>, RequestError> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(RequestError::InvalidField {
            field,
            reason: "must be an object",
        }),
    }
}

/// Reads a page bound the way the original does (`Math.min(x || default, max)`), refusing
/// values that are not numbers rather than guessing.
fn number(
    v: &Option<Value>,
    field: &'static str,
    default: u64,
    max: u64,
) -> Result<u64, RequestError> {
    let n = match v {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => {
            s.trim()
                .parse::<f64>()
                .map_err(|_| RequestError::InvalidField {
                    field,
                    reason: "must be a number",
                })?
        }
        Some(_) => {
            return Err(RequestError::InvalidField {
                field,
                reason: "must be a number",
            })
        }
    };
    if !n.is_finite() || n < 0.0 {
        return Err(RequestError::InvalidField {
            field,
            reason: "must be a non-negative number",
        });
    }
    let n = n.trunc() as u64;
    Ok(if n == 0 && default > 0 {
        default
    } else {
        n.min(max)
    })
}

/// Parses page bounds for discover and `/agents` (default 100) or find (default 10).
pub fn page(
    limit: &Option<Value>,
    offset: &Option<Value>,
    default_limit: u32,
) -> Result<(u32, u64), RequestError> {
    let limit = number(
        limit,
        "limit",
        default_limit.into(),
        defaults::MAX_PAGE.into(),
    )?;
    let offset = number(offset, "offset", 0, u64::MAX)?;
    Ok((limit as u32, offset))
}

impl HubRequest {
    /// Parses one WebSocket text message. `Err` means it was not a JSON object: the reply is
    /// `invalid_json` without correlationId.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        // serde would also read a JSON array into the struct, field by field, so that
        // `["register"]` registered (found by fuzz/hub_request): a request is an object.
        if text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .as_bytes()
            .first()
            != Some(&b'{')
        {
            return Err(serde::de::Error::custom("a request is a JSON object"));
        }
        serde_json::from_str(text)
    }

    /// The action name, if it is a string.
    pub fn action_name(&self) -> Option<&str> {
        self.action.as_ref().and_then(Value::as_str)
    }

    /// Validates the fields of the named action.
    pub fn action(&self) -> Result<Action, RequestError> {
        match self.action_name() {
            Some("register") => Ok(Action::Register(Register {
                address: opt_string(&self.address, "address")?,
                capabilities: string_list(&self.capabilities, "capabilities")?,
                metadata: object(&self.metadata, "metadata")?,
                identity: opt_string(&self.identity, "identity")?,
                signature: opt_string(&self.signature, "signature")?,
                mailbox: mailbox_key(&self.mailbox)?,
            })),
            Some("discover") => {
                let (limit, offset) =
                    page(&self.limit, &self.offset, defaults::DEFAULT_DISCOVER_LIMIT)?;
                Ok(Action::Discover(Discover {
                    exclude_id: opt_string(&self.id, "id")?,
                    capabilities: string_list(&self.capabilities, "capabilities")?,
                    status: opt_string(&self.status, "status")?,
                    limit,
                    offset,
                }))
            }
            Some("find") => {
                let (limit, offset) =
                    page(&self.limit, &self.offset, defaults::DEFAULT_FIND_LIMIT)?;
                Ok(Action::Find(Find {
                    capability: req_string(&self.capability, "capability")?,
                    limit,
                    offset,
                }))
            }
            Some("lookup") => Ok(Action::Lookup {
                id: req_string(&self.id, "id")?,
            }),
            Some("heartbeat") => Ok(Action::Heartbeat {
                id: req_string(&self.id, "id")?,
            }),
            Some("status") => Ok(Action::Status {
                id: req_string(&self.id, "id")?,
                status: opt_string(&self.status, "status")?,
                metadata: object(&self.metadata, "metadata")?,
            }),
            Some("disconnect") => Ok(Action::Disconnect {
                id: req_string(&self.id, "id")?,
            }),
            Some("stats") => Ok(Action::Stats),
            Some(crate::relay::ACTION) => Ok(Action::Relay {
                identity: opt_string(&self.identity, "identity")?,
                signature: opt_string(&self.signature, "signature")?,
            }),
            Some(crate::mailbox::ACTION_MAIL) => {
                let id = req_string(&self.id, "id")?;
                if !crate::mailbox::valid_message_id(&id) {
                    return Err(RequestError::InvalidField {
                        field: "id",
                        reason: "must be 1 to 64 of A-Z a-z 0-9 . _ : -",
                    });
                }
                Ok(Action::Mail(Mail {
                    to: req_string(&self.to, "to")?,
                    id,
                    ttl: ttl(&self.ttl)?,
                    sealed: req_string(&self.sealed, "sealed")?,
                    identity: opt_string(&self.identity, "identity")?,
                    signature: opt_string(&self.signature, "signature")?,
                }))
            }
            Some(crate::mailbox::ACTION_MAILBOX) => Ok(Action::Mailbox {
                identity: opt_string(&self.identity, "identity")?,
                signature: opt_string(&self.signature, "signature")?,
            }),
            Some(crate::mailbox::ACTION_ACK) => {
                let ids = string_list(&self.ids, "ids")?;
                if ids.is_empty() || ids.len() > crate::mailbox::MAX_ACK_IDS {
                    return Err(RequestError::InvalidField {
                        field: "ids",
                        reason: "must hold 1 to 1024 message ids",
                    });
                }
                Ok(Action::MailAck { ids })
            }
            _ => Err(RequestError::UnknownAction),
        }
    }
}

/// The `mailbox` object of a registration, when present.
fn mailbox_key(v: &Option<Value>) -> Result<Option<crate::mailbox::MailboxKey>, RequestError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|_| RequestError::InvalidField {
                    field: "mailbox",
                    reason: "must be {\"key\",\"issued\",\"sig\"}",
                })
        }
    }
}

/// `ttl` in whole seconds; a fraction is truncated, a non-number refused.
fn ttl(v: &Option<Value>) -> Result<Option<i64>, RequestError> {
    let bad = RequestError::InvalidField {
        field: "ttl",
        reason: "must be a number of seconds",
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Some(i)),
            None => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(|f| Some(f.clamp(i64::MIN as f64, i64::MAX as f64) as i64))
                .ok_or(bad),
        },
        Some(_) => Err(bad),
    }
}
