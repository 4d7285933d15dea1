//! The bench's own PostgreSQL connection: a fresh database per mode, and the server's
//! counters of it (`pg_stat_database`) before and after.

use anyhow::Context;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, Row};

/// `pg_stat_database` counters of one database.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct DbCounters {
    /// Transactions committed.
    pub(super) commits: i64,
    /// `tup_returned`: rows read by sequential scans and index entries by index scans.
    pub(super) returned: i64,
    /// `tup_fetched`: table rows fetched by index scans.
    pub(super) fetched: i64,
    /// Rows inserted, updated or deleted.
    pub(super) rows_written: i64,
}

impl DbCounters {
    /// `self - before`, per change as well.
    pub(super) fn delta(&self, before: &DbCounters, changes: usize) -> Value {
        let (c, r, f, w) = (
            self.commits - before.commits,
            self.returned - before.returned,
            self.fetched - before.fetched,
            self.rows_written - before.rows_written,
        );
        let per = |x: i64| crate::stats::round3(x as f64 / changes.max(1) as f64);
        json!({
            "commits": c,
            "tup_returned": r,
            "tup_fetched": f,
            "rows_written": w,
            "commits_per_change": per(c),
            "tup_returned_per_change": per(r),
            "tup_fetched_per_change": per(f),
        })
    }
}

/// A server URL with another database name.
pub(crate) fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").context("not a postgres:// URL")? + 3;
    let path = base[scheme_end..].find('/').map(|i| scheme_end + i);
    let server = path.map_or(base, |i| &base[..i]);
    Ok(match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    })
}

/// Connects to the server (the database `admin` names).
pub(crate) async fn admin(url: &str) -> anyhow::Result<PgConnection> {
    PgConnection::connect(url)
        .await
        .with_context(|| "cannot connect to --postgres".to_owned())
}

/// Creates database `name`.
pub(crate) async fn create(admin: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(admin)
        .await
        .with_context(|| format!("cannot create database {name}"))?;
    Ok(())
}

/// Drops database `name` (its connections too).
pub(crate) async fn drop(admin: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(admin)
        .await?;
    Ok(())
}

/// The counters of database `name` now.
pub(super) async fn counters(admin: &mut PgConnection, name: &str) -> anyhow::Result<DbCounters> {
    // A fresh snapshot (statistics are cached per transaction otherwise).
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *admin)
        .await?;
    let row = sqlx::query(
        "SELECT xact_commit, tup_returned, tup_fetched, \
         tup_inserted + tup_updated + tup_deleted AS rows_written \
         FROM pg_stat_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_one(admin)
    .await?;
    Ok(DbCounters {
        commits: row.try_get("xact_commit")?,
        returned: row.try_get("tup_returned")?,
        fetched: row.try_get("tup_fetched")?,
        rows_written: row.try_get("rows_written")?,
    })
}
