//! `shoal`: the CLI.
fn main() {
    shoal_cli::main()
}
