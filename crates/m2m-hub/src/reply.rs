//! Reply writers: `{"status":"ok",…}` through serde, or written by hand for the listing
//! replies (byte for byte what serde writes, which the tests below pin), and
//! `{"status":"error",…}`; plus the exact echo of a correlationId serde_json would round.

use m2m_proto::hub::errors;
use m2m_proto::hub::{ErrorReply, Reply};
use serde::Serialize;
use serde_json::Value;

use crate::directory::{push_u64, JsonPage};
use crate::writer::Unavailable;

/// The `error` code of a refused request (what its error reply says).
#[derive(Debug)]
pub(crate) struct ErrorCode(pub(crate) String);

impl From<&str> for ErrorCode {
    fn from(code: &str) -> Self {
        ErrorCode(code.to_owned())
    }
}

impl From<Unavailable> for ErrorCode {
    fn from(_: Unavailable) -> Self {
        ErrorCode(errors::UNAVAILABLE.to_owned())
    }
}

/// `{"status":"ok",<body's fields>,"correlationId":…}` through serde.
pub(crate) fn ok<T: Serialize>(body: T, cid: Option<Value>) -> String {
    serde_json::to_string(&Reply::ok(body, cid))
        .unwrap_or_else(|_| error_text(errors::UNAVAILABLE, None))
}

/// An ok reply written by hand, byte for byte what [`ok`] makes of a body whose fields
/// `fields` writes (`"name":value,…`): `{"status":"ok",<fields>,"correlationId":…}`.
pub(crate) fn ok_text(
    capacity: usize,
    cid: Option<Value>,
    fields: impl FnOnce(&mut String),
) -> String {
    let mut out = String::with_capacity(capacity + 64);
    out.push_str(r#"{"status":"ok","#);
    fields(&mut out);
    if let Some(cid) = cid {
        out.push_str(r#","correlationId":"#);
        match serde_json::to_string(&cid) {
            Ok(text) => out.push_str(&text),
            Err(_) => return error_text(errors::UNAVAILABLE, None),
        }
    }
    out.push('}');
    out
}

/// `"count":N,…,"agents":[…]` of a page.
pub(crate) fn push_page(out: &mut String, page: &JsonPage, head: impl FnOnce(&mut String)) {
    out.push_str(r#""count":"#);
    push_u64(out, page.count as u64);
    head(out);
    out.push_str(r#","agents":"#);
    out.push_str(&page.json);
}

const CID_KEY: &str = r#","correlationId":"#;

/// Whether `reply` ends with a correlationId that is a non-integer or huge number (what
/// serde_json holds as `f64`).
pub(crate) fn ends_with_float_cid(reply: &str) -> bool {
    reply
        .strip_suffix('}')
        .and_then(|r| r.rfind(CID_KEY).map(|at| &r[at + CID_KEY.len()..]))
        .is_some_and(|n| {
            n.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                && n.bytes().any(|b| b".eE".contains(&b))
        })
}

/// `reply` with its correlationId replaced by the number exactly as the request wrote it.
/// serde_json (without `arbitrary_precision`, which would slow every number the hub parses)
/// holds a number that does not fit `u64`/`i64` as `f64`: `12345678901234567890123` would
/// come back as `1.2345678901234568e22`. Only replies to such requests come here; every
/// reply ends with its correlationId.
pub(crate) fn exact_correlation_id(request: &str, reply: String) -> String {
    #[derive(serde::Deserialize)]
    struct Cid<'a> {
        #[serde(rename = "correlationId", borrow, default)]
        correlation_id: Option<&'a serde_json::value::RawValue>,
    }
    let Ok(Cid {
        correlation_id: Some(raw),
    }) = serde_json::from_str::<Cid<'_>>(request)
    else {
        return reply;
    };
    let Some(at) = reply.rfind(CID_KEY) else {
        return reply;
    };
    let mut out = String::with_capacity(reply.len() + raw.get().len());
    out.push_str(&reply[..at + CID_KEY.len()]);
    out.push_str(raw.get().trim());
    out.push('}');
    out
}

/// `{"status":"error","error":code,"correlationId":…}` as text.
pub(crate) fn error_text(code: &str, cid: Option<Value>) -> String {
    serde_json::to_string(&ErrorReply::new(code, cid))
        .unwrap_or_else(|_| format!(r#"{{"status":"error","error":"{code}"}}"#))
}
#[cfg(test)]
mod tests {
    use super::*;
    use m2m_proto::hub::{AgentRecord, Discovered, Found, FoundAgent, HubRequest, LookedUp, Peer};
    use serde_json::json;
    use serde_json::Map;

    fn cids() -> Vec<Option<Value>> {
        vec![
            None,
            Some(json!("d1")),
            Some(json!(17)),
            Some(json!(-2.5)),
            Some(Value::Null),
            Some(json!({"z": [1, "é \" \\ 🚀"], "a": null})),
        ]
    }

    fn peer(i: u64) -> Peer {
        let mut metadata = Map::new();
        metadata.insert("n".into(), json!(i));
        metadata.insert("名前".into(), json!("エージェント\u{2028}"));
        Peer {
            id: format!("{i:032x}"),
            address: "127.0.0.1:1".into(),
            capabilities: vec!["chat".into()],
            metadata,
            status: "busy".into(),
            last_seen: i * 1000,
            identity: (i % 2 == 0).then(|| "a2V5".to_owned()),
            relay: None,
            reachable: None,
            mailbox: None,
        }
    }

    #[test]
    fn big_and_fractional_correlation_ids_are_echoed_as_written() {
        for cid in [
            "123456789012345678901234567890",
            "-98765432109876543210987",
            "1.50",
            "2E+3",
            "0.1000000000000000055511151231257827",
        ] {
            let request = format!(r#"{{"action":"nope","correlationId": {cid} }}"#);
            let parsed = HubRequest::parse(&request).unwrap().correlation_id;
            let reply = error_text(errors::UNKNOWN_ACTION, parsed);
            assert!(ends_with_float_cid(&reply), "{reply}");
            let exact = exact_correlation_id(&request, reply);
            assert!(
                exact.ends_with(&format!(r#","correlationId":{cid}}}"#)),
                "{exact}"
            );
            let _: Value = serde_json::from_str(&exact).unwrap();
        }
        for reply in [
            error_text("x", Some(json!(17))),
            error_text("x", Some(json!("1.5"))),
            error_text("x", None),
        ] {
            assert!(!ends_with_float_cid(&reply), "{reply}");
        }
    }

    #[test]
    fn hand_written_replies_equal_serde_replies() {
        for n in [0, 1, 3] {
            let peers: Vec<Peer> = (0..n).map(peer).collect();
            let page = JsonPage {
                count: peers.len(),
                json: serde_json::to_string(&peers).unwrap(),
            };
            let found: Vec<FoundAgent> = peers
                .iter()
                .map(|p| FoundAgent {
                    id: p.id.clone(),
                    address: p.address.clone(),
                    capabilities: p.capabilities.clone(),
                    metadata: p.metadata.clone(),
                    identity: p.identity.clone(),
                    relay: None,
                    reachable: None,
                    mailbox: None,
                })
                .collect();
            let found_page = JsonPage {
                count: found.len(),
                json: serde_json::to_string(&found).unwrap(),
            };
            for cid in cids() {
                let (limit, offset) = (100, u64::MAX);
                let mine = ok_text(0, cid.clone(), |out| {
                    push_page(out, &page, |out| {
                        out.push_str(r#","limit":"#);
                        push_u64(out, limit);
                        out.push_str(r#","offset":"#);
                        push_u64(out, offset);
                    })
                });
                let body = Discovered {
                    count: peers.len(),
                    limit: limit as u32,
                    offset,
                    agents: peers.clone(),
                };
                assert_eq!(mine, ok(body, cid.clone()));

                let mine = ok_text(0, cid.clone(), |out| push_page(out, &found_page, |_| {}));
                let body = Found {
                    count: found.len(),
                    agents: found.clone(),
                };
                assert_eq!(mine, ok(body, cid.clone()));
            }
        }
        let p = peer(2);
        let record = AgentRecord {
            id: p.id,
            address: p.address,
            capabilities: p.capabilities,
            metadata: p.metadata,
            status: p.status,
            identity: p.identity,
            relay: None,
            reachable: None,
            mailbox: None,
        };
        for cid in cids() {
            let mine = ok_text(0, cid.clone(), |out| {
                out.push_str(r#""agent":"#);
                out.push_str(&serde_json::to_string(&record).unwrap());
            });
            let body = LookedUp {
                agent: record.clone(),
            };
            assert_eq!(mine, ok(body, cid));
        }
    }
}
