//! `m2m mcp`: an MCP (Model Context Protocol) server on stdio, so that an LLM client —
//! Claude Desktop, Claude Code, Cursor, any MCP client — can find other agents and message
//! them, end-to-end encrypted, through tools.
//!
//! It is a long-running agent like `m2m listen`: it registers at the hub with a persistent
//! 2.1 identity — its own key file, `mcp-identity.key` next to `identity.key`, unless
//! `--identity` says otherwise, so it is the same agent every time the client starts it and
//! does not take over the registration of the user's `listen` or `agent` — and keeps what it
//! receives in a bounded inbox ([`inbox`]) for the tools ([`tools`]) to hand out. [`server`]
//! is the MCP side. stdout is the MCP channel: logs go to stderr or `--log-file` only.
//!
//! Data flow: the agent's incoming queue → [`server::Server::deliver_messages`] → the inbox
//! (oldest dropped when full) and an arrival notice to the client → `inbox` /
//! `wait_for_message` tool calls.
//!
//! The SDK is rmcp, the official Rust one, at ~3.8 with only `server` and `transport-io`:
//! - 3.8 speaks every protocol version the Python and TypeScript SDKs of today negotiate;
//!   from 3.9 on it requires sha2 0.11, a second sha2 beside the 0.10 our crypto uses.
//! - no `macros`: tools are routed by hand (see [`server`]) to answer bad arguments with
//!   tool errors.
//! - no Streamable HTTP (`--http`): rmcp's `transport-streamable-http-server` brings rand
//!   0.10 (a third rand) and base64 0.23 (a second base64) into the tree. It uses hyper and
//!   tower directly, not a second axum. Until it can share our versions, stdio — what the
//!   desktop clients launch — is the one transport.

pub mod inbox;
pub mod server;
pub mod tools;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rmcp::ServiceExt as _;

use super::{shutdown_signal, Join};
use crate::cli::McpArgs;

/// Name of the MCP server's own key file, next to the default `identity.key`.
pub const KEY_FILE_NAME: &str = "mcp-identity.key";

/// `m2m mcp`.
pub async fn run(hub: &str, identity: Option<&Path>, args: McpArgs) -> anyhow::Result<()> {
    let key_file = match identity {
        Some(path) => path.to_owned(),
        None => default_key_path()?,
    };
    let join = Join {
        hub: hub.to_owned(),
        port: args.serve.port,
        address: args.serve.address,
        capabilities: args.serve.connect.capabilities,
        metadata: args.serve.connect.metadata.unwrap_or_default(),
        relay_only: args.serve.connect.relay_only,
        no_relay: args.serve.connect.no_relay,
        direct_timeout: args.serve.connect.direct_timeout,
        reconnect: true,
        // A long-running agent that others message: it registers.
        register: true,
        identity: Some(crate::identity::load_or_create(&key_file)?),
        authenticated_only: args.serve.authenticated_only,
    };
    let agent = join.connect().await?;
    tracing::info!(id = %agent.id(), address = %agent.address(), "m2m mcp registered at the hub");
    let inbox = inbox::Inbox::new(usize::try_from(args.inbox_capacity).unwrap_or(usize::MAX));
    let server = server::Server::new(agent.clone(), inbox, hub.to_owned());
    let result = serve_stdio(server).await;
    if let Err(e) = agent.disconnect().await {
        tracing::warn!("disconnecting from the hub: {e}");
    }
    result
}

/// Serves MCP on stdin/stdout until the client closes stdin (or a signal comes).
async fn serve_stdio(server: server::Server) -> anyhow::Result<()> {
    // Non-blocking pipes when the client launched us with pipes (it does): no hop through
    // the blocking thread pool per message.
    let transport = rmcp::transport::stdio_pipes();
    let service = server
        .clone()
        .serve(transport)
        .await
        .context("the MCP client did not complete the initialize handshake")?;
    let peer = service.peer().clone();
    let deliver = server.deliver_messages(peer);
    let cancel = service.cancellation_token();
    tokio::select! {
        biased;
        () = shutdown_signal() => {
            cancel.cancel();
            Ok(())
        }
        quit = service.waiting() => {
            quit.context("the MCP session failed")?;
            Ok(())
        }
        // Ends only when the agent is disconnected, which nothing does before we return.
        () = deliver => Ok(()),
    }
}

/// `mcp-identity.key` in the directory of the default `identity.key`.
fn default_key_path() -> anyhow::Result<PathBuf> {
    Ok(crate::identity::default_path()?.with_file_name(KEY_FILE_NAME))
}
