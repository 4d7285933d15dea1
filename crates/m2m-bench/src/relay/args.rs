//! `relay` options of the bench command line, and how they become [`RelayBenchOptions`].

use std::time::Duration;

use clap::Args;

use super::{RelayBenchOptions, RelayLevel, RelayScenario};
use crate::cli::Invocation;
use crate::hub::{HubCommand, HubTarget};
use crate::parse_duration;
use crate::sys::CommandLine;

/// `relay` options.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// `raw`: raw WebSocket clients (the hub's capacity); `sdk`: relay-only SDK agents, and
    /// two direct SDK agents in the same run for the ratio (hub in this process by default).
    #[arg(long, default_value = "raw")]
    level: RelayLevel,
    /// Scenarios, comma-separated: frames, bulk, request, streams.
    #[arg(long, default_value = "frames,bulk,request,streams")]
    scenarios: String,
    /// SDK level: messages in flight in `frames`.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// SDK level: messages in flight in `bulk`.
    #[arg(long, default_value_t = 16)]
    bulk_in_flight: usize,
    /// Measured time per scenario.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time before each scenario.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// DATA bytes of `frames`, and of each `request` / `streams` record.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// DATA bytes of `bulk` (one frame: at most 65536).
    #[arg(long, default_value_t = 65_536)]
    bulk_size: usize,
    /// Streams open at once in `streams`.
    #[arg(long, default_value_t = 1_000)]
    streams: usize,
    /// Runs (a fresh hub each).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Registry: postgres://… (default: a new SQLite file in a temporary directory).
    #[arg(long)]
    database: Option<String>,
    /// Hub command line, `{port}` and `{database}` substituted; `m2m` for the `m2m hub`
    /// command (its relay rate limit then applies). Default: the bench's own hub-serve, the
    /// hub's defaults with the per-IP shares, the request rate and the relay rate limit
    /// lifted (the bench measures capacity).
    #[arg(long, conflicts_with = "hub_url")]
    hub_cmd: Option<String>,
    /// Measure an already-running hub at this ws:// URL instead.
    #[arg(long)]
    hub_url: Option<String>,
    /// Process id of the --hub-url hub, for its RSS and CPU.
    #[arg(long, requires = "hub_url")]
    hub_pid: Option<u32>,
}

impl RelayArgs {
    /// The options these arguments describe; `me` says where the `m2m` tool is.
    pub fn options(self, me: &Invocation) -> anyhow::Result<RelayBenchOptions> {
        let target = if let Some(url) = self.hub_url {
            HubTarget::External {
                ws_url: url,
                pid: self.hub_pid,
            }
        } else {
            match self.hub_cmd.as_deref() {
                None if self.level == RelayLevel::Sdk => HubTarget::InProcess,
                None => HubTarget::Spawn(HubCommand::bench_serve(me.bench(None))),
                Some("m2m") => HubTarget::Spawn(HubCommand::m2m_cli(me.m2m.clone())),
                Some(line) => HubTarget::Spawn(HubCommand(CommandLine::parse(line)?)),
            }
        };
        let scenarios = self
            .scenarios
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.parse::<RelayScenario>().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(RelayBenchOptions {
            target,
            database: self.database,
            scenarios,
            duration: self.duration,
            warmup: self.warmup,
            size: self.size,
            bulk_size: self.bulk_size,
            streams: self.streams,
            repeat: self.repeat,
            level: self.level,
            in_flight: self.in_flight,
            bulk_in_flight: self.bulk_in_flight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        relay: RelayArgs,
    }

    #[test]
    fn the_default_hub_is_the_benches_own() {
        let me = Invocation {
            program: "/bin/m2m".into(),
            prefix: vec!["bench".into()],
            m2m: "/bin/m2m".into(),
        };
        let opts = Cli::parse_from(["x", "--scenarios", "bulk,request"])
            .relay
            .options(&me)
            .unwrap();
        assert_eq!(
            opts.scenarios,
            [RelayScenario::Bulk, RelayScenario::Request]
        );
        let HubTarget::Spawn(HubCommand(line)) = opts.target else {
            panic!("the hub is not spawned");
        };
        let shown = line.display();
        assert_eq!(
            shown,
            "/bin/m2m bench hub-serve --port {port} --database {database}"
        );
        let sdk = Cli::parse_from(["x", "--level", "sdk"])
            .relay
            .options(&me)
            .unwrap();
        assert_eq!(sdk.target, HubTarget::InProcess);
        assert_eq!(
            sdk.scenarios,
            [
                RelayScenario::Frames,
                RelayScenario::Bulk,
                RelayScenario::Request,
                RelayScenario::Streams
            ]
        );
        assert!(Cli::parse_from(["x", "--scenarios", "bogus"])
            .relay
            .options(&me)
            .is_err());
    }
}
