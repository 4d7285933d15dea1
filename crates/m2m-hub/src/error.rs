//! Errors of the hub library. Clients never see these texts: a storage failure reaches
//! them as `unavailable`, and the details go to the log.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the hub could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The `database` setting is not a URL we understand.
    #[error("unsupported database URL `{0}` (use sqlite://PATH, sqlite::memory: or postgres://…)")]
    UnsupportedDatabase(String),
    /// The registry could not be opened or migrated.
    #[error("registry: {0}")]
    Store(#[from] StoreError),
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Reading the TLS certificate or key failed.
    #[error("TLS file {path}: {reason}")]
    Tls {
        /// Which file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Any other socket error of the server.
    #[error("server: {0}")]
    Io(#[from] io::Error),
}

/// A failure of the registry's database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database driver failed (connection lost, timeout, constraint, …).
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Schema migration failed at start.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row could not be read back (corrupt JSON, bad id).
    #[error("stored row {id}: {reason}")]
    CorruptRow {
        /// The row's id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The writer task is gone (hub shutting down).
    #[error("registry writer stopped")]
    WriterGone,
}
