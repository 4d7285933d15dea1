//! A three-namespace network for the end-to-end relay test, built with `ip netns`, veth
//! pairs and nftables (root only; CI runs as root):
//!
//! ```text
//!  public  10.207.1.1 ──veth── 10.207.1.2  router  10.207.2.1 ──veth── 10.207.2.2  private
//!  (hub, agent B)                 (masquerade out, drop in)               (agent A)
//! ```
//!
//! The private side reaches the public side through the router's masquerade; the public side
//! has no route to 10.207.2.0/24 and the router forwards nothing new inwards, so nobody can
//! connect to the private agent. No namespace has a link to the host's namespace, and the
//! whole 10.207.0.0/16 range is blackholed on the host while a topology lives, so no test
//! packet can leave the machine. Names carry the test process's pid and a counter; `Drop`
//! stops whatever still runs inside and deletes the namespaces, even when the test failed.
//! Setting up fails (panics) with a clear message when it cannot: the test never skips.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The test range, blackholed on the host.
pub const RANGE: &str = "10.207.0.0/16";
/// The hub's and agent B's address (public namespace).
pub const PUBLIC_IP: &str = "10.207.1.1";
/// The router's public-side address: what the hub sees as agent A's IP.
pub const ROUTER_PUBLIC_IP: &str = "10.207.1.2";
/// The router's private-side address (agent A's gateway).
const ROUTER_PRIVATE_IP: &str = "10.207.2.1";
/// Agent A's own address (private namespace).
pub const PRIVATE_IP: &str = "10.207.2.2";
/// The private subnet, masqueraded by the router.
const PRIVATE_NET: &str = "10.207.2.0/24";
/// Prefix of every namespace these tests create (`m2mt<pid>x<n>-<side>`).
const PREFIX: &str = "m2mt";

/// One of the three namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The hub and agent B.
    Public,
    /// The NAT router.
    Router,
    /// Agent A, behind the router.
    Private,
}

/// The three namespaces of one test; deleted on drop.
pub struct Topology {
    public: String,
    router: String,
    private: String,
}

/// How many topologies of this process are alive: the host's blackhole route lives while
/// one does, and is removed with the last (only if this process added it).
static LIVE: Mutex<(usize, bool)> = Mutex::new((0, false));

impl Topology {
    /// Builds the network, or panics saying why it could not (and removes what it made).
    pub fn new() -> Topology {
        preflight();
        remove_stale();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = format!(
            "{PREFIX}{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        blackhole_acquire();
        // From here on a panic drops `topology`, which tears down whatever exists.
        let topology = Topology {
            public: format!("{base}-pub"),
            router: format!("{base}-nat"),
            private: format!("{base}-priv"),
        };
        topology.build();
        topology
    }

    /// The namespace's name.
    pub fn name(&self, side: Side) -> &str {
        match side {
            Side::Public => &self.public,
            Side::Router => &self.router,
            Side::Private => &self.private,
        }
    }

    /// `m2m` run inside `side`'s namespace, with the same clean environment (and a config
    /// directory of its own) as the other command-line tests give it.
    pub fn m2m(&self, side: Side) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name(side), crate::common::m2m_path()])
            .env_remove("M2M_HUB")
            .env_remove("PORT")
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .env_remove("M2M_IDENTITY")
            .env("XDG_CONFIG_HOME", crate::common::fresh_config_dir());
        c
    }

    fn build(&self) {
        let (pb, rt, pv) = (&self.public, &self.router, &self.private);
        for ns in [pb, rt, pv] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // Each veth is created inside the router's namespace and its peer moved straight into
        // the other: no interface ever exists in the host's namespace.
        sh(&[
            "ip", "-n", rt, "link", "add", "nat-pub", "type", "veth", "peer", "name", "eth0",
            "netns", pb,
        ]);
        sh(&[
            "ip", "-n", rt, "link", "add", "nat-priv", "type", "veth", "peer", "name", "eth0",
            "netns", pv,
        ]);
        for (ns, dev, addr) in [
            (pb, "eth0", PUBLIC_IP),
            (rt, "nat-pub", ROUTER_PUBLIC_IP),
            (rt, "nat-priv", ROUTER_PRIVATE_IP),
            (pv, "eth0", PRIVATE_IP),
        ] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // The private side goes out through the router; the public side knows only its own
        // /24, so it has no route to the private range at all.
        sh(&[
            "ip",
            "-n",
            pv,
            "route",
            "add",
            "default",
            "via",
            ROUTER_PRIVATE_IP,
        ]);
        // Forwarding is per namespace: on in the router only.
        sh(&[
            "ip",
            "netns",
            "exec",
            rt,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ]);
        let rules = format!(
            "table ip m2m_nat {{
               chain masq {{
                 type nat hook postrouting priority srcnat;
                 oifname \"nat-pub\" ip saddr {PRIVATE_NET} masquerade
               }}
               chain inbound {{
                 type filter hook forward priority filter; policy drop;
                 ct state established,related accept
                 iifname \"nat-priv\" oifname \"nat-pub\" accept
               }}
             }}\n"
        );
        sh_stdin(&["ip", "netns", "exec", rt, "nft", "-f", "-"], &rules);
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.private, &self.router, &self.public] {
            remove_namespace(ns);
        }
        blackhole_release();
    }
}

/// Fails with the reason when this machine cannot build the network.
fn preflight() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("?")
        .to_owned();
    assert!(
        uid == "0",
        "the relay network-namespace test needs root (uid 0, for ip netns and nftables), \
         this is uid {uid}: run it as root, as CI does"
    );
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "the relay network-namespace test needs `{tool}` (Debian package {package}): \
             scripts/test-deps installs it"
        );
    }
}

/// Namespaces left by a test process that no longer exists (killed before its `Drop` ran).
fn remove_stale() {
    let list = sh(&["ip", "netns", "list"]);
    for name in String::from_utf8_lossy(&list.stdout).lines() {
        let name = name.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('x').next())
        else {
            continue;
        };
        if !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            remove_namespace(name);
        }
    }
}

/// Ends what still runs in `ns` (only this test's processes run there) and deletes it.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

fn blackhole_acquire() {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if live.0 == 0 {
        let existing = sh(&["ip", "route", "show", "exact", RANGE]);
        if existing.stdout.is_empty() {
            sh(&["ip", "route", "add", "blackhole", RANGE]);
            live.1 = true;
        }
    }
    live.0 += 1;
}

fn blackhole_release() {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.0 = live.0.saturating_sub(1);
    if live.0 == 0 && live.1 {
        let _ = Command::new("ip")
            .args(["route", "del", "blackhole", RANGE])
            .status();
        live.1 = false;
    }
}

/// Runs a setup command; panics with its stderr when it fails.
fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("network setup: cannot run `{}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "network setup failed: `{}`: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

fn sh_stdin(args: &[&str], input: &str) {
    use std::io::Write;
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("network setup: cannot run `{}`: {e}", args.join(" ")));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("write to nft");
    let out = child.wait_with_output().expect("wait for nft");
    assert!(
        out.status.success(),
        "network setup failed: `{}`: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
