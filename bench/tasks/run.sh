#!/usr/bin/env bash
# Container tasks on a 1-node lab with its registry (`shoal lab up --registry`), each figure
# beside a baseline from the same run:
#   1. `service create --replicas 20` until all Running (the CLI waits for convergence), the
#      image cached on the node, vs the same with `--runtime host` (the command from the
#      host's filesystem): what the container runtime adds.
#   2. A cold pull of anoy/client (~35 MB compressed, two layers) from the lab registry: a
#      service create with the image pruned first, minus the same create with the image
#      cached, vs `skopeo copy` of the same image from the same registry into an OCI layout
#      (and vs skopeo + `umoci unpack`, which also unpacks the layers as a pull must).
#   3. Memory per running task (PSS of the task's processes and its monitor) for the 20
#      containers vs the 20 host-command tasks.
#
#   sudo bench/tasks/run.sh              # ROUNDS=5 (medians are printed)
#   SHOAL_DIR=target/debug ROUNDS=1 REPLICAS=3 bench/tasks/run.sh   # a quick try, no build
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
REPLICAS=${REPLICAS:-20}
if [ -z "${SHOAL_DIR:-}" ]; then
  cargo build --release -q -p shoal -p shoald
  SHOAL_DIR=$PWD/target/release
fi
SHOAL=$(realpath "$SHOAL_DIR/shoal")
LAB=btasks$$
SCRATCH=$(mktemp -d /tmp/shoal-bench-tasks.XXXXXX)
trap '"$SHOAL" lab down --name "$LAB" >/dev/null 2>&1 || true; rm -rf "$SCRATCH"' EXIT
"$SHOAL" lab up --nodes 1 --registry --name "$LAB" >/dev/null
SOCK=/run/shoal-lab/$LAB/node1/shoal.sock
S=("$SHOAL" -H "unix://$SOCK")
REG=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["registry"])' "/run/shoal-lab/$LAB/lab.json")
NODE=(ip netns exec "shoal-$LAB-node1")

ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
task_ids() { "${S[@]}" service ps --no-trunc --format '{{.ID}} {{.CurrentState}}' "$1" | awk '$2 == "Running" {print $1}'; }
# service rm returns at once; wait until the node has stopped every task of it.
remove() {
  "${S[@]}" service rm "$1" >/dev/null
  for _ in $(seq 1 300); do
    [ -z "$(curl -sf --unix-socket "$SOCK" "http://shoal/v1/tasks" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)) or "")')" ] && return
    sleep 0.1
  done
  echo "tasks of $1 did not go away" >&2; exit 1
}
prune() { curl -sf -X POST --unix-socket "$SOCK" http://shoal/v1/images/prune >/dev/null; }

# Warm-up: the node pulls anoy/vote once; every container create below finds it cached.
"${S[@]}" service create --name warm "$REG/anoy/vote" >/dev/null
remove warm

host=() oci=() mem_host=() mem_oci=()
for i in $(seq 1 "$ROUNDS"); do
  for kind in host oci; do
    if [ "$kind" = host ]; then args=(--runtime host --name "s$i$kind" --replicas "$REPLICAS" "$SHOAL" demo vote)
    else args=(--name "s$i$kind" --replicas "$REPLICAS" "$REG/anoy/vote"); fi
    t0=$(date +%s%N)
    "${S[@]}" service create "${args[@]}" >/dev/null
    t=$(ms "$t0")
    mapfile -t ids < <(task_ids "s$i$kind")
    [ "${#ids[@]}" -eq "$REPLICAS" ] || { echo "s$i$kind: ${#ids[@]} of $REPLICAS running" >&2; exit 1; }
    read -r kib _ < <(python3 bench/tasks/mem.py "$SOCK" "${ids[@]}")
    if [ "$kind" = host ]; then host+=("$t"); mem_host+=("$kib"); else oci+=("$t"); mem_oci+=("$kib"); fi
    remove "s$i$kind"
  done
done

cold=() warm=() skopeo=() unpack=()
for i in $(seq 1 "$ROUNDS"); do
  prune
  t0=$(date +%s%N); "${S[@]}" service create --name "c$i" "$REG/anoy/client" >/dev/null; cold+=("$(ms "$t0")")
  remove "c$i"
  t0=$(date +%s%N); "${S[@]}" service create --name "w$i" "$REG/anoy/client" >/dev/null; warm+=("$(ms "$t0")")
  remove "w$i"
  rm -rf "$SCRATCH/oci" "$SCRATCH/bundle"
  t0=$(date +%s%N)
  "${NODE[@]}" skopeo copy --quiet --src-tls-verify=false "docker://$REG/anoy/client" "oci:$SCRATCH/oci:client"
  skopeo+=("$(ms "$t0")")
  t0=$(date +%s%N)
  umoci unpack --image "$SCRATCH/oci:client" "$SCRATCH/bundle" >/dev/null
  unpack+=("$(ms "$t0")")
done

python3 - "$REPLICAS" "${host[*]}" "${oci[*]}" "${mem_host[*]}" "${mem_oci[*]}" \
  "${cold[*]}" "${warm[*]}" "${skopeo[*]}" "${unpack[*]}" <<'PY'
import statistics as st, sys
n = sys.argv[1]
host, oci, mh, mo, cold, warm, sk, up = ([float(x) for x in a.split()] for a in sys.argv[2:])
m = st.median
print(f"service create --replicas {n} until all Running, medians of {len(host)} rounds (ms):")
print(f"  image, cached on the node   {m(oci):8.0f}   (runs {sorted(oci)})")
print(f"  --runtime host (baseline)   {m(host):8.0f}   (runs {sorted(host)})")
print(f"  ratio container/host        {m(oci)/m(host):8.2f}x")
pull = m(cold) - m(warm)
print(f"cold pull of anoy/client from the lab registry (ms):")
print(f"  create with the image pruned {m(cold):7.0f}, with it cached {m(warm):.0f}: the pull {pull:.0f}")
print(f"  skopeo copy (baseline)       {m(sk):7.0f}   ratio pull/skopeo {pull/m(sk):.2f}x")
print(f"  skopeo copy + umoci unpack   {m(sk)+m(up):7.0f}   ratio pull/(copy+unpack) {pull/(m(sk)+m(up)):.2f}x")
print(f"memory per running task (PSS, KiB, medians): container {m(mo):.0f}, host command {m(mh):.0f} "
      f"(ratio {m(mo)/m(mh):.2f}x)")
PY
echo "load: $(uptime | sed 's/.*load average: //')"
