//! The mailbox bench's database: a fresh one per run (a SQLite file in a temporary
//! directory, or a new PostgreSQL database beside the one `--postgres` names, dropped
//! afterwards), and the bytes its stored mail takes.
//!
//! SQLite: the file's size after a `wal_checkpoint(TRUNCATE)` from the bench's own
//! connection (the write-ahead log folded in, so the figure is pages the mail holds, not
//! log). PostgreSQL: `pg_total_relation_size('m2m_mail')` (table, indexes, TOAST).

use anyhow::Context;
use sqlx::{Connection, PgConnection, SqliteConnection};

use crate::hubs::db;

/// One run's database.
pub(super) enum Database {
    Sqlite { dir: tempfile::TempDir },
    Postgres { server: String, name: String },
}

impl Database {
    /// A fresh database: on the PostgreSQL server `postgres`, or a SQLite file.
    pub(super) async fn create(postgres: Option<&str>) -> anyhow::Result<Database> {
        match postgres {
            None => Ok(Database::Sqlite {
                dir: tempfile::tempdir().context("creating a temporary directory")?,
            }),
            Some(server) => {
                let name = format!("m2m_bench_mailbox_{:08x}", rand::random::<u32>());
                let mut admin = db::admin(server).await?;
                db::create(&mut admin, &name).await?;
                Ok(Database::Postgres {
                    server: server.to_owned(),
                    name,
                })
            }
        }
    }

    /// `sqlite` or `postgres`.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Database::Sqlite { .. } => "sqlite",
            Database::Postgres { .. } => "postgres",
        }
    }

    /// What the byte figures measure.
    pub(super) fn how(&self) -> &'static str {
        match self {
            Database::Sqlite { .. } => "sqlite file size after wal_checkpoint(TRUNCATE)",
            Database::Postgres { .. } => "pg_total_relation_size('m2m_mail')",
        }
    }

    fn sqlite_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
        dir.path().join("hub.db")
    }

    /// The hub's database URL.
    pub(super) fn url(&self) -> String {
        match self {
            Database::Sqlite { dir } => format!("sqlite://{}", Self::sqlite_path(dir).display()),
            Database::Postgres { server, name } => {
                // Checked when the database was created.
                db::with_database(server, name).unwrap_or_default()
            }
        }
    }

    /// Bytes the mail takes now (see the module's note).
    pub(super) async fn mail_bytes(&self) -> anyhow::Result<i64> {
        match self {
            Database::Sqlite { dir } => {
                let path = Self::sqlite_path(dir);
                let mut c = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                    .await
                    .context("opening the hub's SQLite file")?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut c)
                    .await
                    .context("checkpointing the hub's SQLite file")?;
                c.close().await.ok();
                let len = std::fs::metadata(&path)
                    .with_context(|| format!("reading the size of {}", path.display()))?
                    .len();
                Ok(len as i64)
            }
            Database::Postgres { .. } => {
                let mut c = PgConnection::connect(&self.url())
                    .await
                    .context("connecting to the bench database")?;
                let (bytes,): (i64,) = sqlx::query_as("SELECT pg_total_relation_size('m2m_mail')")
                    .fetch_one(&mut c)
                    .await
                    .context("pg_total_relation_size('m2m_mail'): no mailbox table?")?;
                c.close().await.ok();
                Ok(bytes)
            }
        }
    }

    /// Drops the PostgreSQL database (the temporary directory goes with `self`).
    pub(super) async fn remove(self) {
        if let Database::Postgres { server, name } = &self {
            let dropped = async {
                let mut admin = db::admin(server).await?;
                db::drop(&mut admin, name).await
            }
            .await;
            if let Err(e) = dropped {
                tracing::warn!(error = %e, database = %name, "could not drop the bench database");
            }
        }
    }
}
