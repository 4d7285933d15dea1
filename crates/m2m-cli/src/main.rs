//! `m2m`: the M2M command-line tool. Parses the command line, sets up logging, runs one
//! command, and turns any failure into one clear sentence on stderr and a non-zero exit.
//!
//! Commands live in `cmd/` (the hub, `listen`, the one-shot commands, `mcp`, the demo) and
//! `tui/` (the interactive agent). stdout carries results only — JSON when it is not a
//! terminal or with `--json` — and logs go to stderr.
//!
//! ## How data flows
//!
//! ```text
//!  argv ─► cli (clap; duration, hub_limits, defaults) ─► main: logging, runtime
//!    ─► cmd::<command> ─► m2m_agent / m2m_hub ─► results ─► output (JSON or text) ─► stdout
//!    ─► tui::run: terminal keys + agent events ─► tui::app (state) ─► tui::render ─► screen
//!    ─► cmd::mcp: stdio JSON-RPC ─► server ─► tools (catalogue, checks, handlers) ◄─ inbox
//!    ─► m2m_bench (feature `bench`): its own runtime and JSON document
//!  any error ─► exit (code by kind) ─► one sentence on stderr
//! ```
//!
//! `identity` loads or creates the key file; `payload` reads a payload argument or stdin.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
// The doc comments of `cli.rs` are the `--help` text clap prints; usage like `[PAYLOAD]`
// there is for users, not an intra-doc link, and escaping it would print the backslashes.
#![allow(rustdoc::broken_intra_doc_links)]

mod cli;
mod cmd;
mod defaults;
mod duration;
mod exit;
mod hub_limits;
mod identity;
mod output;
mod payload;
mod tui;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, LogFormat};
use output::Output;

/// An agent allocates and frees each received message's payload on the runtime's worker
/// threads; with glibc's per-thread arenas a 64 KiB payload after another was given back
/// to the system and faulted in again (a fifth of a receiving agent's time in page faults,
/// measured with perf on `m2m bench p2p`). mimalloc keeps such memory for reuse; the hub
/// holding 100k agents measured 232 MiB with it against 216 MiB with glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("m2m: {}", sentence(&e));
        return ExitCode::FAILURE;
    }
    #[cfg(feature = "bench")]
    if let Command::Bench(args) = cli.command {
        return bench(args);
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
    // The command runs on a worker thread: a future driven by `block_on` runs outside the
    // worker pool, so each message an agent's connection task hands to it, and each task
    // it spawns, would cost a wake-up across threads.
    let work = runtime.spawn(run(cli));
    let outcome = match runtime.block_on(work) {
        Ok(outcome) => outcome,
        Err(e) => Err(anyhow::anyhow!("the command failed: {e}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("m2m: {}", sentence(&e));
            ExitCode::from(exit::code(&e))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Output::detect(cli.json);
    let hub = cmd::hub_or_default(&cli.hub);
    let key = cli.identity.as_deref();
    match cli.command {
        Command::Hub(args) => cmd::hub::run(args, out).await,
        Command::Agent(args) => tui::run::run(&hub, key, args).await,
        Command::Listen(args) => cmd::listen::run(&hub, key, args).await,
        Command::Discover(args) => cmd::oneshot::discover(&hub, key, args, out).await,
        Command::Find(args) => cmd::oneshot::find(&hub, key, args, out).await,
        Command::Lookup(args) => cmd::oneshot::lookup(&hub, key, args, out).await,
        Command::Send(args) => cmd::oneshot::send(&hub, key, args, out).await,
        Command::Request(args) => cmd::oneshot::request(&hub, key, args, out).await,
        Command::Broadcast(args) => cmd::oneshot::broadcast(&hub, key, args, out).await,
        Command::Mcp(args) => cmd::mcp::run(&hub, key, args).await,
        Command::Inbox(args) => cmd::inbox::run(&hub, key, args, out).await,
        Command::Ping(args) => cmd::oneshot::ping(args, out).await,
        Command::Stats(args) => cmd::oneshot::stats(&hub, key, args, out).await,
        Command::Demo => cmd::demo::run(out).await,
        Command::Completions(args) => cmd::docs::completions(args),
        Command::Man(args) => cmd::docs::man(args),
        // Handled in `main`, before a runtime exists: the bench chooses its own.
        #[cfg(feature = "bench")]
        Command::Bench(_) => anyhow::bail!("`m2m bench` runs on its own runtime"),
    }
}

/// `m2m bench …` (the `bench` feature, on by default): the bench builds its own runtime
/// (`--threads`), and starts this program again as `m2m bench <hidden subcommand>` for its
/// second processes.
#[cfg(feature = "bench")]
fn bench(args: m2m_bench::cli::BenchArgs) -> ExitCode {
    match m2m_bench::cli::Invocation::current(&["bench"]).and_then(|me| args.run_and_print(&me)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("m2m: {}", sentence(&e));
            ExitCode::FAILURE
        }
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
