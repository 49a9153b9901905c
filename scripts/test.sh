#!/usr/bin/env bash
# Sets up the machine and runs every test: unit tests of the pure logic, loopback tests of
# each crate, and the lab tests (network namespaces, real shoald processes, the real CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --workspace --all-targets
# Lab tests each build a cluster of namespaces; two at a time suits a 2-core machine.
cargo test --workspace -- --test-threads=2
