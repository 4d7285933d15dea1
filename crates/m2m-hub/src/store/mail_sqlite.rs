//! [`MailStore`](super::mail::MailStore) on the SQLite registry's pool. One hub writes
//! the file, so no row locks are taken (a write transaction holds the database) and no
//! other hub needs a doorbell (the storing hub rings its own subscription).

use crate::error::StoreError;

async fn lock_usage(_: &mut sqlx::SqliteConnection, _: &[String]) -> Result<(), StoreError> {
    Ok(())
}

/// Ends the read of a storing batch's usage rows: nothing to lock.
const LOCK_ROWS: &str = "";

async fn ring_mail(_: &mut sqlx::SqliteConnection, _: &str) -> Result<(), StoreError> {
    Ok(())
}

super::mail_sql_store::mail_store_fns!(sqlx::SqlitePool, sqlx::Sqlite);
super::mail_sql::mail_store_impl!(SqliteMail, sqlx::SqlitePool, sqlx::Sqlite);
