//! `hubs` options of the bench command line, and how they become [`HubsBenchOptions`].

use std::time::Duration;

use clap::Args;

use super::{HubsBenchOptions, HubsMode};
use crate::parse_duration;

/// `hubs` options.
#[derive(Debug, Args)]
pub struct HubsArgs {
    /// PostgreSQL server to run on: a URL whose role may create databases (each mode runs on
    /// a fresh database beside the one named, dropped afterwards).
    #[arg(long)]
    postgres: String,
    /// Changes per mode (register, status, offline in turn).
    #[arg(long, default_value_t = 10_000)]
    changes: usize,
    /// Changes in flight at once (each on its own WebSocket to hub A).
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Modes, comma-separated: doorbell (LISTEN/NOTIFY, fallback poll 5 s), polling (500 ms
    /// polls only, as before the doorbell).
    #[arg(long, default_value = "doorbell,polling")]
    modes: String,
    /// The polling interval of the `polling` mode.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    poll_interval: Duration,
}

impl HubsArgs {
    /// The options these arguments describe.
    pub fn options(self) -> anyhow::Result<HubsBenchOptions> {
        let modes = self
            .modes
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse::<HubsMode>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(HubsBenchOptions {
            postgres: self.postgres,
            changes: self.changes,
            in_flight: self.in_flight.max(1),
            modes,
            poll_interval: self.poll_interval,
        })
    }
}
