#!/usr/bin/env bash
# Sets up the machine and checks everything the README promises: formatting, clippy with
# warnings as errors, a build and every test against the committed Cargo.lock (unit tests of
# the pure logic, loopback tests of each crate, lab tests with network namespaces, real
# shoald processes and the real CLI), and a short run of each fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --all-targets --locked
# Lab tests each build a cluster of namespaces; two at a time suits a 2-core machine.
cargo test --workspace --locked -- --test-threads=2

# Each fuzz target for a few seconds from the committed seeds. cargo-fuzz passes nightly-only
# flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. The
# fuzz crate is its own workspace (fuzz/Cargo.lock); its sanitizer build goes to target/<triple>/.
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "test: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
fuzz_secs=${SHOAL_FUZZ_SECONDS:-20}
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
for t in $(cargo fuzz list --fuzz-dir fuzz); do
  mkdir -p "$corpus/$t"
  echo "fuzz: $t for ${fuzz_secs}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --target-dir target "$t" \
    "$corpus/$t" "fuzz/seeds/$t" -- -max_total_time="$fuzz_secs" -print_final_stats=1
done
