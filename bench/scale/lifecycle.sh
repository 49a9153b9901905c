#!/usr/bin/env bash
# The kernel's part of a task's life on a crowded node: a task started in a fresh network
# namespace as the agent starts it (shoal-exec), with 0, 300 and 900 other named namespaces
# on the machine, CPU per task beside the first count's (the same-run baseline; target flat).
# Everything is named shoalbench-life-<pid>-... and removed on exit, also on failure.
# Run as root from anywhere: bash bench/scale/lifecycle.sh
#
# Knobs (environment): PADS="0 300 900" TASKS=200 ROUNDS=3 BALLAST_MB=0
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p shoal-exec --example task_start_bench
exec target/release/examples/task_start_bench
