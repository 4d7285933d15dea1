//! The in-memory half of a set-based mail store: given a batch, the messages already
//! stored under its (recipient, id) pairs and the usage counters of its keys (read under
//! the transaction's locks), decides each message's outcome in order, exactly as storing
//! them one at a time would, and sums what the accepted ones add to each counter.
//!
//! A duplicate (already stored, or stored earlier in the same batch) stores nothing and
//! takes no quota; a message over any of its three quotas (recipient, sender, total) is
//! `Full` and takes nothing; a message refused as `Full` does not make a later one of the
//! same (recipient, id) a duplicate (as one at a time: the refused row was never kept).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::mail::{usage_keys, MailQuotas, NewMail, StoreOutcome};

/// What a batch does to the database.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// One outcome per message, in order.
    pub(crate) outcomes: Vec<StoreOutcome>,
    /// The indexes of the messages to insert.
    pub(crate) accepted: Vec<usize>,
    /// What to add to each usage key (messages, bytes), in key order.
    pub(crate) deltas: BTreeMap<String, (i64, i64)>,
    /// The recipients that got mail (one doorbell each), in order.
    pub(crate) rung: Vec<String>,
}

/// Decides the batch. `stored` maps (recipient, id) to the stored expiry; `usage` maps
/// a key to its counters (a key not there counts as zero).
pub(crate) fn plan(
    mails: &[NewMail],
    stored: &HashMap<(String, String), i64>,
    usage: &HashMap<String, (i64, i64)>,
    q: &MailQuotas,
) -> Plan {
    let mut p = Plan::default();
    let mut now_usage: HashMap<String, (i64, i64)> = usage.clone();
    let mut in_batch: HashMap<(&str, &str), i64> = HashMap::new();
    let mut rung = BTreeSet::new();
    for (i, m) in mails.iter().enumerate() {
        let pair = (m.recipient.as_str(), m.id.as_str());
        if let Some(e) = in_batch.get(&pair) {
            p.outcomes.push(StoreOutcome::Duplicate { expires_at: *e });
            continue;
        }
        if let Some(e) = stored.get(&(m.recipient.clone(), m.id.clone())) {
            p.outcomes.push(StoreOutcome::Duplicate { expires_at: *e });
            continue;
        }
        let n = m.sealed.len() as i64;
        let keys = usage_keys(&m.recipient, &m.sender);
        let limits = [
            (q.recipient_messages, q.recipient_bytes),
            (q.sender_messages, q.sender_bytes),
            (i64::MAX, q.budget_bytes),
        ];
        let fits = keys.iter().zip(limits).all(|(key, (max_m, max_b))| {
            let (um, ub) = now_usage.get(key).copied().unwrap_or_default();
            um.checked_add(1).is_some_and(|v| v <= max_m)
                && ub.checked_add(n).is_some_and(|v| v <= max_b)
        });
        if !fits {
            p.outcomes.push(StoreOutcome::Full);
            continue;
        }
        for key in keys {
            let u = now_usage.entry(key.clone()).or_default();
            u.0 += 1;
            u.1 += n;
            let d = p.deltas.entry(key).or_default();
            d.0 += 1;
            d.1 += n;
        }
        in_batch.insert(pair, m.expires_at);
        if rung.insert(m.recipient.as_str()) {
            p.rung.push(m.recipient.clone());
        }
        p.accepted.push(i);
        p.outcomes.push(StoreOutcome::Stored {
            expires_at: m.expires_at,
        });
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(to: &str, id: &str, from: &str, n: usize) -> NewMail {
        NewMail {
            recipient: to.into(),
            id: id.into(),
            sender: from.into(),
            sealed: vec![0; n],
            stored_at: 1,
            expires_at: 100,
        }
    }

    const Q: MailQuotas = MailQuotas {
        recipient_messages: 2,
        recipient_bytes: 1000,
        sender_messages: 3,
        sender_bytes: 1000,
        budget_bytes: 50,
    };

    #[test]
    fn mixed_batch_decides_in_order() {
        let stored = HashMap::from([(("a".to_owned(), "old".to_owned()), 7)]);
        let usage = HashMap::from([("r:a".to_owned(), (1, 10)), ("*".to_owned(), (1, 10))]);
        let mails = [
            mail("a", "old", "s", 5), // already stored
            mail("a", "m1", "s", 5),  // stored: r:a reaches 2
            mail("a", "m1", "s", 5),  // twice in the batch
            mail("a", "m2", "s", 5),  // r:a is full
            mail("b", "m2", "s", 40), // total bytes: 10 + 5 + 40 > 50
            mail("b", "m3", "s", 35), // fits: 50
            mail("b", "m4", "s", 1),  // total bytes full
            mail("a", "m2", "s", 1),  // still full, not a duplicate of the refused one
        ];
        let p = plan(&mails, &stored, &usage, &Q);
        assert_eq!(
            p.outcomes,
            vec![
                StoreOutcome::Duplicate { expires_at: 7 },
                StoreOutcome::Stored { expires_at: 100 },
                StoreOutcome::Duplicate { expires_at: 100 },
                StoreOutcome::Full,
                StoreOutcome::Full,
                StoreOutcome::Stored { expires_at: 100 },
                StoreOutcome::Full,
                StoreOutcome::Full,
            ]
        );
        assert_eq!(p.accepted, vec![1, 5]);
        assert_eq!(p.deltas.get("*"), Some(&(2, 40)));
        assert_eq!(p.deltas.get("r:a"), Some(&(1, 5)));
        assert_eq!(p.deltas.get("r:b"), Some(&(1, 35)));
        assert_eq!(p.deltas.get("s:s"), Some(&(2, 40)));
        assert_eq!(p.rung, vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn refused_then_room_stores_the_retry() {
        let q = MailQuotas {
            sender_messages: 1,
            ..Q
        };
        // The sender is full for the first; nothing frees room, so the same id stays full.
        let usage = HashMap::from([("s:s".to_owned(), (1, 1))]);
        let p = plan(
            &[mail("a", "x", "s", 1), mail("a", "x", "t", 1)],
            &HashMap::new(),
            &usage,
            &q,
        );
        assert_eq!(
            p.outcomes,
            vec![StoreOutcome::Full, StoreOutcome::Stored { expires_at: 100 }]
        );
        assert_eq!(p.accepted, vec![1]);
    }
}
