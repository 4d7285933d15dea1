//! The dashboard's agent query: search, status filter and paging over the hub's in-memory
//! directory, never the database.
//!
//! A [`View`] is the directory's agents in a stable order (online first, then agent-chosen
//! statuses, idle, offline; by id within each), each with a lower-case haystack of what
//! free text may match (id, address, capabilities, identity, metadata). It is rebuilt when
//! the directory's generation moved — by the sampler before it tells the pages that
//! something changed, and otherwise at most every [`VIEW_REBUILD_AFTER`] by a query —
//! reusing the haystacks of entries whose metadata did not change. A query filters the view
//! against each agent's *live* status, so a status change is visible at once even in a view
//! built before it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::defaults::dashboard::{MAX_PAGE, MAX_SEARCH_LEN, VIEW_REBUILD_AFTER};
use crate::directory::{parse_id, AgentEntry, AgentKey, Directory, Status};

/// What a page asks for (`GET /dashboard/api/agents?…`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AgentQuery {
    /// Free text: every word must occur (case-insensitive) in the id, address,
    /// capabilities, identity or metadata.
    #[serde(default)]
    pub q: String,
    /// Only agents with exactly this capability.
    #[serde(default)]
    pub capability: String,
    /// Only agents with this status (`online`, `idle`, `offline`, or any other string).
    #[serde(default)]
    pub status: String,
    /// Page start.
    #[serde(default)]
    pub offset: usize,
    /// Page size (at most [`MAX_PAGE`]).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Why a query was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A search string longer than [`MAX_SEARCH_LEN`].
    #[error("search too long")]
    TooLong,
}

/// A row of the agent table.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRow {
    /// Hex id.
    pub id: String,
    /// `host:port`.
    pub address: String,
    /// Capabilities as registered.
    pub capabilities: Vec<String>,
    /// Current status.
    pub status: String,
    /// Last seen, ms since the epoch.
    pub last_seen: i64,
    /// Registered with a 2.1 identity whose key derives the id (the hub verified the
    /// signature at register).
    pub verified: bool,
    /// What the address is: `loopback`, `private`, `public` or `name` (a host name).
    pub reachability: &'static str,
    /// `metadata.name` when it is a string (shown next to the id).
    pub name: Option<String>,
}

/// One page of the table.
#[derive(Debug, Clone, Serialize)]
pub struct AgentPage {
    /// Agents matching the query.
    pub total: usize,
    /// Page start.
    pub offset: usize,
    /// Page size.
    pub limit: usize,
    /// The directory generation the view was built from.
    pub generation: u64,
    /// The page.
    pub agents: Vec<AgentRow>,
}

/// `GET /dashboard/api/agents/{id}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentDetail {
    /// The table row.
    #[serde(flatten)]
    pub row: AgentRow,
    /// The record exactly as `lookup` returns it.
    pub record: Value,
    /// SHA-256 of the raw Ed25519 identity key, hex in groups of four (its first 32 hex
    /// digits are the id of a verified agent).
    pub fingerprint: Option<String>,
}

#[derive(Debug)]
struct Row {
    entry: Arc<AgentEntry>,
    /// The metadata the haystack was made from (compared by pointer).
    metadata: Arc<Map<String, Value>>,
    hay: Box<str>,
}

#[derive(Debug)]
struct View {
    generation: u64,
    built: Instant,
    rows: Vec<Row>,
}

/// The cached view, shared by every query and the sampler.
#[derive(Debug, Default)]
pub struct Views {
    current: Mutex<Option<Arc<View>>>,
    /// One rebuild at a time.
    rebuilding: Mutex<()>,
}

fn rank(s: &Status) -> u8 {
    match s {
        Status::Online => 0,
        Status::Other(_) => 1,
        Status::Idle => 2,
        Status::Offline => 3,
    }
}

impl Views {
    /// Rebuilds the view if the directory changed since it was built. `force`: even if the
    /// last rebuild was less than [`VIEW_REBUILD_AFTER`] ago (the sampler, before it
    /// announces a change).
    pub fn refresh(&self, directory: &Directory, force: bool) {
        self.view(directory, force);
    }

    fn view(&self, directory: &Directory, force: bool) -> Arc<View> {
        let generation = directory.generation();
        let current = self.current.lock().clone();
        if let Some(v) = &current {
            if v.generation == generation || (!force && v.built.elapsed() < VIEW_REBUILD_AFTER) {
                return v.clone();
            }
        }
        let _one = self.rebuilding.lock();
        if let Some(v) = &*self.current.lock() {
            if v.generation == directory.generation() {
                return v.clone();
            }
        }
        let fresh = Arc::new(build(directory, current.as_deref()));
        *self.current.lock() = Some(fresh.clone());
        fresh
    }

    /// Answers a page query.
    pub fn query(&self, directory: &Directory, q: &AgentQuery) -> Result<AgentPage, QueryError> {
        if q.q.len() > MAX_SEARCH_LEN
            || q.capability.len() > MAX_SEARCH_LEN
            || q.status.len() > MAX_SEARCH_LEN
        {
            return Err(QueryError::TooLong);
        }
        let view = self.view(directory, false);
        let words: Vec<String> = q.q.split_whitespace().map(str::to_lowercase).collect();
        let limit = q.limit.unwrap_or(50).min(MAX_PAGE);
        let (mut total, mut agents) = (0, Vec::new());
        for row in &view.rows {
            let e = &row.entry;
            if !q.capability.is_empty() && !e.capabilities.contains(&q.capability) {
                continue;
            }
            if !words.iter().all(|w| row.hay.contains(w.as_str())) {
                continue;
            }
            let st = e.state();
            if st.retired.is_some() {
                continue;
            }
            if !q.status.is_empty() && st.status.as_str() != q.status {
                continue;
            }
            if total >= q.offset && agents.len() < limit {
                agents.push(table_row(e, &st.status, &st.metadata));
            }
            total += 1;
        }
        Ok(AgentPage {
            total,
            offset: q.offset,
            limit,
            generation: view.generation,
            agents,
        })
    }
}

fn build(directory: &Directory, previous: Option<&View>) -> View {
    let generation = directory.generation();
    let old: HashMap<AgentKey, &Row> = previous
        .map(|v| v.rows.iter().map(|r| (r.entry.key, r)).collect())
        .unwrap_or_default();
    let mut rows: Vec<(u8, Row)> = directory
        .entries()
        .into_iter()
        .map(|entry| {
            let st = entry.state();
            let hay = match old.get(&entry.key) {
                Some(r)
                    if Arc::ptr_eq(&r.entry, &entry) && Arc::ptr_eq(&r.metadata, &st.metadata) =>
                {
                    r.hay.clone()
                }
                _ => haystack(&entry, &st.metadata),
            };
            (
                rank(&st.status),
                Row {
                    entry,
                    metadata: st.metadata,
                    hay,
                },
            )
        })
        .collect();
    rows.sort_unstable_by_key(|(rank, r)| (*rank, r.entry.key));
    View {
        generation,
        built: Instant::now(),
        rows: rows.into_iter().map(|(_, r)| r).collect(),
    }
}

/// What free text is matched against, lower case.
fn haystack(e: &AgentEntry, metadata: &Map<String, Value>) -> Box<str> {
    let mut hay = String::new();
    hay.push_str(&e.id);
    hay.push('\n');
    hay.push_str(&e.address);
    for c in e.capabilities.iter() {
        hay.push('\n');
        hay.push_str(c);
    }
    if let Some(identity) = &e.identity {
        hay.push('\n');
        hay.push_str(identity);
    }
    hay.push('\n');
    hay.push_str(&serde_json::to_string(metadata).unwrap_or_default());
    hay.to_lowercase().into_boxed_str()
}

fn table_row(e: &AgentEntry, status: &Status, metadata: &Map<String, Value>) -> AgentRow {
    AgentRow {
        id: e.id.to_string(),
        address: e.address.to_string(),
        capabilities: e.capabilities.to_vec(),
        status: status.as_str().to_owned(),
        last_seen: e.last_seen(),
        verified: verified(e),
        reachability: reachability(&e.address),
        name: metadata
            .get("name")
            .and_then(Value::as_str)
            .map(|s| s.chars().take(64).collect()),
    }
}

/// The agent detail, if the id names one.
pub fn detail(directory: &Directory, id: &str) -> Option<AgentDetail> {
    let entry = directory.get(parse_id(id)?)?;
    let st = entry.state();
    let mut record = String::new();
    entry.write_record(&mut record);
    Some(AgentDetail {
        row: table_row(&entry, &st.status, &st.metadata),
        record: serde_json::from_str(&record).unwrap_or(Value::Null),
        fingerprint: entry.identity.as_deref().and_then(fingerprint),
    })
}

fn identity_key(e: &AgentEntry) -> Option<m2m_proto::identity::IdentityKey> {
    m2m_proto::identity::IdentityKey::from_b64(e.identity.as_deref()?).ok()
}

/// Whether the agent's id is the one its identity key derives (the hub stores an identity
/// only after verifying the registration signature).
fn verified(e: &AgentEntry) -> bool {
    identity_key(e).is_some_and(|k| k.agent_id() == *e.id)
}

/// SHA-256 of the raw key, hex, in groups of four digits.
pub fn fingerprint(identity_b64: &str) -> Option<String> {
    let key = m2m_proto::identity::IdentityKey::from_b64(identity_b64).ok()?;
    let hex = hex::encode(Sha256::digest(key.0));
    let groups: Vec<&str> = (0..hex.len()).step_by(4).map(|i| &hex[i..i + 4]).collect();
    Some(groups.join(" "))
}

/// What kind of address an agent gave: peers on other machines can dial only `public`
/// ones (or `private` ones on the same network).
pub fn reachability(address: &str) -> &'static str {
    let host = match address.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => address,
    };
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => "loopback",
        Ok(IpAddr::V4(v4)) if v4.is_private() || v4.is_link_local() || v4.is_unspecified() => {
            "private"
        }
        Ok(IpAddr::V6(v6))
            if (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.is_unspecified() =>
        {
            "private"
        }
        Ok(_) => "public",
        Err(_) => "name",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AgentRow as StoredRow;

    fn stored(id: u128, caps: &[&str], status: &str, name: &str) -> StoredRow {
        let mut metadata = Map::new();
        metadata.insert("name".into(), Value::from(name));
        StoredRow {
            id: format!("{id:032x}"),
            address: "10.0.0.1:4000".into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            metadata,
            identity: None,
            status: status.into(),
            last_seen: 1000,
            created_at: 1000,
            hub: String::new(),
            token: String::new(),
            version: 1,
            relay: None,
            reachable: None,
            mailbox: None,
        }
    }

    fn ids(page: &AgentPage) -> Vec<String> {
        page.agents.iter().map(|a| a.id[28..].to_string()).collect()
    }

    #[test]
    fn search_filters_and_pages_over_the_directory() {
        let d = Directory::default();
        d.upsert(&stored(1, &["chat", "translate"], "online", "Alpha Bot"));
        d.upsert(&stored(2, &["chat"], "idle", "beta"));
        d.upsert(&stored(3, &["code"], "offline", "gamma <script>"));
        d.upsert(&stored(4, &["chat"], "busy", "delta"));
        let views = Views::default();
        let q = |q: &str, capability: &str, status: &str| AgentQuery {
            q: q.into(),
            capability: capability.into(),
            status: status.into(),
            ..AgentQuery::default()
        };
        let all = views.query(&d, &q("", "", "")).unwrap();
        // Online, agent-chosen, idle, offline.
        assert_eq!(ids(&all), ["0001", "0004", "0002", "0003"]);
        assert_eq!(all.total, 4);
        assert_eq!(
            ids(&views.query(&d, &q("", "chat", "")).unwrap()),
            ["0001", "0004", "0002"]
        );
        assert_eq!(
            ids(&views.query(&d, &q("alpha BOT", "", "")).unwrap()),
            ["0001"]
        );
        assert_eq!(
            ids(&views.query(&d, &q("<SCRIPT>", "", "")).unwrap()),
            ["0003"]
        );
        assert_eq!(
            ids(&views.query(&d, &q("transl", "", "")).unwrap()),
            ["0001"]
        );
        assert_eq!(ids(&views.query(&d, &q("", "", "busy")).unwrap()), ["0004"]);
        assert!(views
            .query(&d, &q("alpha", "code", ""))
            .unwrap()
            .agents
            .is_empty());
        let page = views
            .query(
                &d,
                &AgentQuery {
                    offset: 1,
                    limit: Some(2),
                    ..AgentQuery::default()
                },
            )
            .unwrap();
        assert_eq!(
            (page.total, ids(&page)),
            (4, vec!["0004".into(), "0002".into()])
        );
        assert_eq!(
            views
                .query(&d, &q(&"x".repeat(MAX_SEARCH_LEN + 1), "", ""))
                .unwrap_err(),
            QueryError::TooLong
        );
    }

    #[test]
    fn a_change_is_seen_by_the_next_query_after_a_refresh() {
        let d = Directory::default();
        let views = Views::default();
        let e = d.upsert(&stored(1, &["chat"], "online", "a")).unwrap();
        assert_eq!(views.query(&d, &AgentQuery::default()).unwrap().total, 1);
        // A status change: live, even before a rebuild.
        d.set(&e, 2, Some(Status::Idle), None, None);
        let idle = AgentQuery {
            status: "idle".into(),
            ..AgentQuery::default()
        };
        assert_eq!(views.query(&d, &idle).unwrap().total, 1);
        // A new agent: the sampler's forced refresh makes it visible at once.
        d.upsert(&stored(2, &["chat"], "online", "b"));
        views.refresh(&d, true);
        let page = views.query(&d, &AgentQuery::default()).unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(page.generation, d.generation());
        // New metadata is searchable after the next rebuild.
        let mut m = Map::new();
        m.insert("name".into(), Value::from("renamed"));
        d.set(&e, 3, None, Some(Arc::new(m)), None);
        views.refresh(&d, true);
        let found = views
            .query(
                &d,
                &AgentQuery {
                    q: "renamed".into(),
                    ..AgentQuery::default()
                },
            )
            .unwrap();
        assert_eq!(ids(&found), ["0001"]);
    }

    #[test]
    fn pages_reach_the_end_of_a_hundred_thousand_agents() {
        let d = Directory::default();
        let n = 100_000u128;
        for i in 0..n {
            let caps: &[&str] = if i % 10 == 0 { &["rare"] } else { &["common"] };
            let status = if i % 4 == 0 { "idle" } else { "online" };
            d.upsert(&stored(i + 1, caps, status, &format!("agent-{i}")));
        }
        let views = Views::default();
        let page = |q: AgentQuery| views.query(&d, &q).unwrap();
        let last = page(AgentQuery {
            offset: 99_990,
            limit: Some(50),
            ..AgentQuery::default()
        });
        assert_eq!((last.total, last.agents.len()), (100_000, 10));
        assert!(
            last.agents.iter().all(|a| a.status == "idle"),
            "idle sort last"
        );
        let rare_idle = page(AgentQuery {
            capability: "rare".into(),
            status: "idle".into(),
            limit: Some(MAX_PAGE + 1),
            ..AgentQuery::default()
        });
        // i % 10 == 0 and i % 4 == 0: every 20th.
        assert_eq!(rare_idle.total, 5_000);
        assert_eq!(rare_idle.agents.len(), MAX_PAGE, "the page size is bounded");
        let one = page(AgentQuery {
            q: "agent-99999\"".into(),
            ..AgentQuery::default()
        });
        assert_eq!(one.total, 1, "free text over the metadata");
    }

    #[test]
    fn reachability_and_fingerprint() {
        assert_eq!(reachability("127.0.0.1:4000"), "loopback");
        assert_eq!(reachability("[::1]:4000"), "loopback");
        assert_eq!(reachability("192.168.1.2:1"), "private");
        assert_eq!(reachability("[fd00::1]:1"), "private");
        assert_eq!(reachability("8.8.8.8:53"), "public");
        assert_eq!(reachability("[2001:db8::1]:1"), "public");
        assert_eq!(reachability("agent.example:1"), "name");
        let key = m2m_proto::identity::Identity::from_secret_bytes(&[7; 32]).public();
        let fp = fingerprint(&key.to_b64()).unwrap();
        assert_eq!(fp.len(), 64 + 15);
        assert_eq!(fp.replace(' ', "")[..32], key.agent_id());
        assert_eq!(fingerprint("not base64"), None);
    }
}
