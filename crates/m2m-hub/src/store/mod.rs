//! The durable registry: one [`Registry`] interface, with an embedded SQLite
//! ([`SqliteRegistry`]) and a shared PostgreSQL ([`PostgresRegistry`]) implementation.
//!
//! The registry is the truth about agents; the hub's in-memory directory is a mirror of it
//! (see the crate doc). Everything here is row-level: every write returns the row's new
//! `version`, so the mirror can apply changes in order no matter which path (own write,
//! sweep, change feed) brings them.
//!
//! PostgreSQL also rings a doorbell: every transaction that changes agent rows sends
//! `pg_notify(`[`FEED_CHANNEL`]`, <its smallest new version>)`, delivered at commit, and
//! [`Registry::listen`] gives a hub a [`ChangeListener`] of them (see the crate doc).
//!
//! Each hub also keeps a row of its own ([`HubRow`], table `m2m_hubs`): written at start
//! ([`Registry::announce`]), kept fresh ([`Registry::alive`]), deleted at a clean shutdown
//! ([`Registry::retire`]); [`Registry::expire_hubs`] releases the agents of hubs that
//! stopped refreshing theirs.

pub mod mail;
mod mail_batch;
mod mail_postgres;
mod mail_sql;
mod mail_sql_store;
mod mail_sqlite;
mod postgres;
mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde_json::{Map, Value};
use sqlx::Row;

pub use postgres::PostgresRegistry;
pub use sqlite::SqliteRegistry;

use crate::config::StorageTuning;
use crate::error::{HubError, StoreError};

/// A boxed future borrowing the registry (keeps [`Registry`] usable as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One stored agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    /// 32 lowercase hex characters.
    pub id: String,
    /// `host:port` as the hub stored it.
    pub address: String,
    /// Capabilities.
    pub capabilities: Vec<String>,
    /// Metadata object.
    pub metadata: Map<String, Value>,
    /// 2.1: verified identity key (base64).
    pub identity: Option<String>,
    /// Status string.
    pub status: String,
    /// Last seen, ms since the epoch.
    pub last_seen: i64,
    /// Registered, ms since the epoch.
    pub created_at: i64,
    /// Instance id of the hub holding the agent's WebSocket.
    pub hub: String,
    /// Token of the registration that wrote the row (new on every `register`). Writes made
    /// on behalf of a WebSocket carry the token of the registration they belong to and
    /// change nothing once the row was registered again (2.1 ids outlive WebSockets).
    /// Stored in the `session` column.
    pub token: String,
    /// Change counter; larger is newer.
    pub version: i64,
    /// Relay: the public WebSocket URL of the hub the agent is attached to (docs/RELAY.md);
    /// cleared when it goes offline.
    pub relay: Option<String>,
    /// Relay: `direct` or `relay` (the reachability probe), when known.
    pub reachable: Option<String>,
    /// Mailbox: the signed mailbox key as JSON text (docs/MAILBOX.md), when published.
    pub mailbox: Option<String>,
}

/// A change to the registry. [`Registry::apply`] commits a batch of them in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A registration: a new row, or (2.1, the same id registered again) the row replaced
    /// whole except `created_at`.
    Insert(AgentRow),
    /// New status; `last_seen` moves forward when given. Only while `token` is the row's.
    SetStatus {
        /// Agent id.
        id: String,
        /// Registration token the change belongs to.
        token: String,
        /// New status.
        status: String,
        /// Seen at this time (never moves backwards).
        last_seen: Option<i64>,
    },
    /// New status and metadata (the `status` action). Only while `token` is the row's.
    Update {
        /// Agent id.
        id: String,
        /// Registration token the change belongs to.
        token: String,
        /// New status.
        status: String,
        /// The whole merged metadata.
        metadata: Map<String, Value>,
        /// Seen at this time (never moves backwards).
        last_seen: i64,
    },
    /// The relay fields of the record (docs/RELAY.md "Records"). Only while `token` is the
    /// row's.
    SetRelay {
        /// Agent id.
        id: String,
        /// Registration token the change belongs to.
        token: String,
        /// The hub's public WebSocket URL while attached; `None` clears it.
        relay: Option<String>,
        /// `direct` / `relay`, when known.
        reachable: Option<String>,
    },
}

/// A status the registry changed by itself (sweep, release). Going `offline` clears the
/// record's `relay` everywhere (no WebSocket holds the agent any more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// Agent id.
    pub id: String,
    /// New status.
    pub status: String,
    /// Version of the change.
    pub version: i64,
}

/// The thresholds of one sweep, as absolute times (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepCutoffs {
    /// Agents not `idle`/`offline` last seen before this become `idle`.
    pub idle_before: i64,
    /// `idle` agents last seen before this become `offline`.
    pub offline_before: i64,
    /// `offline` agents last seen before this are deleted.
    pub purge_before: i64,
    /// `offline` 2.0 agents (no identity) last seen before this are deleted too.
    pub purge_anonymous_before: i64,
    /// `offline` agents with a mailbox key are kept until last seen before this (mail to
    /// them may still be stored: `MAX_TTL`).
    pub purge_mailbox_before: i64,
}

/// What one sweep changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Status changes.
    pub changed: Vec<StatusChange>,
    /// Deleted ids.
    pub purged: Vec<String>,
}

/// Everything at start.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Every row.
    pub rows: Vec<AgentRow>,
    /// Read the change feed from here on.
    pub watermark: i64,
}

/// The PostgreSQL channel of the change doorbell. Its payload is a version in decimal: the
/// smallest version the notifying transaction wrote, so a hub reading the feed from just
/// below it sees every row of that transaction even when it commits after newer ones.
pub const FEED_CHANNEL: &str = "m2m_changes";

/// One hub instance on the registry (table `m2m_hubs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRow {
    /// Instance id (the `hub` of the agents it holds; [`AgentRow::hub`]).
    pub id: String,
    /// Its public WebSocket URL (`public_url`, or the address it listens on).
    pub url: String,
    /// Started, ms since the epoch.
    pub started_at: i64,
    /// Last said it is alive, ms since the epoch.
    pub alive_at: i64,
}

/// What [`Registry::expire_hubs`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiredHubs {
    /// Instance ids whose rows were deleted.
    pub hubs: Vec<String>,
    /// Their agents, now `offline` (as [`Registry::release`] does it).
    pub changed: Vec<StatusChange>,
}

/// What a [`ChangeListener`] heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bell {
    /// A transaction committed changes from this version on.
    Rang(i64),
    /// Mail was stored for this agent id (channel `m2m_mail`, docs/MAILBOX.md).
    Mail(u128),
    /// The listener's connection was lost and is back: doorbells in between are lost (read
    /// the feed to catch up). Also a payload that is not a version.
    Lost,
}

/// Hears the change doorbell ([`FEED_CHANNEL`]) on a connection of its own.
pub trait ChangeListener: Send + fmt::Debug {
    /// The next doorbell. An error means the listener is broken: make a new one.
    fn next(&mut self) -> BoxFuture<'_, Result<Bell, StoreError>>;
}

/// The durable registry of agents.
pub trait Registry: Send + Sync + fmt::Debug {
    /// `"sqlite"` or `"postgres"` (logs, metrics).
    fn kind(&self) -> &'static str;
    /// Whether other hubs may write the same registry (then the change feed is read).
    fn shared(&self) -> bool;
    /// All rows, and the change-feed watermark they reflect.
    fn load(&self) -> BoxFuture<'_, Result<Loaded, StoreError>>;
    /// Rows changed after `version`, oldest change first, at most `limit`.
    fn changes_since(
        &self,
        version: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<AgentRow>, StoreError>>;
    /// One row.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<AgentRow>, StoreError>>;
    /// Commits `writes` in one transaction, in order; returns each row's new version
    /// (`None`: no such row, or the row was registered again since: another `session`).
    fn apply<'a>(
        &'a self,
        writes: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Option<i64>>, StoreError>>;
    /// Moves `last_seen` forward for many agents (the batched heartbeats).
    fn touch<'a>(&'a self, seen: &'a [(String, i64)]) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Runs the status lifecycle. `None`: another hub is sweeping right now.
    fn sweep(&self, cut: SweepCutoffs) -> BoxFuture<'_, Result<Option<SweepOutcome>, StoreError>>;
    /// Marks `offline` every live agent held by `hub` (all live agents when `None`).
    fn release<'a>(
        &'a self,
        hub: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StatusChange>, StoreError>>;
    /// A listener of the change doorbell; `None` when the registry has no other writers
    /// (SQLite).
    fn listen(&self) -> BoxFuture<'_, Result<Option<Box<dyn ChangeListener>>, StoreError>>;
    /// Writes this hub's instance row (replacing one of the same id).
    fn announce<'a>(&'a self, hub: &'a HubRow) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Moves `alive_at` of hub `id` forward; `false` when its row is gone (another hub
    /// expired it).
    fn alive<'a>(&'a self, id: &'a str, at: i64) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Deletes hub `id`'s row (clean shutdown, after [`Registry::release`]).
    fn retire<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Hubs other than `except` whose `alive_at` is before `alive_before`: their live agents
    /// go offline (as by [`Registry::release`]) and their rows are deleted, in one
    /// transaction. `None`: another hub is doing it right now.
    fn expire_hubs<'a>(
        &'a self,
        alive_before: i64,
        except: &'a str,
    ) -> BoxFuture<'a, Result<Option<ExpiredHubs>, StoreError>>;
    /// Every hub instance row, oldest start first.
    fn instances(&self) -> BoxFuture<'_, Result<Vec<HubRow>, StoreError>>;
    /// Cheap round trip (health of the database).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Closes the connections.
    fn close(&self) -> BoxFuture<'_, ()>;
    /// The mail storage on the same database (docs/MAILBOX.md).
    fn mail(&self) -> std::sync::Arc<dyn mail::MailStore>;
}

/// Opens the registry named by `url` and runs its migrations.
pub async fn open(url: &str, tuning: &StorageTuning) -> Result<Box<dyn Registry>, HubError> {
    if url.starts_with("sqlite:") {
        Ok(Box::new(SqliteRegistry::open(url, tuning).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(PostgresRegistry::open(url, tuning).await?))
    } else {
        Err(HubError::UnsupportedDatabase(url.to_owned()))
    }
}

/// Columns every query selects, in this order.
pub(crate) const COLUMNS: &str =
    "id, address, capabilities, metadata, identity, status, last_seen, created_at, hub, session, \
     version, relay, reachable, mailbox";

/// Columns of `m2m_hubs`, in [`HubRow`] order.
pub(crate) const HUB_COLUMNS: &str = "id, url, started_at, alive_at";

/// Decodes a row selected with [`HUB_COLUMNS`].
pub(crate) fn decode_hub<R>(row: &R) -> Result<HubRow, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(HubRow {
        id: row.try_get("id")?,
        url: row.try_get("url")?,
        started_at: row.try_get("started_at")?,
        alive_at: row.try_get("alive_at")?,
    })
}

/// Decodes a row selected with [`COLUMNS`]. Corrupt JSON is an error, not a panic.
pub(crate) fn decode_row<R>(row: &R) -> Result<AgentRow, StoreError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let capabilities: String = row.try_get("capabilities")?;
    let metadata: String = row.try_get("metadata")?;
    let corrupt = |column: &'static str| {
        let id = id.clone();
        move |source| StoreError::CorruptRow { id, column, source }
    };
    let capabilities: Vec<String> =
        serde_json::from_str(&capabilities).map_err(corrupt("capabilities"))?;
    let metadata: Map<String, Value> =
        serde_json::from_str(&metadata).map_err(corrupt("metadata"))?;
    Ok(AgentRow {
        address: row.try_get("address")?,
        capabilities,
        metadata,
        identity: row.try_get("identity")?,
        status: row.try_get("status")?,
        last_seen: row.try_get("last_seen")?,
        created_at: row.try_get("created_at")?,
        hub: row.try_get("hub")?,
        token: row.try_get("session")?,
        version: row.try_get("version")?,
        relay: row.try_get("relay")?,
        reachable: row.try_get("reachable")?,
        mailbox: row.try_get("mailbox")?,
        id,
    })
}

/// JSON text of a capability list (cannot fail for strings).
pub(crate) fn json_text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}
