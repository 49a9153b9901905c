#!/usr/bin/env bash
# The routing mesh's cost per new connection across nodes, against a plain server in the same
# run. On a 2-node lab, a service `vote` (2 tasks, both on node2) publishes 8080:80; a plain
# `shoal demo vote` listens on node2's own address, port 9000, outside any task, and a second
# one on 9001. From node1's namespace one sequential client
# (crates/shoal-lb/examples/conn_bench.rs) does connect + one HTTP GET + close, interleaved in
# blocks, to:
#   direct        node2-addr:9000  baseline: node1 -> lab bridge -> node2, no NAT rule matches
#   direct ×2     node2-addr:9000 and :9001 in turn: two plain servers taken round robin by the
#                                  client, as the mesh takes the service's two tasks (each
#                                  connection wakes the server that was idle, on both paths)
#   mesh @node2   node2-addr:8080  the published port on the node that runs the tasks
#   mesh @node1   node1-addr:8080  the published port on a node without tasks (forwarded
#                                  to node2 over the underlay, no VXLAN)
# and prints connections/s, p50 and p99 per path, with the difference and ratio to direct.
#
# Run as root: bash bench/mesh/run.sh    (a few seconds after the build)
# Knobs (environment): CONNS=5000 (per path) BLOCK=100 MAX_SECS=20 (per path) WARMUP=50
#                      MESH_PATH=auto (the nodes' --mesh-path: auto, tc or nftables)
set -euo pipefail

export CONNS=${CONNS:-5000}
export BLOCK=${BLOCK:-100}
export MAX_SECS=${MAX_SECS:-20}
export WARMUP=${WARMUP:-50}
MESH_PATH=${MESH_PATH:-auto}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
LAB=meshbench$$
SHOAL=
SERVER_PID=
SERVER2_PID=
CLIENT_PID=
NODE_IDS=()

die() { echo "run.sh: $*" >&2; exit 1; }

# The baseline server and the client run under `shoal lab exec`, which waits for its child:
# stop the child and then the exec, both by PID. `lab down` kills whatever is left in the
# lab's cgroup anyway.
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
    stop "$CLIENT_PID"
    stop "$SERVER_PID"
    stop "$SERVER2_PID"
    if [ -n "$SHOAL" ]; then
        local pattern="^shoal-$LAB-" left before
        [ ${#NODE_IDS[@]} -eq 0 ] || pattern+=$(printf '|^%s' "${NODE_IDS[@]}")
        before=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -cE "$pattern" || true)
        "$SHOAL" lab down --name "$LAB" >/dev/null 2>&1 ||
            echo "run.sh: 'shoal lab down --name $LAB' failed; run it by hand" >&2
        # Nothing of this lab may remain: its node namespaces, ingress sandboxes and overlay
        # namespaces (named after the node ids), task sandboxes.
        left=$(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "$pattern" || true)
        if [ -n "$left" ]; then
            echo "run.sh: namespaces left behind:" $left >&2
            status=1
        else
            echo "lab $LAB removed: it had $before namespaces, none is left" >&2
        fi
    fi
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
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "building shoal and the client (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p shoal && cargo build --release -q -p shoal-lb --example conn_bench)
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
CLIENT=$TARGET_DIR/release/examples/conn_bench
SHOAL=$TARGET_DIR/release/shoal
S=("$SHOAL" -H "unix:///run/shoal-lab/$LAB/node1/shoal.sock")

echo "lab $LAB: 2 nodes..." >&2
"$SHOAL" lab up --nodes 2 --name "$LAB" --mesh-path "$MESH_PATH" >/dev/null
for n in node1 node2; do
    id=$("${S[@]}" node inspect --format '{{.ID}}' "$n")
    NODE_IDS+=("shoal-(ingress|ov)-${id:0:12}")
done
NODE1=$("${S[@]}" node inspect --format '{{.Status.Addr}}' node1)
NODE2=$("${S[@]}" node inspect --format '{{.Status.Addr}}' node2)

echo "service vote: 2 tasks on node2, published 8080:80..." >&2
"${S[@]}" service create --runtime host --name vote --replicas 2 --constraint node.hostname==node2 \
    -p 8080:80 "$SHOAL" demo vote >/dev/null
"${S[@]}" service ps vote >&2
while read -r id; do
    NODE_IDS+=("shoal-task-${id:0:12}")
done < <("${S[@]}" service ps -q vote)

echo "baseline: shoal demo vote on node2's own address, ports 9000 and 9001..." >&2
"$SHOAL" lab exec --name "$LAB" node2 -- "$SHOAL" demo vote --port 9000 >/dev/null &
SERVER_PID=$!
"$SHOAL" lab exec --name "$LAB" node2 -- "$SHOAL" demo vote --port 9001 >/dev/null &
SERVER2_PID=$!

# Every connection leaves a TIME_WAIT socket on the client for 60 s. connect() takes ports of
# one parity first (half of the range); once those to a destination are all in TIME_WAIT it
# searches the other half, and every connection costs milliseconds: past that point the
# figures measure the port search, not the paths.
read -r lo hi < <("$SHOAL" lab exec --name "$LAB" node1 -- cat /proc/sys/net/ipv4/ip_local_port_range)
if (( CONNS + WARMUP + 1 > (hi - lo + 1) / 2 )); then
    echo "run.sh: warning: CONNS=$CONNS is more than half of node1's ephemeral ports ($lo-$hi)" \
        "to one destination within 60 s; connect()'s port search will dominate the figures" >&2
fi

echo "kernel $(uname -r), $(nproc) cores, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "node1 $NODE1, node2 $NODE2; client in node1's namespace"
for n in node1 node2; do
    echo "$n mesh path: $("${S[@]}" node inspect --format '{{.Description.DataPlane.MeshPath}} {{.Description.DataPlane.MeshFallbackReason}}' "$n" 2>/dev/null ||
        "${S[@]}" node inspect --format '{{.Description.DataPlane.MeshPath}}' "$n")"
done
# In the background so that a signal to this script is handled at once (bash runs traps
# only after a foreground command ends).
"$SHOAL" lab exec --name "$LAB" node1 -- "$CLIENT" \
    "direct      $NODE2:9000=$NODE2:9000" \
    "direct ×2   $NODE2:9000,9001=$NODE2:9000,$NODE2:9001" \
    "mesh @node2 $NODE2:8080=$NODE2:8080" \
    "mesh @node1 $NODE1:8080=$NODE1:8080" &
CLIENT_PID=$!
status=0
wait "$CLIENT_PID" || status=$?
CLIENT_PID=
[ "$status" = 0 ] || die "the client failed (exit $status)"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
cat <<'EOF'

What each path crosses (besides the client's and the server's TCP stacks, on the same cores):
  direct       node1 -> lab bridge -> node2's namespace; conntrack and the mesh's nat hooks
               are evaluated there, but no rule matches port 9000: no NAT, no other hop.
  direct ×2    the same to two plain servers in turn: what alternating between two
               processes costs (the wake-up of the idle one), with no mesh at all.
  mesh @node2  node1 -> lab bridge -> node2's eth0. Mesh path tc: the tc program at eth0's
               ingress picks a task (round robin, per-flow LRU map), rewrites the destination
               and redirects into the task's namespace (bpf_redirect_peer); the reply is
               translated back at the task's veth and sent out of eth0 (bpf_redirect_neigh):
               no routing, netfilter or conntrack in node2's namespace. Mesh path nftables:
               one DNAT (shoal_mesh) to the task's gateway address, routed over its veth.
               Either way the task sees the client's address.
  mesh @node1  node1's own namespace (OUTPUT, nftables on both paths): DNAT to node2's
               address, same port, first packet marked DSCP 43, masquerade; lab bridge; node2
               delivers a marked flow from a peer to one of its own tasks as above (tc: the
               program, which clears the mark; nftables: a second DNAT).
EOF
