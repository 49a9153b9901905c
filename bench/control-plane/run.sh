#!/usr/bin/env bash
# The control plane at scale: 3 real managers (a lab of 3 manager nodes, drained, so they
# run nothing themselves) and simulated agents that join with the join token, each with its
# own key and certificate, and speak the agent's protocol to the leader (session,
# heartbeats, status reports, endpoint acks) without running tasks. See README.md.
#
#   sudo bench/control-plane/run.sh                      # 1,000 nodes / 100,000 tasks
#   NODES=100 TASKS=10000 sudo bench/control-plane/run.sh # quicker
#
# Baseline, same run and managers: BASE_NODES (10) nodes / BASE_TASKS (1,000) tasks first.
# The cluster uses Swarm's defaults: heartbeats every 5 s, a node Down after 3 missed.
set -euo pipefail
cd "$(dirname "$0")/../.."
NODES=${NODES:-1000}
TASKS=${TASKS:-100000}
BASE_NODES=${BASE_NODES:-10}
BASE_TASKS=${BASE_TASKS:-1000}
CHANGES=${CHANGES:-60}
PROFILE=${PROFILE:-release}
if [[ $PROFILE == release ]]; then
  cargo build --release -q -p shoal -p shoal-bench-control-plane
else
  cargo build -q -p shoal -p shoal-bench-control-plane
fi
BIN=$PWD/target/$PROFILE
LAB=cp$$
# LOGS=DIR keeps each manager's shoald log (DIR/nodeN.log) when the lab is taken down.
keep_logs() {
  if [[ -n ${LOGS:-} ]]; then
    mkdir -p "$LOGS"
    for n in 1 2 3; do cp "/run/shoal-lab/$LAB/node$n/shoald.log" "$LOGS/node$n.log" 2>/dev/null || true; done
  fi
}
trap 'keep_logs; "$BIN/shoal" lab down --name "$LAB" >/dev/null 2>&1 || true' EXIT
# Each simulated node holds two connections to the leader, as an agent does.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
SHOALD_BIN=$BIN/shoald "$BIN/shoal" lab up --nodes 3 --managers 3 --name "$LAB" \
  --heartbeat-period 5s --heartbeat-grace 3 >/dev/null
"$BIN/shoal" lab exec --name "$LAB" node1 -- "$BIN/control-plane" --lab "$LAB" --shoal "$BIN/shoal" \
  --nodes "$NODES" --tasks "$TASKS" --base-nodes "$BASE_NODES" --base-tasks "$BASE_TASKS" \
  --changes "$CHANGES" "$@"
