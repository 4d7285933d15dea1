//! `m2m`: the M2M command-line tool. Parses the command line, sets up logging, runs one
//! command, and turns any failure into one clear sentence on stderr and a non-zero exit.
//!
//! Commands live in `cmd/` (the hub, `listen`, the one-shot commands, the demo) and `tui/`
//! (the interactive agent). stdout carries results only — JSON when it is not a terminal or
//! with `--json` — and logs go to stderr.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod cli;
mod cmd;
mod duration;
mod identity;
mod output;
mod payload;
mod tui;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, LogFormat};
use output::Output;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("m2m: {}", sentence(&e));
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("m2m: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("m2m: {}", sentence(&e));
            if e.downcast_ref::<cmd::Interrupted>().is_some() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output::detect(cli.json);
    let hub = cmd::hub_or_default(cli.hub.as_deref());
    let key = cli.identity.as_deref();
    match cli.command {
        Command::Hub(args) => cmd::hub::run(args, out).await,
        Command::Agent(args) => tui::run::run(&hub, key, args).await,
        Command::Listen(args) => cmd::listen::run(&hub, key, args).await,
        Command::Discover(args) => cmd::oneshot::discover(&hub, key, args, out).await,
        Command::Find(args) => cmd::oneshot::find(&hub, key, args, out).await,
        Command::Send(args) => cmd::oneshot::send(&hub, key, args, out).await,
        Command::Request(args) => cmd::oneshot::request(&hub, key, args, out).await,
        Command::Broadcast(args) => cmd::oneshot::broadcast(&hub, key, args, out).await,
        Command::Ping(args) => cmd::oneshot::ping(args, out).await,
        Command::Stats(args) => cmd::oneshot::stats(&hub, key, args, out).await,
        Command::Demo => cmd::demo::run(out).await,
    }
}

/// The error and its causes as one line: "could not start the hub on …: cannot listen on …".
fn sentence(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        // Skip a cause that the outer message already quotes.
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Logs go to stderr (or `--log-file`) so stdout stays clean for results. The level comes
/// from RUST_LOG; by default the hub logs at info and the other commands only warnings. The
/// terminal agent draws on the terminal, so it logs only to a `--log-file`.
fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::EnvFilter;

    let default = if matches!(cli.command, Command::Hub(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let (writer, ansi) = match &cli.log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("could not open the log file {}", path.display()))?;
            (BoxMakeWriter::new(std::sync::Mutex::new(file)), false)
        }
        None if matches!(cli.command, Command::Agent(_)) => {
            (BoxMakeWriter::new(std::io::sink), false)
        }
        None => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    // Failing to install a logger (one is already set) is not worth stopping for.
    let _ = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}
