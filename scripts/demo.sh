#!/usr/bin/env bash
# Sets up the machine, builds shoal and walks through Swarm's DNS-based load balancing
# (scenario 1 of the seed) on a 2-node lab: an overlay network, a client and a 2-replica
# vote service, `dig`, `ping` and `curl` from inside the client task, and what happens to
# DNS when a task dies. The lab is removed at the end, also when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release -q -p shoal
SHOAL=$PWD/target/release/shoal
LAB=demo$$
trap '"$SHOAL" lab down --name "$LAB" >/dev/null 2>&1 || true' EXIT

on() { local n=$1; shift; "$SHOAL" -H "unix:///run/shoal-lab/$LAB/node$n/shoal.sock" "$@"; }
step() { local n=$1; shift; printf '\n[node%s] $ shoal %s\n' "$n" "$*"; on "$n" "$@"; }
# Runs a command inside a task, on the node that runs it (like `docker exec` there).
in_task() {
  local task=$1; shift
  local node
  node=$(on 1 service ps --format '{{.Node}} {{.Name}} {{.DesiredState}}' "${task%%.*}" |
    awk -v t="$task" '$2==t && $3=="Running" {print $1; exit}')
  printf '\n[%s] $ shoal exec %s -- %s\n' "$node" "$task" "$*"
  on "${node#node}" exec "$task" -- "$@"
}

printf '$ shoal lab up --nodes 2\n'
"$SHOAL" lab up --nodes 2 --name "$LAB"
step 1 node ls
step 1 network create --driver overlay overlay1
step 1 service create --endpoint-mode dnsrr --replicas 1 --name client --network overlay1 "$SHOAL" demo client
step 1 service create --endpoint-mode dnsrr --name vote --network overlay1 --replicas 2 "$SHOAL" demo vote
step 1 service ls
step 1 service ps vote
in_task client.1 dig vote
printf '\n# The order is shuffled per query:\n'
for _ in 1 2 3; do in_task client.1 dig +short vote; done
printf '\n# ping and curl take the first address after glibc has sorted them (RFC 6724: the\n'
printf '# longest prefix shared with the client'"'"'s own address first), so they can favour a task.\n'
in_task client.1 ping -c1 vote
in_task client.1 ping -c1 vote
for _ in 1 2 3 4; do in_task client.1 sh -c 'curl -s vote | grep Processed'; done

printf '\n# A vote task dies: it leaves DNS on every node at once (no 600 s TTL).\n'
victim=$(on 1 service ps --no-trunc --format '{{.Name}} {{.ID}}' vote | awk '$1=="vote.1" {print $2; exit}')
pid=$(curl -sf --unix-socket "/run/shoal-lab/$LAB/node1/shoal.sock" "http://shoal/v1/tasks/$victim" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["Status"]["PID"])')
printf '$ kill -9 %s   # vote.1\n' "$pid"
kill -9 "$pid"
sleep 0.2
in_task client.1 dig +short vote
sleep 6
step 1 service ps vote
in_task client.1 dig +short vote
