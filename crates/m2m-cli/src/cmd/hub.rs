//! `m2m hub`: runs the hub until SIGINT or SIGTERM, then shuts it down gracefully (every
//! WebSocket closed, its agents marked offline, the registry closed).
//!
//! Its first line on stdout says where it listens — JSON for scripts and tests that start
//! it on `--port 0`, a sentence for people.

use anyhow::{anyhow, Context as _};
use m2m_hub::{Hub, HubConfig, TlsConfig};
use serde_json::json;

use super::shutdown_signal;
use crate::cli::HubArgs;
use crate::output::Output;

/// `m2m hub`.
pub async fn run(args: HubArgs, out: Output) -> anyhow::Result<()> {
    let bind = args.bind_addr().map_err(|e| anyhow!(e))?;
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert_path), Some(key_path)) => Some(TlsConfig {
            cert_path,
            key_path,
        }),
        _ => None,
    };
    let mut config = HubConfig {
        bind,
        database: args.database.clone(),
        trust_proxy: args.trust_proxy,
        tls,
        public_url: args.public_url,
        dashboard: args.dashboard,
        ..HubConfig::default()
    };
    if args.hub_expiry < args.alive_interval * 2 {
        return Err(anyhow!(
            "--hub-expiry ({:?}) must be at least twice --alive-interval ({:?}): a live hub \
             would be taken as dead between two of its refreshes",
            args.hub_expiry,
            args.alive_interval
        ));
    }
    config.storage.alive_interval = args.alive_interval;
    config.storage.hub_expiry = args.hub_expiry;
    config.limits.requests_per_second = args.rate_limit;
    config.limits.request_burst = args.rate_limit.saturating_mul(2);
    args.limits.apply(&mut config);
    // One descriptor per connection: the soft default (often 1,024) would cap the hub far
    // below its connection limits.
    if let Some(nofile) = m2m_hub::raise_descriptor_limit() {
        tracing::debug!(nofile, "descriptor limit");
    }
    let hub = Hub::start(config)
        .await
        .context("could not start the hub")?;
    let address = hub.local_addr();
    let dashboard_line = if args.dashboard {
        format!("  dashboard at {}/dashboard\n", hub.http_url())
    } else {
        String::new()
    };
    out.either(
        &json!({
            "event": "listening",
            "address": address.to_string(),
            "http": hub.http_url(),
            "ws": hub.ws_url(),
            "database": redact(&args.database),
        }),
        || {
            format!(
                "m2m hub listening on {address}\n  agents connect to {}\n  HTTP API at {}\n{}  registry {}\nCtrl-C stops it.",
                hub.ws_url(),
                hub.http_url(),
                dashboard_line,
                redact(&args.database)
            )
        },
    )?;
    tokio::select! {
        () = shutdown_signal() => tracing::info!("shutting down"),
        () = hub.stopped() => tracing::warn!("the hub server stopped by itself"),
    }
    hub.shutdown()
        .await
        .context("the hub did not shut down cleanly")?;
    Ok(())
}

/// The database URL without its password, for output.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact("postgres://m2m:secret@db:5432/m2m"),
            "postgres://m2m:***@db:5432/m2m"
        );
        assert_eq!(redact("sqlite://m2m-hub.db"), "sqlite://m2m-hub.db");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
    }
}
