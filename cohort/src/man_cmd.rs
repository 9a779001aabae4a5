//! `cohort man`: man pages from the same command definitions as `--help`, so the two cannot
//! disagree.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::Cli;

/// Writes cohort.1 and a page per command (cohort-apply.1, ...) into `dir`.
pub fn man(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Built, so that each command knows its full name (`cohort apply`) and inherits the global
    // flags; `help` is a page of nobody's.
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let mut written = vec![];
    write_pages(&command, dir, &mut written)?;
    for path in &written {
        out!("wrote {}", path.display());
    }
    Ok(())
}

fn write_pages(command: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result<()> {
    // Every page is the one program's (clap_mangen would say `apply 0.1.0`).
    let page = clap_mangen::Man::new(command.clone()).source(concat!("cohort ", env!("CARGO_PKG_VERSION")));
    let path = dir.join(page.get_filename());
    let mut text = vec![];
    page.render(&mut text)
        .with_context(|| format!("cannot render {}", path.display()))?;
    crate::repo_cmds::write_replacing(dir, &path, &text)
        .with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
