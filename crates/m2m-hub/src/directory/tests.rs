//! Tests of the mirror and the listing order.

use super::json::PeerView;
use super::*;
use tokio_util::sync::CancellationToken;

pub(super) fn row(id: u128, last_seen: i64, caps: &[&str], status: &str) -> AgentRow {
    AgentRow {
        id: format!("{id:032x}"),
        address: "127.0.0.1:1".into(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        metadata: Map::new(),
        identity: None,
        status: status.into(),
        last_seen,
        created_at: last_seen,
        hub: String::new(),
        token: String::new(),
        version: 1,
        relay: None,
        reachable: None,
        mailbox: None,
    }
}

pub(super) fn ids(views: &[PeerView]) -> Vec<u128> {
    views.iter().map(|v| v.entry.key).collect()
}

#[test]
fn discover_orders_by_whole_seconds_then_oldest_touch_first() {
    let d = Directory::default();
    let now = 100_000;
    d.upsert(&row(1, now - 500, &[], "online"));
    d.upsert(&row(2, now - 300, &[], "online"));
    d.upsert(&row(3, now - 2500, &[], "online"));
    d.upsert(&row(4, now - 1200, &[], "busy"));
    d.upsert(&row(5, now - 100, &[], "offline"));
    let all = Filter {
        limit: 100,
        ..Filter::default()
    };
    // Rounded seconds: 2 → 0 s; 4 (1.2 s) and 1 (0.5 s) → 1 s, older first; 3 → 3 s.
    assert_eq!(ids(&d.discover_views(now, &all)), vec![2, 4, 1, 3]);
    assert_eq!(ids(&d.list(now, &all)), vec![2, 1, 4, 3]);
    let page = Filter {
        limit: 2,
        offset: 1,
        ..Filter::default()
    };
    assert_eq!(ids(&d.discover_views(now, &page)), vec![4, 1]);
    let busy = Filter {
        status: Some("busy"),
        limit: 100,
        ..Filter::default()
    };
    assert_eq!(ids(&d.discover_views(now, &busy)), vec![4]);
}

#[test]
fn capability_filters_match_any() {
    let d = Directory::default();
    d.upsert(&row(1, 1000, &["a", "b"], "online"));
    d.upsert(&row(2, 2000, &["b"], "online"));
    d.upsert(&row(3, 3000, &["c"], "idle"));
    let caps = vec!["a".to_string(), "c".to_string()];
    let f = Filter {
        capabilities: &caps,
        limit: 10,
        ..Filter::default()
    };
    assert_eq!(ids(&d.discover_views(3000, &f)), vec![3, 1]);
    assert_eq!(d.find_keys("b", 10, 0), vec![2, 1]);
    assert!(
        d.find_keys("c", 10, 0).is_empty(),
        "find lists online agents only"
    );
    // One capability, listed twice by an agent, and `/agents` order.
    d.upsert(&row(4, 2500, &["b", "b"], "online"));
    let b = vec!["b".to_string()];
    let f = Filter {
        capabilities: &b,
        limit: 10,
        ..Filter::default()
    };
    // 2 and 4 round to 1 s (older first), 1 to 2 s.
    assert_eq!(ids(&d.discover_views(3000, &f)), vec![2, 4, 1]);
    assert_eq!(ids(&d.list(3000, &f)), vec![4, 2, 1]);
    assert_eq!(d.find_keys("b", 10, 0), vec![4, 2, 1]);
    let f = Filter {
        capabilities: &caps,
        limit: 10,
        ..Filter::default()
    };
    assert_eq!(ids(&d.list(3000, &f)), vec![3, 1]);
}

#[test]
fn newer_versions_win_and_counts_follow() {
    let d = Directory::default();
    let e = d.upsert(&row(7, 10, &[], "online")).unwrap();
    d.set(&e, 5, Some(Status::Idle), None, None);
    d.set(&e, 3, Some(Status::Online), None, None);
    assert_eq!(e.status(), Status::Idle);
    let c = d.counts();
    assert_eq!((c.total, c.online, c.idle), (1, 0, 1));
    d.set_status(&e.id, "offline", 6);
    assert_eq!(d.purge_offline(11, 11, 11), 1);
    assert_eq!(d.counts().total, 0);
}

#[test]
fn offline_records_with_a_mailbox_key_are_kept_until_the_mailbox_cutoff() {
    let d = Directory::default();
    let key = r#"{"key":"a2V5","issued":1,"sig":"c2ln"}"#;
    let mut r = row(1, 6, &["chat"], "offline");
    r.identity = Some("a2V5".into());
    r.mailbox = Some(key.into());
    d.upsert(&r);
    let mut plain = row(2, 6, &["chat"], "offline");
    plain.identity = Some("a2V5".into());
    d.upsert(&plain);
    // Past the usual retention (11) but not the mailbox one (5): only the keyless goes.
    assert_eq!(d.purge_offline(11, 11, 5), 1);
    assert_eq!(d.counts().total, 1);
    assert_eq!(d.purge_offline(11, 11, 7), 1);
    assert_eq!(d.counts().total, 0);
}

#[test]
fn a_newer_registration_replaces_the_entry_and_evicts_its_holder() {
    let d = Directory::default();
    let holder = |serial| Holder {
        serial,
        evict: CancellationToken::new(),
    };
    let mut first = row(3, 10, &["a"], "online");
    first.token = "s1".into();
    let (h1, h2) = (holder(1), holder(2));
    let old = d.register(&first, h1.clone()).unwrap();

    // An older registration arriving late (feed) changes nothing.
    let mut stale = row(3, 10, &["z"], "online");
    stale.token = "s0".into();
    stale.version = 0;
    assert!(Arc::ptr_eq(&d.upsert(&stale).unwrap(), &old));

    let mut second = row(3, 20, &["b"], "busy");
    second.token = "s2".into();
    second.version = 2;
    let new = d.register(&second, h2.clone()).unwrap();
    assert!(!Arc::ptr_eq(&old, &new));
    assert!(old.is_replaced() && !new.is_retired());
    assert!(
        h1.evict.is_cancelled(),
        "the older WebSocket is told to close"
    );
    assert!(!h2.evict.is_cancelled());
    assert_eq!(&*new.capabilities, ["b".to_string()]);
    // The old WebSocket's offline mark reaches nothing.
    d.set(&old, 9, Some(Status::Offline), None, None);
    d.force_status(&old, Status::Offline);
    assert_eq!(new.status(), Status::Other("busy".into()));
    let c = d.counts();
    assert_eq!((c.total, c.online, c.offline), (1, 0, 0));

    // The same WebSocket registering again is not evicted.
    let mut third = row(3, 30, &["b"], "online");
    third.token = "s3".into();
    third.version = 3;
    let again = d.register(&third, holder(2)).unwrap();
    assert!(new.is_replaced() && !again.is_retired());
    assert!(!h2.evict.is_cancelled());
    assert_eq!(d.counts().online, 1);
}
