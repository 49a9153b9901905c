#!/usr/bin/env bash
# Requests lost during a rolling update (issue 11), beside a same-run baseline without one.
# On a 3-node lab, a service of REPLICAS `shoal demo vote --port 8000` host-runtime tasks on
# node2 and node3, and from node1 one sequential client (load.py: a new connection per
# request, at most WINDOW seconds and MAX requests per window). For each endpoint mode:
#   vip    from a client task on the overlay, to the service's VIP (`web:8000`, resolved once)
#   dnsrr  from the same client task, the name resolved before every request (`webrr:8000`,
#          a service with --endpoint-mode dnsrr: the task's DNS answers every task, shuffled)
#   mesh   from node1's own namespace, to node1's address on the published port 8080 (node1
#          runs no task of the service: the mesh forwards to node2 or node3)
# three windows of the same length: a baseline without an update, then a `service update
# --force --update-parallelism 2 --update-order start-first` started LEAD seconds into the
# window, then the same with stop-first. Prints requests sent, failed (count, %, by kind),
# p50/p99 latency, and the update's duration (UpdateStatus: started to completed, which
# includes the update monitor after the last slot) per window.
#
# Run as root: bash bench/rollout/run.sh          (~4 minutes after the build)
# Knobs (environment): MODES="vip dnsrr mesh" REPLICAS=10 PARALLELISM=2 WINDOW=30 LEAD=2
#                      MAX=200000 MONITOR=5s (the update monitor, docker's default)
#                      SHOAL_BIN=path (a shoal binary to use instead of building one)
set -euo pipefail

MODES=${MODES:-"vip dnsrr mesh"}
REPLICAS=${REPLICAS:-10}
PARALLELISM=${PARALLELISM:-2}
WINDOW=${WINDOW:-30}
LEAD=${LEAD:-2}
MAX=${MAX:-200000}
MONITOR=${MONITOR:-5s}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/bench/rollout
LAB=rollbench$$
SHOAL=
LOAD_PID=
OUT=$(mktemp -d /tmp/shoal-rollbench.XXXXXX)

die() { echo "run.sh: $*" >&2; exit 1; }

# The client runs under `shoal exec` / `shoal lab exec`, which wait for their child: stop the
# child and then the exec, both by PID. `lab down` kills whatever is left in the lab anyway.
stop() {
    local pid=$1 child
    [ -n "$pid" ] || return 0
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do
        kill "$child" 2>/dev/null || true
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop "$LOAD_PID"
    if [ -n "$SHOAL" ]; then
        "$SHOAL" lab down --name "$LAB" >/dev/null 2>&1 ||
            echo "run.sh: 'shoal lab down --name $LAB' failed; run it by hand" >&2
        left=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^shoal-$LAB-" || true)
        if [ -n "$left" ]; then
            echo "run.sh: namespaces left behind:" $left >&2
            status=1
        fi
    fi
    rm -rf "$OUT"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, nftables)"
missing=()
command -v nft >/dev/null || missing+=(nftables)
command -v ip >/dev/null || missing+=(iproute2)
command -v pgrep >/dev/null || missing+=(procps)
command -v python3 >/dev/null || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for m in $MODES; do
    case $m in vip|dnsrr|mesh) ;; *) die "unknown mode '$m' in MODES (vip, dnsrr, mesh)" ;; esac
done

if [ -n "${SHOAL_BIN:-}" ]; then
    SHOAL=$SHOAL_BIN
else
    echo "building shoal (release)..." >&2
    (cd "$ROOT" && cargo build --release -q -p shoal)
    TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
    SHOAL=$TARGET_DIR/release/shoal
fi
S=("$SHOAL" -H "unix:///run/shoal-lab/$LAB/node1/shoal.sock")

echo "lab $LAB: 3 nodes..." >&2
"$SHOAL" lab up --nodes 3 --name "$LAB" >/dev/null
NODE1=$("${S[@]}" node inspect --format '{{.Status.Addr}}' node1)
"${S[@]}" network create ovl >/dev/null
"${S[@]}" service create --runtime host --name client --network ovl \
    --constraint node.hostname==node1 "$SHOAL" demo client >/dev/null

# web (VIP, published 8080) serves the vip and mesh modes, webrr (dnsrr) the dnsrr mode; only
# the one being measured runs.
SERVICE=
service_for() {
    local want=web
    [ "$1" = dnsrr ] && want=webrr
    [ "$SERVICE" = "$want" ] && return 0
    [ -z "$SERVICE" ] || "${S[@]}" service rm "$SERVICE" >/dev/null
    echo "service $want: $REPLICAS tasks on node2 and node3..." >&2
    local args=(--runtime host --name "$want" --network ovl --replicas "$REPLICAS"
        --constraint node.hostname!=node1 --update-monitor "$MONITOR")
    if [ "$want" = web ]; then
        args+=(-p 8080:8000)
    else
        args+=(--endpoint-mode dnsrr)
    fi
    "${S[@]}" service create "${args[@]}" "$SHOAL" demo vote --port 8000 >/dev/null
    SERVICE=$want
}

start_load() {
    local mode=$1 file=$2
    case $mode in
    vip) "${S[@]}" exec client.1 -- python3 "$HERE/load.py" web:8000 "$WINDOW" "$MAX" ;;
    dnsrr) "${S[@]}" exec client.1 -- python3 "$HERE/load.py" webrr:8000 "$WINDOW" "$MAX" --resolve-each ;;
    mesh) "$SHOAL" lab exec --name "$LAB" node1 -- python3 "$HERE/load.py" "$NODE1:8080" "$WINDOW" "$MAX" ;;
    esac >"$file" &
    LOAD_PID=$!
}

# One window: load for WINDOW seconds, with an update LEAD seconds in unless it is the
# baseline. Writes the load's JSON and, for an update, its figures beside it.
window() {
    local mode=$1 kind=$2 file=$OUT/$1-$2
    echo "$mode: $kind window (${WINDOW}s)..." >&2
    start_load "$mode" "$file.json"
    if [ "$kind" != baseline ]; then
        sleep "$LEAD"
        local t0 t1 rc=0
        t0=$(date +%s.%N)
        timeout 300 "${S[@]}" service update --force --update-parallelism "$PARALLELISM" \
            --update-order "$kind" "$SERVICE" >"$file.update" 2>&1 || rc=$?
        t1=$(date +%s.%N)
        "${S[@]}" service inspect "$SERVICE" >"$file.inspect"
        echo "$t0 $t1 $rc" >"$file.times"
    fi
    local status=0
    wait "$LOAD_PID" || status=$?
    LOAD_PID=
    [ "$status" = 0 ] && [ -s "$file.json" ] || die "the load client failed in $mode $kind (exit $status)"
}

echo "kernel $(uname -r), $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in $MODES; do
    service_for "$mode"
    for kind in baseline start-first stop-first; do
        window "$mode" "$kind"
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT" "$MODES" "$REPLICAS" "$PARALLELISM" "$WINDOW" "$MONITOR" <<'PY'
import json, os, sys
out, modes, replicas, par, window, monitor = sys.argv[1:]
print(f"\n{replicas} replicas on node2+node3, parallelism {par}, {window} s windows, update monitor {monitor};"
      " latency of every request (a failure counts with the time it took)")
print("during update: the requests started between the update command's start and its return")
print(f"{'mode':<6} {'window':<12} {'sent':>7} {'failed':>7} {'failed %':>9} {'p50 ms':>8} {'p99 ms':>8} {'update s':>9} {'during update: sent':>20} {'failed':>7}  failures")
notes = []
for mode in modes.split():
    for kind in ["baseline", "start-first", "stop-first"]:
        base = os.path.join(out, f"{mode}-{kind}")
        r = json.load(open(base + ".json"))
        pct = 100.0 * r["failed"] / r["sent"] if r["sent"] else 0.0
        upd, dsent, dfailed = "-", "-", "-"
        if kind != "baseline":
            t0, t1, rc = open(base + ".times").read().split()
            st = json.load(open(base + ".inspect"))
            st = st[0] if isinstance(st, list) else st
            us = st.get("UpdateStatus") or {}
            if rc != "0" or us.get("State") != "completed":
                upd = "failed"
                last = (open(base + ".update").read().strip().splitlines() or [""])[-1]
                notes.append(f"{mode} {kind}: update exit {rc}, state {us.get('State')}: {last}")
            elif us.get("StartedAt") and us.get("CompletedAt"):
                upd = f"{(us['CompletedAt'] - us['StartedAt']) / 1000:.1f}"
            lo, hi = float(t0), float(t1)
            dsent = sum(n for t, n in r["per_tenth"].items() if lo <= (int(t) + 0.5) / 10 <= hi)
            dfailed = sum(1 for t in r["failed_at"] if lo <= t <= hi)
            # The load must cover the whole update, or the figures miss part of it.
            if r["first"] > float(t0) or r["last"] < float(t1):
                notes.append(f"{mode} {kind}: the load window did not cover the update "
                             f"(load {r['first']:.1f}-{r['last']:.1f}, update {float(t0):.1f}-{float(t1):.1f}): raise WINDOW")
        kinds = ", ".join(f"{k} {v['count']}" for k, v in sorted(r["errors"].items()))
        print(f"{mode:<6} {kind:<12} {r['sent']:>7} {r['failed']:>7} {pct:>8.3f}% {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {upd:>9} {dsent:>20} {dfailed:>7}  {kinds}")
        for k, v in sorted(r["errors"].items()):
            notes.append(f"{mode} {kind}: first {k}: {v['first']}")
for n in notes:
    print("  " + n)
PY
