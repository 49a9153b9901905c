#!/usr/bin/env bash
# The cost of mutual TLS on port 2377: the same 3-node lab built from two versions of shoal,
# one round after the other (base, tls, base, tls, ...), so that both see the same machine:
#   base  commit 7414b02, the last one whose cluster port spoke plaintext h2c
#   tls   this checkout (mTLS on every connection, certificates issued at join)
# Per round and version:
#   join       node3 leaves and joins again JOINS times; the time `shoal join` takes to
#              return (TLS handshake, token check, CSR signed, node registered, session up)
#   endpoints  CHANGES scale steps of one service; the leader's figures for a change to be
#              applied and acked by every node (as bench/endpoints)
# Prints p50/p99 of each, per version, and tls ÷ base.
#
#   sudo bench/tls/run.sh                 # ROUNDS=2 JOINS=30 CHANGES=100
# The first run builds both versions in release mode (15 minutes or more on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-2}
JOINS=${JOINS:-30}
CHANGES=${CHANGES:-100}
BASE_COMMIT=7414b02
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$TARGET/bench-tls
mkdir -p "$WORK"

# The base is built first in the same target directory (the dependencies they share are
# built once) and its binaries kept in <target>/bench-tls/bin; later runs reuse them.
if [ ! -x "$WORK/bin/shoald" ]; then
  echo "building the base version ($BASE_COMMIT) ..." >&2
  rm -rf "$WORK/src"
  git worktree prune
  git worktree add -q --detach "$WORK/src" "$BASE_COMMIT"
  (cd "$WORK/src" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q --locked -p shoal)
  git worktree remove --force "$WORK/src"
  mkdir -p "$WORK/bin"
  cp "$TARGET/release/shoal" "$TARGET/release/shoald" "$WORK/bin/"
fi
cargo build --release -q --locked -p shoal
declare -A BIN=([base]="$WORK/bin/shoal" [tls]="$TARGET/release/shoal")

LABS=()
cleanup() {
  for l in "${LABS[@]}"; do
    "${BIN[tls]}" lab down --name "$l" >/dev/null 2>&1 || "${BIN[base]}" lab down --name "$l" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
OUT=$(mktemp -d)
trap 'cleanup; rm -rf "$OUT"' EXIT

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000 )); }

run_round() { # version round
  local v=$1 r=$2 shoal=${BIN[$1]} lab="tls$$$1$2"
  LABS+=("$lab")
  "$shoal" lab up --nodes 3 --name "$lab" >/dev/null
  local s1=("$shoal" -H "unix:///run/shoal-lab/$lab/node1/shoal.sock")
  local s3=("$shoal" -H "unix:///run/shoal-lab/$lab/node3/shoal.sock")
  local sock=/run/shoal-lab/$lab/node1/shoal.sock
  local token manager
  token=$("${s1[@]}" join-token -q worker)
  manager=$("${s1[@]}" node inspect --format '{{.ManagerStatus.Addr}}' node1)

  for _ in $(seq 1 "$JOINS"); do
    "${s3[@]}" leave >/dev/null
    # The node that left is removed, as an operator would: else each round leaves a node
    # that looks Ready until its heartbeats run out, and tasks go to it.
    for id in $("${s1[@]}" node ls --format '{{.ID}} {{.Hostname}}' | awk '$2 == "node3" {print $1}'); do
      "${s1[@]}" node rm --force "$id" >/dev/null
    done
    t0=$(date +%s%N)
    "${s3[@]}" join --token "$token" "$manager" >/dev/null
    ms_since "$t0" >>"$OUT/join-$v"
  done

  "${s1[@]}" network create overlay1 >/dev/null
  "${s1[@]}" service create --runtime host --name web --network overlay1 --replicas 3 "$shoal" demo vote --port 8000 >/dev/null
  curl -sf -X DELETE --unix-socket "$sock" http://shoal/v1/endpoints/stats
  for i in $(seq 1 "$CHANGES"); do
    if (( i % 2 )); then n=4; else n=3; fi
    "${s1[@]}" service scale "web=$n" >/dev/null
  done
  curl -sf --unix-socket "$sock" http://shoal/v1/endpoints/stats >"$OUT/endpoints-$v-$r.json"
  "$shoal" lab down --name "$lab" >/dev/null
  unset 'LABS[-1]'
}

for r in $(seq 1 "$ROUNDS"); do
  for v in base tls; do
    echo "round $r: $v (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    run_round "$v" "$r"
  done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys, glob, os
out, rounds = sys.argv[1], int(sys.argv[2])
def pct(xs, p):
    xs = sorted(xs); return xs[max(0, -(-len(xs) * p // 100) - 1)]
join = {v: [int(l) / 1000 for l in open(os.path.join(out, f"join-{v}"))] for v in ("base", "tls")}
print(f"join (node3 leaves and joins; `shoal join` until it returns), {len(join['tls'])} joins per version:")
for v in ("base", "tls"):
    print(f"  {v:4}  p50 {pct(join[v], 50):7.1f} ms   p99 {pct(join[v], 99):7.1f} ms")
print(f"  tls/base  p50 {pct(join['tls'], 50) / pct(join['base'], 50):.2f}x   p99 {pct(join['tls'], 99) / pct(join['base'], 99):.2f}x")
print("endpoint propagation to all 3 nodes (leader's figures, per round):")
agg = {}
for v in ("base", "tls"):
    for r in range(1, rounds + 1):
        s = json.load(open(os.path.join(out, f"endpoints-{v}-{r}.json")))
        agg.setdefault(v, []).append(s)
        print(f"  {v:4} round {r}: {s['Count']} changes  p50 {s['P50Ms']} ms   p99 {s['P99Ms']} ms")
med = lambda v, k: sorted(s[k] for s in agg[v])[len(agg[v]) // 2]
print(f"  tls/base (median of rounds)  p50 {med('tls','P50Ms') / med('base','P50Ms'):.2f}x   p99 {med('tls','P99Ms') / med('base','P99Ms'):.2f}x")
PY
