//! [`MailStore`](super::mail::MailStore) on the PostgreSQL registry's pool, shared by every
//! hub on the database. A storing transaction locks its usage rows in key order first, so
//! two hubs storing for overlapping recipients and senders queue instead of deadlocking;
//! it rings `m2m_mail` (payload the recipient id) so the recipient's subscription on any
//! hub hears of the new mail at commit.
//!
//! Every store, ack and purge takes the total row (`*`) first, so mail writes queue on it
//! one at a time across all hubs: exact shared quotas and no deadlock between a delete
//! and a store of the same id, at the price of a few thousand mail writes a second.

use crate::error::StoreError;

async fn lock_usage(tx: &mut sqlx::PgConnection, keys: &[String]) -> Result<(), StoreError> {
    sqlx::query("SELECT 1 FROM m2m_mail_usage WHERE key = ANY($1) ORDER BY key FOR UPDATE")
        .bind(keys)
        .execute(tx)
        .await?;
    Ok(())
}

/// Ends the read of a storing batch's usage rows: locked, in key order.
const LOCK_ROWS: &str = " ORDER BY key FOR UPDATE";

async fn ring_mail(tx: &mut sqlx::PgConnection, recipient: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::defaults::mail::MAIL_CHANNEL)
        .bind(recipient)
        .execute(tx)
        .await?;
    Ok(())
}

super::mail_sql_store::mail_store_fns!(sqlx::PgPool, sqlx::Postgres);
super::mail_sql::mail_store_impl!(PostgresMail, sqlx::PgPool, sqlx::Postgres);
