//! [`MailStore`](super::mail::MailStore) on the SQLite registry's pool. One hub writes
//! the file, so no row locks are taken (a write transaction holds the database).

super::mail::mail_store_impl!(SqliteMail, sqlx::SqlitePool, sqlx::Sqlite, "");
