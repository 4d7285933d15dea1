//! Drives the `m2m` binary as a user would: a hub started with `m2m hub --port 0`, agents
//! started with `m2m listen`, one-shot commands run to completion. Timeouts here only keep a
//! broken build from hanging the suite; no test asserts on time.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Long enough for any local step on a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn m2m_path() -> &'static str {
    env!("CARGO_BIN_EXE_m2m")
}

/// A fresh, empty config directory for one m2m process (under the target directory), so
/// that every agent a test starts has its own identity key file, as separate users would.
pub fn fresh_config_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "m2m-cli-config-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A command for the binary, with a clean environment as far as m2m is concerned (and a
/// config directory of its own: see [`fresh_config_dir`]).
pub fn m2m() -> Command {
    let mut c = Command::new(m2m_path());
    c.env_remove("M2M_HUB")
        .env_remove("PORT")
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env_remove("M2M_IDENTITY")
        .env("XDG_CONFIG_HOME", fresh_config_dir());
    c
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout as one JSON value.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts success and returns stdout as JSON.
    pub fn ok_json(&self) -> Value {
        assert!(self.status.success(), "failed: {self:#?}");
        self.json()
    }

    /// Asserts failure with a one-line `m2m: …` sentence on stderr, and returns it.
    pub fn error(&self) -> String {
        assert!(!self.status.success(), "succeeded: {self:#?}");
        assert!(self.stdout.is_empty(), "printed on stdout: {self:#?}");
        let line = self
            .stderr
            .trim()
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        assert!(line.starts_with("m2m: "), "{self:#?}");
        line
    }
}

/// Runs `cmd` to the end, feeding `stdin`.
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Run {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn m2m");
    let mut input = child.stdin.take().unwrap();
    let text = stdin.unwrap_or_default().to_owned();
    let writer = thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let status = wait(&mut child, PATIENCE);
    writer.join().unwrap();
    Run {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn reader(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Waits for `child`; kills it (and fails) if it takes longer than `patience`.
pub fn wait(child: &mut Child, patience: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > patience {
            let _ = child.kill();
            panic!("m2m did not finish within {patience:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A long-running m2m process whose stdout is read line by line.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        Self::spawn_in(&mut cmd, None)
    }

    pub fn spawn_in(cmd: &mut Command, dir: Option<&Path>) -> Running {
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn m2m");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = reader(child.stderr.take().unwrap());
        Running {
            child,
            lines,
            stderr: Some(stderr),
        }
    }

    /// The next stdout line as JSON.
    pub fn next_json(&mut self) -> Value {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")),
            Err(e) => {
                let _ = self.child.kill();
                panic!("no line from m2m ({e})");
            }
        }
    }

    /// Waits for the process to exit by itself; returns the status and stderr.
    pub fn wait_exit(mut self) -> (ExitStatus, String) {
        let status = wait(&mut self.child, PATIENCE);
        let stderr = self.stderr.take().map(|h| h.join().unwrap());
        (status, stderr.unwrap_or_default())
    }

    /// Sends SIGTERM and waits for the exit; returns the status and stderr.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let status = wait(&mut self.child, PATIENCE);
        let stderr = self.stderr.take().map(|h| h.join().unwrap());
        (status, stderr.unwrap_or_default())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hub started as `m2m hub --port 0`, in memory.
pub struct Hub {
    pub process: Running,
    pub ws: String,
    pub address: String,
}

impl Hub {
    pub fn start() -> Hub {
        Hub::start_with(&[])
    }

    /// As [`Hub::start`], with more `m2m hub` flags.
    pub fn start_with(flags: &[&str]) -> Hub {
        Hub::start_on("sqlite::memory:", 0, flags)
    }

    /// `m2m hub` on `database` and 127.0.0.1:`port` (0: any free port), with more flags.
    pub fn start_on(database: &str, port: u16, flags: &[&str]) -> Hub {
        let mut cmd = m2m();
        let port = port.to_string();
        cmd.args([
            "hub",
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--database",
            database,
        ]);
        cmd.args(flags);
        Hub::from(Running::spawn(cmd))
    }

    pub fn from(mut process: Running) -> Hub {
        let line = process.next_json();
        assert_eq!(line["event"], "listening", "{line}");
        Hub {
            ws: line["ws"].as_str().unwrap().to_owned(),
            address: line["address"].as_str().unwrap().to_owned(),
            process,
        }
    }

    /// An m2m command using this hub through `M2M_HUB`.
    pub fn m2m(&self) -> Command {
        let mut c = m2m();
        c.env("M2M_HUB", &self.ws);
        c
    }

    /// Runs `m2m ARGS` against this hub.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut c = self.m2m();
        c.args(args);
        run(c, None)
    }

    /// Starts `m2m listen ARGS` and returns it with its `connected` line.
    pub fn listen(&self, args: &[&str]) -> (Running, Value) {
        let mut c = self.m2m();
        c.arg("listen").args(args);
        let mut l = Running::spawn(c);
        let connected = l.next_json();
        assert_eq!(connected["event"], "connected", "{connected}");
        (l, connected)
    }
}

/// A fresh database on the test PostgreSQL server (`M2M_TEST_POSTGRES`, which scripts/test
/// sets; missing is a failure): its URL, for a hub to create.
pub fn fresh_postgres_database(prefix: &str) -> String {
    let admin = std::env::var("M2M_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "M2M_TEST_POSTGRES is not set: this test needs a PostgreSQL superuser URL such as \
             postgres://m2m:m2m@127.0.0.1:5432/postgres (scripts/test starts a local server)"
        )
    });
    let base = &admin[..admin.rfind('/').expect("a URL with a database")];
    format!("{base}/{prefix}_{:016x}", rand::random::<u64>())
}
