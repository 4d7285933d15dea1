//! The operating-system side of benchmarking: the file-descriptor limit, a process's
//! memory and CPU time from `/proc`, free ports, and child processes that are stopped
//! gracefully (SIGTERM, then SIGKILL) and never outlive the bench.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{sysconf, Pid, SysconfVar};
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// The descriptor limit this process ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// Soft limit now in force (inherited by child processes started after this).
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Raises this process's RLIMIT_NOFILE towards `want`: first within the hard limit; when
/// `want` is above it and the process may raise hard limits (root), the hard limit too.
/// Only this process and the children it starts afterwards are affected — never the
/// system's configuration.
pub fn raise_fd_limit(want: u64) -> anyhow::Result<FdLimit> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(NOFILE)")?;
    if soft >= want {
        return Ok(FdLimit { soft, hard });
    }
    if want > hard && setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return Ok(FdLimit {
            soft: want,
            hard: want,
        });
    }
    let target = want.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, target, hard).context("setrlimit(NOFILE)")?;
    Ok(FdLimit { soft: target, hard })
}

/// Memory and CPU time of one process, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// Resident set size now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM), KiB.
    pub hwm_kib: u64,
    /// User + system CPU time of all its threads, seconds.
    pub cpu_s: f64,
}

impl ProcSample {
    /// Reads process `pid`; `None` if it is gone or `/proc` is unavailable.
    pub fn read(pid: u32) -> Option<ProcSample> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the parenthesised command name (which may contain spaces).
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(ProcSample {
            rss_kib: field("VmRSS:"),
            hwm_kib: field("VmHWM:"),
            cpu_s: (utime + stime) as f64 / clock_ticks(),
        })
    }

    /// This process.
    pub fn current() -> ProcSample {
        ProcSample::read(std::process::id()).unwrap_or_default()
    }
}

fn clock_ticks() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// CPU time spent by a process between two samples, as cores busy over `wall`.
pub fn cores_used(before: Option<ProcSample>, after: Option<ProcSample>, wall: Duration) -> Value {
    match (before, after) {
        (Some(b), Some(a)) if wall.as_secs_f64() > 0.0 => {
            json!(crate::stats::round3(
                (a.cpu_s - b.cpu_s) / wall.as_secs_f64()
            ))
        }
        _ => Value::Null,
    }
}

/// The load average (1, 5, 15 minutes) and the number of CPUs, for the record.
pub fn machine_load() -> Value {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let l: Vec<f64> = load
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    json!({
        "loadavg": l,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    })
}

/// A port on 127.0.0.1 that was free a moment ago (for a child that must be told its
/// port; the race with other programs is accepted for a benchmark).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .context("binding a probe port")?;
    Ok(l.local_addr()?.port())
}

/// A program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

impl CommandLine {
    /// Splits a command line on whitespace (no quoting).
    pub fn parse(text: &str) -> anyhow::Result<CommandLine> {
        let mut words = text.split_whitespace();
        let Some(program) = words.next() else {
            bail!("empty command line");
        };
        Ok(CommandLine {
            program: PathBuf::from(program),
            args: words.map(str::to_owned).collect(),
        })
    }

    /// As one string, for the report.
    pub fn display(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

/// A child process that is killed if the bench drops it.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    name: String,
}

impl ChildProcess {
    /// Starts `cmd` with stdin piped (closing it tells a peer to leave), stdout piped
    /// when `capture_stdout`, stderr inherited.
    pub fn spawn(name: &str, cmd: &CommandLine, capture_stdout: bool) -> anyhow::Result<Self> {
        let child = Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(Stdio::piped())
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {name}: {}", cmd.display()))?;
        Ok(ChildProcess {
            child,
            name: name.to_owned(),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The child, for its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Fails if the child has already exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the {} exited early: {status}", self.name);
        }
        Ok(())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub async fn stop(mut self, grace: Duration) {
        drop(self.child.stdin.take());
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        if tokio::time::timeout_at(deadline.into(), self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(name = %self.name, "did not stop in time; killing it");
            let _ = self.child.kill().await;
        }
    }
}
