//! The hand-written JSON of listings: numbers and strings written as serde_json writes
//! them, an entry's cached text, a page of them ([`JsonPage`]), and the serde views
//! (`PeerView`, `AgentsPageView`) for the HTTP API. The tests below pin every written text
//! to serde's, byte for byte.

use std::borrow::Cow;
use std::sync::Arc;

use m2m_proto::hub::status;
use m2m_proto::relay::Reachable;
use serde::ser::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::entry::{secs_since, AgentEntry, EntryState, Status};

/// Appends `n` in decimal (as serde_json writes integers).
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// Appends `s` as a JSON string, escaped exactly as serde_json escapes it.
pub(super) fn push_json_str(out: &mut String, s: &str) {
    match s {
        status::ONLINE => out.push_str("\"online\""),
        status::IDLE => out.push_str("\"idle\""),
        status::OFFLINE => out.push_str("\"offline\""),
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// The `,"identity":"…"}` or `}` that ends an entry's record.
pub(super) fn record_tail(identity: Option<&str>) -> Cow<'static, str> {
    match identity {
        None => Cow::Borrowed("}"),
        Some(key) => {
            let mut tail = String::from(",\"identity\":");
            push_json_str(&mut tail, key);
            tail.push('}');
            Cow::Owned(tail)
        }
    }
}

/// A page of records as a JSON array, written without serde from each entry's cached text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPage {
    /// Records in the page.
    pub count: usize,
    /// `[…]`.
    pub json: String,
}

impl JsonPage {
    pub(super) fn new() -> JsonPage {
        JsonPage {
            count: 0,
            json: String::from("["),
        }
    }

    /// Starts the next record.
    pub(super) fn next(&mut self) -> &mut String {
        if self.count > 0 {
            self.json.push(',');
        }
        self.count += 1;
        &mut self.json
    }

    pub(super) fn finish(mut self) -> JsonPage {
        self.json.push(']');
        self
    }
}

/// A `/agents` item, serialized exactly like [`m2m_proto::hub::Peer`] without copying the entry (a
/// test pins the equivalence).
#[derive(Debug, Clone)]
pub struct PeerView {
    pub(super) entry: Arc<AgentEntry>,
    pub(super) status: Status,
    pub(super) metadata: Arc<Map<String, Value>>,
    pub(super) last_seen: u64,
    pub(super) relay: Option<Arc<str>>,
    pub(super) reachable: Option<Reachable>,
}

impl Serialize for PeerView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct PeerFields<'a> {
            id: &'a str,
            address: &'a str,
            capabilities: &'a [String],
            metadata: &'a Map<String, Value>,
            status: &'a str,
            last_seen: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            identity: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            relay: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reachable: Option<Reachable>,
            #[serde(skip_serializing_if = "Option::is_none")]
            mailbox: Option<&'a m2m_proto::mailbox::MailboxKey>,
        }
        PeerFields {
            id: &self.entry.id,
            address: &self.entry.address,
            capabilities: &self.entry.capabilities,
            metadata: &self.metadata,
            status: self.status.as_str(),
            last_seen: self.last_seen,
            identity: self.entry.identity.as_deref(),
            relay: self.relay.as_deref(),
            reachable: self.reachable,
            mailbox: self.entry.mailbox.as_ref(),
        }
        .serialize(s)
    }
}

/// `GET /agents` body, field for field [`m2m_proto::hub::AgentsPage`].
#[derive(Debug, serde::Serialize)]
pub struct AgentsPageView {
    /// Agents in the page.
    pub count: usize,
    /// All non-offline agents.
    pub total: u64,
    /// Page size.
    pub limit: u32,
    /// Page start.
    pub offset: u64,
    /// The page.
    pub agents: Vec<PeerView>,
}

impl PeerView {
    pub(super) fn new(now: i64, entry: &Arc<AgentEntry>, st: &EntryState) -> PeerView {
        PeerView {
            entry: entry.clone(),
            status: st.status.clone(),
            metadata: st.metadata.clone(),
            last_seen: secs_since(now, entry.last_seen()),
            relay: st.relay.clone(),
            reachable: st.reachable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry::secs_since;
    use super::super::tests::{ids, row};
    use super::super::*;
    use m2m_proto::hub as proto;

    /// What serde makes of the proto types for the page `discover_views` selects: the
    /// reference the cached text must equal byte for byte.
    fn serde_discover(d: &Directory, now: i64, f: &Filter<'_>) -> (usize, String) {
        let peers: Vec<proto::Peer> = d
            .discover_views(now, f)
            .iter()
            .map(|v| {
                let r = v.entry.record();
                proto::Peer {
                    id: r.id,
                    address: r.address,
                    capabilities: r.capabilities,
                    metadata: r.metadata,
                    status: r.status,
                    last_seen: secs_since(now, v.entry.last_seen()),
                    identity: r.identity,
                    relay: r.relay,
                    reachable: r.reachable,
                    mailbox: r.mailbox,
                }
            })
            .collect();
        (peers.len(), serde_json::to_string(&peers).unwrap())
    }

    fn serde_find(d: &Directory, capability: &str) -> (usize, String) {
        let found: Vec<proto::FoundAgent> = d
            .find_keys(capability, 100, 0)
            .into_iter()
            .map(|k| {
                let r = d.get(k).unwrap().record();
                proto::FoundAgent {
                    id: r.id,
                    address: r.address,
                    capabilities: r.capabilities,
                    metadata: r.metadata,
                    identity: r.identity,
                    relay: r.relay,
                    reachable: r.reachable,
                    mailbox: r.mailbox,
                }
            })
            .collect();
        (found.len(), serde_json::to_string(&found).unwrap())
    }

    fn written_record(e: &AgentEntry) -> String {
        let mut out = String::new();
        e.write_record(&mut out);
        out
    }

    /// Every listing written from cached text equals serde's output of the proto types.
    fn assert_text_matches_serde(d: &Directory, now: i64) {
        let f = Filter {
            limit: 100,
            ..Filter::default()
        };
        let page = d.discover(now, &f);
        assert_eq!((page.count, page.json), serde_discover(d, now, &f));
        for cap in ["chat", "other"] {
            let page = d.find(cap, 100, 0);
            assert_eq!((page.count, page.json), serde_find(d, cap));
        }
        for view in d.discover_views(now, &f) {
            assert_eq!(
                written_record(&view.entry),
                serde_json::to_string(&view.entry.record()).unwrap()
            );
            // `/agents` items too.
            let text = serde_json::to_string(&view).unwrap();
            let peer: proto::Peer = serde_json::from_str(&text).unwrap();
            assert_eq!(serde_json::to_string(&peer).unwrap(), text);
        }
    }

    #[test]
    fn views_serialize_exactly_like_the_proto_types() {
        let d = Directory::default();
        let mut r = row(9, 1000, &["chat"], "online");
        r.metadata.insert("name".into(), Value::from("alpha"));
        d.upsert(&r);
        let mut r = row(
            10,
            900,
            &["chat", "other", "with \"quotes\" \\ and \u{1}"],
            "online",
        );
        r.identity = Some("aWRlbnRpdHkga2V5IGJhc2U2NA+/=".into());
        r.address = "[::1]:9000".into();
        d.upsert(&r);
        assert_text_matches_serde(&d, 1000);
        assert_text_matches_serde(&d, 1_000_000_000_000);
        // The relay fields (docs/RELAY.md "Records"), with and without an identity, one
        // or both, from a stored row and set later.
        let mut r = row(11, 950, &["chat"], "online");
        r.identity = Some("a2V5".into());
        r.relay = Some("wss://hub.example/ws \"x\"".into());
        r.reachable = Some("relay".into());
        d.upsert(&r);
        let mut r = row(12, 950, &["chat"], "online");
        r.reachable = Some("direct".into());
        d.upsert(&r);
        let mut r = row(13, 950, &["other"], "online");
        r.relay = Some("ws://127.0.0.1:3000/ws".into());
        let e = d.upsert(&r).unwrap();
        assert_text_matches_serde(&d, 1000);
        d.set_relay(&e, 2, Some(Arc::from("ws://h/ws")), Some(Reachable::Direct));
        assert!(written_record(&e).ends_with(r#","relay":"ws://h/ws","reachable":"direct"}"#));
        assert_text_matches_serde(&d, 1000);
        // Offline clears `relay` (the registry does the same), keeps `reachable`.
        d.set(&e, 3, Some(Status::Offline), None, None);
        assert!(written_record(&e).ends_with(r#""status":"offline","reachable":"direct"}"#));
        assert_text_matches_serde(&d, 1000);
        // The mailbox key (docs/MAILBOX.md "In records"): after relay/reachable, alone or
        // with them, exactly as serde writes `Option<MailboxKey>`.
        let key = m2m_proto::mailbox::MailboxKey {
            key: "a2V5IGJhc2U2NA+/=".into(),
            issued: 1_764_800_000_000,
            sig: "c2ln\"x".into(),
        };
        let mut r = row(14, 950, &["chat"], "online");
        r.identity = Some("a2V5".into());
        r.mailbox = Some(serde_json::to_string(&key).unwrap());
        d.upsert(&r);
        let mut r = row(15, 950, &["other"], "online");
        r.identity = Some("a2V5".into());
        r.relay = Some("ws://h/ws".into());
        r.reachable = Some("relay".into());
        r.mailbox = Some(serde_json::to_string(&key).unwrap());
        let e = d.upsert(&r).unwrap();
        assert!(written_record(&e).ends_with(
            r#","relay":"ws://h/ws","reachable":"relay","mailbox":{"key":"a2V5IGJhc2U2NA+/=","issued":1764800000000,"sig":"c2ln\"x"}}"#
        ));
        assert_text_matches_serde(&d, 1000);
    }

    #[test]
    fn cached_text_follows_status_metadata_and_last_seen() {
        let d = Directory::default();
        let mut r = row(1, 1000, &["chat"], "online");
        r.metadata.insert("n".into(), Value::from(1));
        let plain = d.upsert(&r).unwrap();
        let mut r = row(2, 1000, &["chat", "other"], "online");
        r.identity = Some("a2V5".into());
        let keyed = d.upsert(&r).unwrap();
        let now = 5000;
        // First use builds the cache; a second use reads it.
        assert_text_matches_serde(&d, now);
        assert_text_matches_serde(&d, now);

        // Status: hub-assigned and agent-chosen, escaped and unicode.
        d.set(&plain, 2, Some(Status::Other("busy".into())), None, None);
        assert_text_matches_serde(&d, now);
        d.set(&keyed, 2, Some(Status::Idle), None, None);
        d.set(
            &plain,
            3,
            Some(Status::Other("\"weird\"\n\u{7f}ステータス 🚀".into())),
            None,
            None,
        );
        assert_text_matches_serde(&d, now);
        d.force_status(&keyed, Status::Online);
        assert_text_matches_serde(&d, now);

        // Metadata through an own write, with unicode, escapes and nesting.
        let mut m = Map::new();
        m.insert(
            "名前".into(),
            Value::from("エージェント \u{2028} \u{0} \\ \" é 🚀"),
        );
        m.insert(
            "nested".into(),
            serde_json::json!({"a": [1, 2.5, -3, null, true], "b": {"c": "d"}}),
        );
        m.insert("big".into(), Value::from(u64::MAX));
        d.set(&plain, 4, None, Some(Arc::new(m)), Some(now + 2000));
        assert_text_matches_serde(&d, now + 2600);

        // Metadata and status through a stored row (change feed, sweep).
        let mut r = row(2, 1000, &["chat", "other"], "busy");
        r.identity = Some("a2V5".into());
        r.version = 7;
        r.metadata.insert("fresh".into(), Value::from("yes"));
        d.upsert(&r);
        assert_text_matches_serde(&d, now + 2600);
        assert!(written_record(&keyed).contains(r#""metadata":{"fresh":"yes"}"#));

        // lastSeen moves with heartbeats; the text does not need rebuilding for it.
        d.touch(&keyed, now + 9000);
        assert_text_matches_serde(&d, now + 9400);
        assert_text_matches_serde(&d, now + 100_000);

        // Offline agents leave discover, and come back with the right text.
        d.set(&plain, 5, Some(Status::Offline), None, None);
        assert_text_matches_serde(&d, now + 100_000);
        d.set(&plain, 6, Some(Status::Online), None, None);
        assert_text_matches_serde(&d, now + 100_000);
    }

    #[test]
    fn numbers_are_written_like_serde_json() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, serde_json::to_string(&n).unwrap());
        }
    }

    #[test]
    fn exclude_and_offset_apply_to_the_text() {
        let d = Directory::default();
        for i in 1..=5 {
            d.upsert(&row(i, 1000 + i as i64 * 10, &["chat"], "online"));
        }
        let me = format!("{:032x}", 3);
        let caps = vec!["chat".to_string()];
        for (exclude, offset, limit) in [
            (Some(me.as_str()), 0, 10),
            (Some(me.as_str()), 1, 2),
            (Some("not-an-id"), 0, 10),
            (None, 4, 10),
            (None, 0, 0),
        ] {
            let f = Filter {
                exclude,
                capabilities: &caps,
                limit,
                offset,
                ..Filter::default()
            };
            let page = d.discover(2000, &f);
            assert_eq!((page.count, page.json), serde_discover(&d, 2000, &f));
        }
        let f = Filter {
            exclude: Some(&me),
            limit: 10,
            ..Filter::default()
        };
        assert_eq!(ids(&d.discover_views(2000, &f)), vec![1, 2, 4, 5]);
    }
}
