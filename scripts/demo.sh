#!/usr/bin/env bash
# Sets up the machine, builds shoal and shows the cluster core on a 3-node lab:
# nodes, a replicated service spread over them, scaling, exec into a task, logs.
# The lab is removed at the end, also when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release -q
SHOAL=$PWD/target/release/shoal
LAB=demo$$
trap '"$SHOAL" lab down --name "$LAB" >/dev/null 2>&1 || true' EXIT

step() { printf '\n$ %s\n' "$*"; "$@"; }
on() { local n=$1; shift; "$SHOAL" -H "unix:///run/shoal-lab/$LAB/node$n/shoal.sock" "$@"; }
step_on() { local n=$1; shift; printf '\n[node%s] $ shoal %s\n' "$n" "$*"; on "$n" "$@"; }

step "$SHOAL" lab up --nodes 3 --name "$LAB"
step_on 1 node ls
step_on 1 service create --name vote --replicas 3 sh -c 'echo "task $(hostname) started"; exec sleep infinity'
step_on 1 service ls
step_on 1 service ps vote
step_on 1 service scale vote=5
sleep 2
step_on 1 service ps vote
line=$(on 1 service ps --format '{{.NodeHostname}} {{.ID}} {{.DesiredState}}' vote | grep ' running$' | head -n1)
node=${line%% *}; rest=${line#* }; task=${rest%% *}
step_on "${node#node}" exec "$task" -- hostname
step_on 1 service logs vote
step_on 1 service rm vote
