//! [`MailStore`](super::mail::MailStore) on the PostgreSQL registry's pool, shared by every
//! hub on the database. A storing transaction locks its usage rows in key order first, so
//! two hubs storing for overlapping recipients and senders queue instead of deadlocking.

super::mail::mail_store_impl!(
    PostgresMail,
    sqlx::PgPool,
    sqlx::Postgres,
    "SELECT 1 FROM m2m_mail_usage WHERE key = ANY($1) ORDER BY key FOR UPDATE"
);
