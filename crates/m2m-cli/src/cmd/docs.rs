//! `m2m completions` and `m2m man`: generated from the clap definition of the command line
//! (so they cannot drift from it) and printed on stdout, for packagers and users to install.

use std::io::Write as _;

use anyhow::Context as _;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::exit::{self, Kind};

/// `m2m completions SHELL`.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "m2m", &mut script);
    write_stdout(&script)
}

/// `m2m man [COMMAND]`.
pub fn man(args: ManArgs) -> anyhow::Result<()> {
    let mut command = Cli::command();
    command.build();
    let page = match &args.command {
        None => command,
        Some(name) => {
            let found = command
                .get_subcommands()
                .find(|c| c.get_name() == name)
                .cloned();
            let sub = found.ok_or_else(|| {
                exit::fail(
                    Kind::Usage,
                    format!("no command `{name}` (see `m2m --help`)"),
                )
            })?;
            // The page is titled `m2m-send`, as man pages of subcommands are (git-commit(1)).
            // clap takes a `&'static str` here (owned names need its `string` feature); the
            // process prints one page and exits.
            let title: &'static str = format!("m2m-{}", sub.get_name()).leak();
            sub.name(title)
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut roff)
        .context("rendering the manual page")?;
    write_stdout(&roff)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("writing to stdout")
}
