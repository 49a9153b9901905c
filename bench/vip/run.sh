#!/usr/bin/env bash
# VIP load balancing with the eBPF socket balancer (shoal-bpf, one per node) and with the
# nftables balancer (shoal-lb, one table per sandbox), each against straight to a task address
# in the same run: new-connection latency (p50, p99), and the time of one endpoint change, with
# 1, 1,000 and 10,000 services and 1 and 300 client sandboxes on the node. Everything happens
# in throwaway network namespaces (shoalbench-vip-<pid>-...) on their own bridge; the root
# namespace is untouched (the eBPF programs sit at the cgroup v2 root but act only on the
# bench's own sandboxes, and go when the bench exits).
# Run as root from anywhere: bash bench/vip/run.sh
#
# Knobs (environment): SERVICES="1 1000 10000" SANDBOXES="1 300" PORTS=1 CONNS=4000 AGED=70000
#   UPDATES=100 NFT_MANY_MAX=1000 LIMIT=1500 (seconds before the run is stopped)
set -euo pipefail

export SERVICES=${SERVICES:-"1 1000 10000"}
export SANDBOXES=${SANDBOXES:-"1 300"}
export PORTS=${PORTS:-1}
export CONNS=${CONNS:-4000}
export AGED=${AGED:-70000}
export UPDATES=${UPDATES:-100}
export NFT_MANY_MAX=${NFT_MANY_MAX:-1000}
LIMIT=${LIMIT:-1500}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH_PID=
NS_PREFIX=

die() { echo "run.sh: $*" >&2; exit 1; }

cleanup() {
    if [ -n "$BENCH_PID" ]; then
        kill "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    # The bench deletes its namespaces itself unless it was killed.
    if [ -n "$NS_PREFIX" ]; then
        for ns in $(ip netns list | awk '{print $1}' | grep "^$NS_PREFIX" || true); do
            ip netns del "$ns" 2>/dev/null || true
        done
    fi
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, nftables, eBPF)"
missing=()
command -v nft >/dev/null || missing+=(nftables)
command -v ip >/dev/null || missing+=(iproute2)
command -v clang >/dev/null || missing+=(clang)
[ -e /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "building the bench (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p shoal-lb --example vip_bench)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')

echo "kernel $(uname -r), $(nft --version), $(clang --version | head -1), $(nproc) cores" >&2
"$TARGET_DIR/release/examples/vip_bench" &
BENCH_PID=$!
NS_PREFIX="shoalbench-vip-$BENCH_PID-"
# The sleep is killed with the watchdog: left behind, it would hold this script's output open.
( trap 'kill $sleeper 2>/dev/null; exit 0' TERM
  sleep "$LIMIT" >/dev/null 2>&1 & sleeper=$!
  wait $sleeper && kill "$BENCH_PID" 2>/dev/null && echo "run.sh: stopped after ${LIMIT}s" >&2 ) &
WATCHDOG=$!
status=0
wait "$BENCH_PID" || status=$?
kill "$WATCHDOG" 2>/dev/null || true
BENCH_PID=
exit "$status"
