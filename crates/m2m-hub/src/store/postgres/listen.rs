//! PostgreSQL: the change doorbell's listener, on a connection of its own (sqlx's
//! `PgListener` over a one-connection pool outside the registry's pool, so a busy pool never
//! delays a doorbell and a listener never holds a pool slot).
//!
//! sqlx reconnects a lost listener connection inside `try_recv` (and listens again) before
//! it reports the loss as `Ok(None)`: that is [`Bell::Lost`], after which the hub reads the
//! feed to catch up with what rang meanwhile.

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::defaults::LISTENER_CONNECT_TIMEOUT;
use crate::error::StoreError;
use crate::store::{Bell, BoxFuture, ChangeListener, FEED_CHANNEL};

/// `application_name` of the listener's connection (operators and tests find it in
/// `pg_stat_activity` by this).
pub(crate) const LISTENER_APPLICATION: &str = "m2m-hub-listener";

/// The doorbell listener of one hub.
pub(super) struct Doorbell {
    listener: PgListener,
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorbell").finish_non_exhaustive()
    }
}

impl Doorbell {
    /// Connects (a pool of one connection, never recycled) and listens.
    pub(super) async fn connect(options: &PgConnectOptions) -> Result<Doorbell, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(LISTENER_CONNECT_TIMEOUT)
            .connect_lazy_with(options.clone().application_name(LISTENER_APPLICATION));
        let mut listener = PgListener::connect_with(&pool).await?;
        // The pool is this listener's alone; nothing closes it but dropping the listener.
        listener.ignore_pool_close_event(true);
        listener
            .listen_all([FEED_CHANNEL, crate::defaults::mail::MAIL_CHANNEL])
            .await?;
        Ok(Doorbell { listener })
    }
}

impl ChangeListener for Doorbell {
    fn next(&mut self) -> BoxFuture<'_, Result<Bell, StoreError>> {
        Box::pin(async move {
            Ok(match self.listener.try_recv().await? {
                Some(n) if n.channel() == crate::defaults::mail::MAIL_CHANNEL => {
                    // A payload that is no agent id rings nobody (a lost bell is harmless
                    // for mail: the fallback poll finds it).
                    u128::from_str_radix(n.payload(), 16).map_or(Bell::Mail(0), Bell::Mail)
                }
                Some(n) => n.payload().parse().map_or(Bell::Lost, Bell::Rang),
                None => Bell::Lost,
            })
        })
    }
}
