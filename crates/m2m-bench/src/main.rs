//! `m2m-bench`: load generators for the M2M hub and P2P transport, and probes of the
//! machine's limits. Every command prints one JSON document on stdout; logs go to stderr.
//! The same benches are `m2m bench …` in the `m2m` tool (see [`m2m_bench::cli`]).

use std::process::ExitCode;

use clap::Parser;
use m2m_bench::cli::{BenchArgs, Invocation};

/// The benches' processes allocate and free a 64 KiB message after another on several
/// threads; glibc's per-thread arenas give such memory back to the system and fault it in
/// again for the next message (a fifth of the P2P peer's time in page faults, measured
/// with perf). mimalloc keeps it. The `m2m` tool uses the same allocator, so the benches
/// measure what users run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Invocation::current(&[]).and_then(|me| args.run_and_print(&me)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("m2m-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
