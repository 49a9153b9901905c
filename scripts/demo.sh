#!/usr/bin/env bash
# Sets up a fresh machine (Debian, root), builds shoal and runs the seed tutorial's
# walkthrough on a 2-node lab: DNS round robin (dnsrr), VIP load balancing, the routing
# mesh, then what Swarm could not do. Each step prints its command and output and is
# checked; the command exits non-zero at the first result that differs from the tutorial,
# and removes the lab in every case.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release -q -p shoal
exec ./target/release/shoal demo walkthrough --name "demo$$"
