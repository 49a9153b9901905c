//! `shoal`: the CLI.
use clap::CommandFactory;

fn main() {
    // shoald's flags, for `shoal gen-man` to write its page beside the CLI's.
    shoal_cli::main(&[shoald::Args::command()])
}
