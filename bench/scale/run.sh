#!/usr/bin/env bash
# Scale on a 3-node lab with one /16 overlay: how the cost of an endpoint change on a node
# grows with the tasks it runs, and how long a change takes to reach clients everywhere.
#
#   sudo bench/scale/run.sh                 # STAGES="10 100 300" tasks per node, 1,000 at the end
#   STAGES="10 100" CHANGES=20 sudo bench/scale/run.sh     # quicker
#   BIN=/tmp/before sudo bench/scale/run.sh  # binaries copied there (shoal, shoald), no build
#   LOGS=/tmp/scale-logs SHOAL_LOG=info,shoal_agent::network=debug sudo bench/scale/run.sh
#
# Stages: services of 2 replicas (idle processes, one web service) are added until the lab
# runs STAGE tasks per node; at each stage, after SETTLE seconds (5) and WARMUP changes not
# counted (5), CHANGES endpoint changes (scale web 3<->2, each
# waited for until every node acked it) are made and each node's shoald CPU time (its
# process CPU-time clock: every thread, ended ones included) is divided by CHANGES.
# Baseline, same run: the first stage's figure (the target is flat: ratio ~1). Daemon RSS
# per node is printed at each stage.
# Then 1,000 tasks (500 services x 2) are in place, with no node ever Down (checked once a
# second throughout), and PROBES scale-downs/ups of web are timed by a client on every node:
# from the API call until that node's 127.0.0.11 answers tasks.web with the new set and the
# web VIP accepts a connection. Beside it, the leader's ack-based figure and one committed
# Raft write (the floor under any change).
set -euo pipefail
cd "$(dirname "$0")/../.."
STAGES=${STAGES:-"10 100 300"}
CHANGES=${CHANGES:-30}
PROBES=${PROBES:-200}
FINAL=${FINAL:-1000}
# Each figure is a percentile of these samples: none would leave nothing to report.
for v in CHANGES PROBES; do
    if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
        echo "bench/scale: $v=${!v} must be a whole number of at least 1" >&2
        exit 2
    fi
done
# BIN=DIR: the shoal and shoald in DIR instead of this checkout's release build (to run a
# copy of the binaries from before a change against those after it, back to back).
if [ -n "${BIN:-}" ]; then
    SHOAL=$BIN/shoal
else
    cargo build --release -q -p shoal
    SHOAL=$PWD/target/release/shoal
fi
LAB=scale$$
# LOGS=DIR: each node's shoald.log is copied there (as nodeN.log) before the lab goes, e.g.
# with SHOAL_LOG=info,shoal_agent::network=debug for the agent's lock timings.
keep_logs() {
    [ -n "${LOGS:-}" ] || return 0
    mkdir -p "$LOGS"
    for log in /run/shoal-lab/"$LAB"/node*/shoald.log; do
        [ -f "$log" ] && cp "$log" "$LOGS/$(basename "$(dirname "$log")").log"
    done
    return 0
}
trap 'keep_logs; "$SHOAL" lab down --name "$LAB" >/dev/null 2>&1 || true' EXIT
"$SHOAL" lab up --nodes 3 --name "$LAB" >/dev/null
python3 "$(dirname "$0")/driver.py" "$SHOAL" "$LAB" "$STAGES" "$CHANGES" "$PROBES" "$FINAL"
