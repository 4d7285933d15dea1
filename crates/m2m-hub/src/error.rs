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
    #[error("TLS file {path}: {source}")]
    Tls {
        /// Which file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: TlsFileError,
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
    /// A stored row could not be read back (corrupt JSON).
    #[error("stored row {id}: {column}: {source}")]
    CorruptRow {
        /// The row's id.
        id: String,
        /// The column that does not parse.
        column: &'static str,
        /// What is wrong with it.
        #[source]
        source: serde_json::Error,
    },
    /// The writer task is gone (hub shutting down).
    #[error("registry writer stopped")]
    WriterGone,
}

/// What is wrong with a TLS certificate or key file.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file could not be read (or its PEM could not be parsed).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// rustls refused the certificate chain or the key.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The file holds no certificate.
    #[error("no certificate found")]
    NoCertificate,
    /// The file holds no private key.
    #[error("no private key found")]
    NoPrivateKey,
}
