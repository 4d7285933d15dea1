//! One module per command family. The helpers here join a hub the way every command does,
//! and turn SDK errors into sentences a user can act on.

pub mod demo;
pub mod docs;
pub mod hub;
pub mod inbox;
pub mod listen;
pub mod mcp;
pub mod oneshot;

use std::future::Future;
use std::path::Path;

use anyhow::anyhow;
use m2m_agent::{Agent, AgentError, Identity};

use crate::exit::{self, Kind};

/// The hubs to use, as the SDK takes them (comma-separated): `--hub` (repeated or
/// comma-separated), else `M2M_HUB` (both through clap), else the SDK's default.
pub fn hub_or_default(hubs: &[String]) -> String {
    if hubs.is_empty() {
        m2m_agent::config::DEFAULT_HUB.to_owned()
    } else {
        hubs.join(",")
    }
}

/// How an agent of this tool registers.
#[derive(Debug, Clone, Default)]
pub struct Join {
    /// Hub as given by the user (or the default).
    pub hub: String,
    /// P2P port; 0 picks a free one.
    pub port: u16,
    /// Public address to register instead of the local one.
    pub address: Option<String>,
    /// Capabilities offered.
    pub capabilities: Vec<String>,
    /// Metadata registered.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Keep reconnecting when the hub connection drops (long-running commands).
    pub reconnect: bool,
    /// 2.1 identity; `None`: a fresh one for this run.
    pub identity: Option<Identity>,
    /// Refuse peers that do not authenticate.
    pub authenticated_only: bool,
    /// Register at the hub; `false` only asks it (queries and sends leave the registry as
    /// it was).
    pub register: bool,
    /// No TCP listener: reachable only through the hub's relay.
    pub relay_only: bool,
    /// Do not attach to the hub's relay.
    pub no_relay: bool,
    /// Direct-dial timeout before the relay is tried (`None`: the SDK's default).
    pub direct_timeout: Option<std::time::Duration>,
}

/// The identity of a long-running agent: `--identity FILE`, else the default key file.
pub fn persistent_identity(file: Option<&Path>) -> anyhow::Result<Identity> {
    match file {
        Some(path) => crate::identity::load_or_create(path),
        None => crate::identity::load_or_create(&crate::identity::default_path()?),
    }
}

/// The identity of a one-shot command: `--identity FILE`, else a fresh one (so that a
/// one-shot command never takes over the hub registration of the user's `listen`/`agent`).
pub fn oneshot_identity(file: Option<&Path>) -> anyhow::Result<Option<Identity>> {
    file.map(crate::identity::load_or_create).transpose()
}

impl Join {
    /// A long-running agent (`listen`, `agent`): the persistent identity, reconnecting.
    pub fn long_running(
        hub: &str,
        identity: Option<&Path>,
        port: u16,
        address: Option<String>,
        connect: &crate::cli::ConnectArgs,
        authenticated_only: bool,
    ) -> anyhow::Result<Join> {
        Ok(Join {
            identity: Some(persistent_identity(identity)?),
            authenticated_only,
            hub: hub.to_owned(),
            port,
            address,
            capabilities: connect.capabilities.clone(),
            metadata: connect.metadata.clone().unwrap_or_default(),
            reconnect: true,
            register: true,
            relay_only: connect.relay_only,
            no_relay: connect.no_relay,
            direct_timeout: connect.direct_timeout,
        })
    }

    /// A one-shot command that only asks the hub and sends: it never registers.
    pub fn unregistered(hub: &str, identity: Option<&Path>) -> anyhow::Result<Join> {
        Ok(Join {
            hub: hub.to_owned(),
            identity: oneshot_identity(identity)?,
            ..Join::default()
        })
    }

    /// Starts the agent and registers; a failure says which hub could not be used.
    pub async fn connect(&self) -> anyhow::Result<Agent> {
        self.connect_with(|b| b).await
    }

    /// Like [`Join::connect`], with more settings made by `configure`.
    pub async fn connect_with(
        &self,
        configure: impl FnOnce(m2m_agent::AgentBuilder) -> m2m_agent::AgentBuilder,
    ) -> anyhow::Result<Agent> {
        let url = m2m_agent::hub_urls(&self.hub)
            .map_err(|e| anyhow!("bad --hub value: {e}"))?
            .join(" or ");
        let mut builder = Agent::builder()
            .hub(&self.hub)
            .port(self.port)
            .capabilities(self.capabilities.clone())
            .metadata(self.metadata.clone())
            .auto_reconnect(self.reconnect)
            .register(self.register)
            .authenticated_peers_only(self.authenticated_only)
            .relay(!self.no_relay)
            .relay_only(self.relay_only);
        if let Some(timeout) = self.direct_timeout {
            builder = builder.direct_connect_timeout(timeout);
        }
        if let Some(address) = &self.address {
            builder = builder.address(address);
        }
        if let Some(identity) = &self.identity {
            builder = builder.identity(identity.clone());
        }
        configure(builder).connect().await.map_err(|e| match e {
            AgentError::Unreachable { reason, .. } => exit::fail(
                Kind::Unreachable,
                format!("could not reach the hub at {url}: {reason}"),
            ),
            AgentError::Timeout { .. } => exit::fail(
                Kind::Timeout,
                format!("the hub at {url} did not answer in time"),
            ),
            AgentError::Io { context, source } => anyhow!("{context}: {source}"),
            AgentError::Hub(error) => anyhow!("the hub at {url} refused to register us: {error}"),
            other => anyhow!("could not join the hub at {url}: {other}"),
        })
    }
}

/// Runs `work` with an agent joined as `join` says and always disconnects it afterwards
/// (a registered one leaves the hub at once), also when `work` fails or the user presses
/// Ctrl-C.
pub async fn with_agent<T, F, Fut>(join: &Join, work: F) -> anyhow::Result<T>
where
    F: FnOnce(Agent) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let agent = join.connect().await?;
    let result = tokio::select! {
        r = work(agent.clone()) => r,
        () = shutdown_signal() => Err(Interrupted.into()),
    };
    if let Err(e) = agent.disconnect().await {
        tracing::warn!("disconnecting from the hub: {e}");
    }
    result
}

/// The user stopped a command with Ctrl-C or SIGTERM (exit status 130, as shells use).
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// A sentence for an SDK error, carrying its exit status (see [`crate::exit`]).
pub fn explain(error: AgentError) -> anyhow::Error {
    let kind = Kind::of(&error);
    let sentence = match error {
        AgentError::AgentNotFound(id) => anyhow!("unknown agent {id}: the hub does not know it"),
        AgentError::AgentOffline(id) => anyhow!("agent {id} is offline"),
        AgentError::Timeout { operation, after } => {
            anyhow!("{operation} timed out after {}", human(after))
        }
        AgentError::Unreachable {
            address, reason, ..
        } => {
            anyhow!("could not reach the agent at {address}: {reason}")
        }
        AgentError::DecryptionFailed { address } => {
            anyhow!("the agent at {address} could not decrypt our message")
        }
        AgentError::Peer { address, error } => {
            anyhow!("the agent at {address} refused the message: {error}")
        }
        AgentError::Authentication { address, reason } => anyhow!(
            "the agent at {address} is not who the hub says it is (nothing was sent): {reason}"
        ),
        AgentError::Hub(error) => anyhow!("the hub refused the request: {error}"),
        AgentError::NotConnected => anyhow!("lost the connection to the hub"),
        other => anyhow!("{other}"),
    };
    exit::maybe(kind, sentence)
}

fn human(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
///
/// The handlers are installed when this is called, not when the future is first polled, so a
/// command that prints "ready" after calling it cannot be killed by the default disposition of
/// a signal sent right after that line (a test or supervisor reacting to it would race).
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            // A handler that could not be installed never resolves, rather than stop at once.
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => {}
                () = wait(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
