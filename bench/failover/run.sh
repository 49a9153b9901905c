#!/usr/bin/env bash
# Leader failover under writes: for 3 and for 5 managers (a lab each, with WORKERS worker
# nodes), clients create services through every non-leader manager while the leader's
# shoald is killed with SIGKILL; measured: the time until the first create begun after the
# kill succeeds, until `node ls` names a new leader, until every worker has a session with
# it; writes that failed (and why); acknowledged writes lost (every surviving manager, and
# the restarted one, must list each). The daemon is restarted and the round repeated.
# Baseline, same run and lab: the same rounds with SIGTERM (leadership handed over),
# interleaved with the kills, and one create alone with no failure. See README.md.
#
#   sudo bench/failover/run.sh                          # 3 and 5 managers, 10 kills + 10 terms each
#   COUNTS=3 ROUNDS=4 TERM_ROUNDS=2 sudo bench/failover/run.sh   # quicker
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/../.."
COUNTS=${COUNTS:-"3 5"}
ROUNDS=${ROUNDS:-10}
TERM_ROUNDS=${TERM_ROUNDS:-$ROUNDS}
WORKERS=${WORKERS:-2}
cargo build --release -q -p shoal
BIN=$PWD/target/release
LAB=fo$$
trap '"$BIN/shoal" lab down --name "$LAB" >/dev/null 2>&1 || true' EXIT
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, uptime before: $(uptime)"
for m in $COUNTS; do
  SHOALD_BIN=$BIN/shoald "$BIN/shoal" lab up --nodes $((m + WORKERS)) --managers "$m" --name "$LAB" >/dev/null
  python3 "$HERE/driver.py" "$BIN/shoal" "$LAB" "$m" "$WORKERS" "$ROUNDS" "$TERM_ROUNDS"
  "$BIN/shoal" lab down --name "$LAB" >/dev/null
  echo
done
echo "uptime after: $(uptime)"
