//! `mailbox` options of the bench command line, and how they become
//! [`MailboxBenchOptions`].

use clap::Args;

use super::MailboxBenchOptions;

/// `mailbox` options.
#[derive(Debug, Args)]
pub struct MailboxArgs {
    /// Messages stored, then drained, per run (the bench hub's quotas are raised to it).
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Payload bytes of each message (a JSON string in the signed body, then sealed).
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// `mail` actions in flight on the sender's WebSocket.
    #[arg(long, default_value_t = 256)]
    pipeline: usize,
    /// Ids per `mail_ack` (at most the hub's 256 in flight per subscription).
    #[arg(long, default_value_t = 128)]
    ack_batch: usize,
    /// Also run on this PostgreSQL server: a URL whose role may create databases (a fresh
    /// database beside the one named, dropped afterwards).
    #[arg(long)]
    postgres: Option<String>,
    /// Leave out the SQLite run (a temporary file).
    #[arg(long)]
    no_sqlite: bool,
    /// Runs per backend (a fresh hub and database each).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

impl MailboxArgs {
    /// The options these arguments describe.
    pub fn options(self) -> anyhow::Result<MailboxBenchOptions> {
        let opts = MailboxBenchOptions {
            messages: self.messages,
            size: self.size,
            pipeline: self.pipeline,
            ack_batch: self.ack_batch,
            sqlite: !self.no_sqlite,
            postgres: self.postgres,
            repeat: self.repeat.max(1),
        };
        opts.check()?;
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        mailbox: MailboxArgs,
    }

    #[test]
    fn defaults_and_bounds_of_the_command_line() {
        let opts = Cli::parse_from(["x"]).mailbox.options().unwrap();
        assert_eq!(opts.messages, 10_000);
        assert_eq!(opts.size, 200);
        assert!(opts.sqlite);
        assert_eq!(opts.postgres, None);
        let pg = Cli::parse_from(["x", "--postgres", "postgres://h/db", "--no-sqlite"])
            .mailbox
            .options()
            .unwrap();
        assert_eq!(pg.postgres.as_deref(), Some("postgres://h/db"));
        assert!(!pg.sqlite);
        for bad in [
            &["x", "--messages", "200001"][..],
            &["x", "--messages", "0"],
            &["x", "--ack-batch", "257"],
            &["x", "--ack-batch", "0"],
            &["x", "--size", "0"],
            &["x", "--no-sqlite"],
        ] {
            let err = Cli::parse_from(bad).mailbox.options().unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad:?}");
        }
    }
}
