//! The exit statuses of `m2m`. Scripts branch on them, so they are stable and listed in the
//! README; a new failure kind gets a new number, never an old one's.
//!
//! Errors stay `anyhow` errors; a [`Failure`] somewhere in the chain (or an
//! [`AgentError`] that says what went wrong) picks the status, anything else is
//! [`FAILURE`].

use std::fmt;

use m2m_agent::AgentError;

use crate::cmd::Interrupted;

/// Any failure not listed below (the hub refused, a peer refused, a local error, …).
pub const FAILURE: u8 = 1;
/// The command line is wrong (clap uses 2 for its own errors too).
pub const USAGE: u8 = 2;
/// The agent is unknown to the hub, or offline.
pub const NOT_FOUND: u8 = 3;
/// The hub or the agent could not be reached.
pub const UNREACHABLE: u8 = 4;
/// The hub or the agent did not answer in time (a request's `--timeout`, a ping's, the
/// SDK's send and hub deadlines).
pub const TIMEOUT: u8 = 5;
/// Stopped by Ctrl-C or SIGTERM, as shells report it (128 + SIGINT).
pub const INTERRUPTED: u8 = 130;

/// What kind of failure an error is, for its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`USAGE`].
    Usage,
    /// [`NOT_FOUND`].
    NotFound,
    /// [`UNREACHABLE`].
    Unreachable,
    /// [`TIMEOUT`].
    Timeout,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Usage => USAGE,
            Kind::NotFound => NOT_FOUND,
            Kind::Unreachable => UNREACHABLE,
            Kind::Timeout => TIMEOUT,
        }
    }

    /// The kind of an SDK error, when it is one of ours.
    pub fn of(error: &AgentError) -> Option<Kind> {
        match error {
            AgentError::AgentNotFound(_) | AgentError::AgentOffline(_) => Some(Kind::NotFound),
            AgentError::Unreachable { .. } => Some(Kind::Unreachable),
            AgentError::Timeout { .. } => Some(Kind::Timeout),
            _ => None,
        }
    }
}

/// A sentence for the user that also fixes the exit status.
#[derive(Debug)]
pub struct Failure {
    kind: Kind,
    message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// An error saying `message` that exits with `kind`'s status.
pub fn fail(kind: Kind, message: impl fmt::Display) -> anyhow::Error {
    Failure {
        kind,
        message: message.to_string(),
    }
    .into()
}

/// `message`, exiting with `kind`'s status if there is one.
pub fn maybe(kind: Option<Kind>, message: impl fmt::Display) -> anyhow::Error {
    match kind {
        Some(kind) => fail(kind, message),
        None => anyhow::anyhow!("{message}"),
    }
}

/// The exit status for `error`: the outermost cause that says.
pub fn code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.downcast_ref::<Interrupted>().is_some() {
            return INTERRUPTED;
        }
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.kind.code();
        }
        if let Some(kind) = cause.downcast_ref::<AgentError>().and_then(Kind::of) {
            return kind.code();
        }
    }
    FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn statuses_come_from_the_chain() {
        assert_eq!(code(&anyhow::anyhow!("plain")), FAILURE);
        assert_eq!(code(&fail(Kind::Timeout, "late")), TIMEOUT);
        let wrapped = Err::<(), _>(fail(Kind::Unreachable, "down"))
            .context("while sending")
            .unwrap_err();
        assert_eq!(code(&wrapped), UNREACHABLE);
        assert_eq!(code(&Interrupted.into()), INTERRUPTED);
        assert_eq!(
            code(&AgentError::AgentOffline("x".into()).into()),
            NOT_FOUND
        );
        assert_eq!(code(&maybe(None, "x")), FAILURE);
        assert_eq!(code(&maybe(Some(Kind::Usage), "x")), USAGE);
    }
}
