//! `shoal completion bash|zsh|fish` (clap_complete) and the hidden `shoal gen-man DIR`
//! (clap_mangen), both made from the same clap tree the binary parses with, so they cannot
//! drift from it.
//!
//! The man pages are a hidden subcommand rather than an xtask: `scripts/package.sh` runs
//! the binary it packages, and the `shoal` binary already links `shoald`'s clap tree (the
//! same package builds both), so one call writes `shoal(1)`, a page per subcommand
//! (`shoal-service-create(1)`) and `shoald(8)`, with no extra crate to build.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::Cli;

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish (also elvish, powershell). Load it with, for bash,
    /// `source <(shoal completion bash)`, or install it as
    /// /usr/share/bash-completion/completions/shoal.
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct GenManArgs {
    /// Where to write the pages (made if missing).
    pub dir: PathBuf,
}

pub fn completion(a: CompletionArgs) -> Result<()> {
    use std::io::Write;
    // Made whole first: clap_complete panics on a failed write, and `| head` is no failure.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "shoal", &mut script);
    match std::io::stdout().write_all(&script) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("failed to write the completion script")
        }
        _ => Ok(()),
    }
}

/// Writes `shoal.1`, one page per visible subcommand, and a section-8 page for each of
/// `daemons` (the programs shipped beside `shoal`: `shoald`).
pub fn gen_man(a: GenManArgs, daemons: &[clap::Command]) -> Result<()> {
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("failed to create {}", a.dir.display()))?;
    write_pages(&a.dir, daemons)
        .with_context(|| format!("failed to write the man pages into {}", a.dir.display()))?;
    Ok(())
}

fn write_pages(dir: &Path, daemons: &[clap::Command]) -> std::io::Result<()> {
    clap_mangen::generate_to(Cli::command(), dir)?;
    for d in daemons {
        clap_mangen::Man::new(d.clone())
            .section("8")
            .generate_to(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_for_every_visible_subcommand_and_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = clap::Command::new("shoald").about("The daemon");
        gen_man(
            GenManArgs {
                dir: dir.path().to_path_buf(),
            },
            &[daemon],
        )
        .unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for want in [
            "shoal.1",
            "shoal-service-create.1",
            "shoal-events.1",
            "shoal-completion.1",
            "shoald.8",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        // Hidden commands get no page.
        assert!(!names.iter().any(|n| n.contains("gen-man")), "{names:?}");
    }
}
