//! `m2m inbox`: the mailbox of a short-lived agent (an LLM tool run, a cron job). It
//! subscribes to the mail of this tool's identity without registering (so the agent never
//! appears online), prints each message — as `m2m listen` prints it, with
//! `"via":"mailbox"` and the time it was sent — acknowledges what it printed, and exits once
//! the hub has pushed everything (docs/MAILBOX.md). With `--wait`, an empty mailbox is
//! watched that long for mail to arrive.
//!
//! The ids it delivered are kept beside the identity key (`<key file>.mail-seen`), so a
//! message the hub pushes again after an earlier run acknowledged it is dropped, not printed
//! twice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use m2m_agent::{fetch_mail, AgentError, FetchMail, Message};
use serde_json::json;

use super::{explain, persistent_identity};
use crate::cli::InboxArgs;
use crate::output::{self, print_line, Output};

/// `m2m inbox`.
pub async fn run(
    hub: &str,
    identity: Option<&Path>,
    args: InboxArgs,
    out: Output,
) -> anyhow::Result<()> {
    let key = persistent_identity(identity)?;
    let state = seen_file(identity)?;
    let urls = m2m_agent::hub_urls(hub).map_err(|e| anyhow!("bad --hub value: {e}"))?;
    let mut printed: Vec<anyhow::Result<()>> = Vec::new();
    let mut last = None;
    // Several hubs share one database, so any that answers has the mail.
    for url in &urls {
        let options = FetchMail {
            wait: args.wait.unwrap_or(Duration::ZERO),
            state_file: Some(state.clone()),
            ..FetchMail::new(url, key.clone())
        };
        let fetched = fetch_mail(options, |m| printed.push(print_message(&m, out))).await;
        match fetched {
            Ok(report) => {
                printed.into_iter().collect::<anyhow::Result<()>>()?;
                for (reason, id) in &report.dropped {
                    tracing::warn!(%id, %reason, "mail dropped");
                    if out.json {
                        print_line(
                            &json!({"event": "mail_dropped", "id": id, "reason": reason})
                                .to_string(),
                        )?;
                    }
                }
                if !out.json && report.delivered == 0 {
                    println!("No mail for {}.", key.agent_id());
                }
                return Ok(());
            }
            Err(e @ (AgentError::Unreachable { .. } | AgentError::Timeout { .. }))
                if urls.len() > 1 =>
            {
                tracing::info!(hub = %url, error = %e, "hub failed; trying the next");
                last = Some(e);
            }
            Err(e) => return Err(explain(e)),
        }
    }
    match last {
        Some(e) => Err(explain(e)),
        None => Err(anyhow!("no hub given")),
    }
}

/// One message: the JSON line of `m2m listen`, or a sentence.
fn print_message(m: &Message, out: Output) -> anyhow::Result<()> {
    if out.json {
        return print_line(&super::listen::message_line(m).to_string());
    }
    println!(
        "{} from {}{} (sent {}): {}",
        m.message_type,
        m.from,
        if m.authenticated { "" } else { " (unverified)" },
        output::time_text(m.timestamp),
        m.payload
    );
    Ok(())
}

/// Where the delivered ids are kept: beside the key file.
fn seen_file(identity: Option<&Path>) -> anyhow::Result<PathBuf> {
    let key = match identity {
        Some(path) => path.to_owned(),
        None => crate::identity::default_path()?,
    };
    let mut name = key.file_name().unwrap_or_default().to_owned();
    name.push(".mail-seen");
    Ok(key.with_file_name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seen_file_is_beside_the_key() {
        assert_eq!(
            seen_file(Some(Path::new("/tmp/x/agent.key"))).unwrap(),
            PathBuf::from("/tmp/x/agent.key.mail-seen")
        );
    }
}
