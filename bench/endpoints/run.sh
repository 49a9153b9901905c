#!/usr/bin/env bash
# Endpoint propagation on a 3-node lab: how long from a change of the endpoint table (a
# task starts or stops running) until every node has applied it (DNS zones, VXLAN
# forwarding entries) and acked. The leader measures each change; this script makes
# CHANGES of them by scaling a service up and down, then prints the leader's figures.
#
# Baseline, same run: the latency of one committed Raft write through the API
# (`node update --label-add`, CLI start-up included), the floor under any change.
#
#   sudo bench/endpoints/run.sh            # CHANGES=200 by default (enough for a p99)
set -euo pipefail
cd "$(dirname "$0")/../.."
CHANGES=${CHANGES:-200}
cargo build --release -q -p shoal
SHOAL=$PWD/target/release/shoal
LAB=bench$$
trap '"$SHOAL" lab down --name "$LAB" >/dev/null 2>&1 || true' EXIT
"$SHOAL" lab up --nodes 3 --name "$LAB" >/dev/null
S=("$SHOAL" -H "unix:///run/shoal-lab/$LAB/node1/shoal.sock")
SOCK=/run/shoal-lab/$LAB/node1/shoal.sock

"${S[@]}" network create overlay1 >/dev/null
"${S[@]}" service create --runtime host --name client --mode global --network overlay1 "$SHOAL" demo client >/dev/null
"${S[@]}" service create --runtime host --name web --network overlay1 --replicas 3 "$SHOAL" demo vote --port 8000 >/dev/null
curl -sf -X DELETE --unix-socket "$SOCK" http://shoal/v1/endpoints/stats

# Each scale step starts or stops one task: one change to propagate (the CLI waits until
# every node has it before returning).
for i in $(seq 1 "$CHANGES"); do
  if (( i % 2 )); then n=4; else n=3; fi
  "${S[@]}" service scale "web=$n" >/dev/null
done
stats=$(curl -sf --unix-socket "$SOCK" http://shoal/v1/endpoints/stats)

# Baseline: committed writes through the API.
lat=()
for i in $(seq 1 "$CHANGES"); do
  t0=$(date +%s%N)
  "${S[@]}" node update --label-add "bench=$i" node2 >/dev/null
  t1=$(date +%s%N)
  lat+=($(( (t1 - t0) / 1000 )))
done
read -r b50 b99 <<<"$(printf '%s\n' "${lat[@]}" | sort -n | awk '{a[NR]=$1} END {i50=int((NR*50+99)/100); i99=int((NR*99+99)/100); printf "%.1f %.1f\n", a[i50]/1000, a[i99]/1000}')"

python3 - "$stats" "$b50" "$b99" <<'PY'
import json, sys
s = json.loads(sys.argv[1]); b50, b99 = float(sys.argv[2]), float(sys.argv[3])
print(f"endpoint propagation to all 3 nodes over {s['Count']} changes:")
print(f"  p50 {s['P50Ms']} ms   p99 {s['P99Ms']} ms   max {s['MaxMs']} ms   (target: p99 <= 100 ms)")
print(f"baseline, one committed write through the API (CLI start included):")
print(f"  p50 {b50:.1f} ms   p99 {b99:.1f} ms")
print(f"ratio propagation/commit: p50 {s['P50Ms']/b50:.2f}x   p99 {s['P99Ms']/b99:.2f}x")
PY
