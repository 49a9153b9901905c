#!/usr/bin/env bash
# shoal-dns against well-known servers under dnsperf, in one throwaway network namespace:
# shoal-dns on 127.0.0.11, unbound on 127.0.0.12, dnsmasq on 127.0.0.13, all answering the
# same generated names with the same records. Only loopback traffic; the namespace has no
# other interface. Run as root from anywhere: bash bench/dns/run.sh
#
# Knobs (environment): SERVICES=1000 TASKS=3 DURATION=10 CLIENTS=4 OUTSTANDING=100
#   RATE=100000 (offered load of the latency run) THREADS=2 (shoal-dns and unbound threads)
#   SERVERS="shoal unbound dnsmasq" ROUNDS=3
set -euo pipefail

SERVICES=${SERVICES:-1000}
TASKS=${TASKS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-100}
RATE=${RATE:-100000}
THREADS=${THREADS:-2}
SERVERS=${SERVERS:-"shoal unbound dnsmasq"}
ROUNDS=${ROUNDS:-3}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NS="shoalbench-dns-$$"
WORK=$(mktemp -d /tmp/shoal-dns-bench.XXXXXX)
PIDS=()

die() { echo "run.sh: $*" >&2; exit 1; }

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"

missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v unbound >/dev/null || missing+=(unbound)
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
command -v dig >/dev/null || missing+=(dnsutils)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "building the bench server (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p shoal-dns --example dns_bench_server)
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/dns_bench_server"

ip netns add "$NS"
ip -n "$NS" link set lo up
in_ns() { ip netns exec "$NS" "$@"; }

# shoal-dns; it also writes the baselines' data and the query file.
"$BIN" --netns "$NS" --services "$SERVICES" --tasks "$TASKS" --threads "$THREADS" \
    --write-unbound "$WORK/local-data.conf" --write-hosts "$WORK/hosts" \
    --write-queries "$WORK/queries.txt" >"$WORK/shoal.log" 2>&1 &
PIDS+=($!)
declare -A PID=([shoal]=$!)

cat >"$WORK/unbound.conf" <<CONF
server:
    interface: 127.0.0.12
    port: 53
    do-ip6: no
    num-threads: $THREADS
    so-reuseport: yes
    username: ""
    chroot: ""
    directory: "$WORK"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    # Everything it could ever look up is local: a miss is NXDOMAIN, never a query out.
    local-zone: "." static
    include: "$WORK/local-data.conf"
remote-control:
    control-enable: no
CONF

wait_for() { # name addr
    for _ in $(seq 1 100); do
        if in_ns dig +time=1 +tries=1 +short "@$2" svc0.bench A 2>/dev/null | grep -q .; then return 0; fi
        sleep 0.1
    done
    die "$1 did not answer on $2 (logs in $WORK)"
}

declare -A ADDR=([shoal]=127.0.0.11 [unbound]=127.0.0.12 [dnsmasq]=127.0.0.13)
wait_for shoal-dns 127.0.0.11
for s in $SERVERS; do
    case $s in
        unbound)
            # Not through in_ns: a backgrounded function is a subshell, and $! would be its
            # pid rather than the server's; ip netns exec execs the server in place.
            ip netns exec "$NS" unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
            PIDS+=($!)
            PID[unbound]=$!
            ;;
        dnsmasq)
            ip netns exec "$NS" dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --addn-hosts="$WORK/hosts" \
                --listen-address=127.0.0.13 --bind-interfaces --port=53 --local-ttl=600 \
                --user=root --pid-file= --local=/bench/ >"$WORK/dnsmasq.log" 2>&1 &
            PIDS+=($!)
            PID[dnsmasq]=$!
            ;;
    esac
    [ "$s" = shoal ] || wait_for "$s" "${ADDR[$s]}"
done

# Same answers from every server (as sets) before any number is taken.
for name in svc0.bench svc1.bench "svc$((SERVICES - 1)).bench"; do
    want=$(in_ns dig +short @127.0.0.11 "$name" A | sort | tr '\n' ' ')
    for s in $SERVERS; do
        got=$(in_ns dig +short "@${ADDR[$s]}" "$name" A | sort | tr '\n' ' ')
        [ "$got" = "$want" ] || die "$s answers $name with '$got', shoal-dns with '$want'"
    done
done

# CPU time (user + system, in clock ticks) a process has used so far, all threads included.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

field() { sed -n "s/^ *$1 *\([0-9.]*\).*/\1/p" "$2" | head -1; }
lost() { sed -n 's/^ *Queries lost: *[0-9]* (\(.*\)%)/\1/p' "$1"; }

# One round for server $1: full speed, then fixed rate. Appends a row to results.tsv:
# server round maxqps avg_ms lost% rateqps p50 p99 p99.9 lost% cpu%
measure() {
    local s=$1 round=$2 addr=${ADDR[$1]} before avg cpu pct
    echo "round $round, $s ($addr): ${DURATION}s at full speed, then ${DURATION}s at $RATE qps..." >&2
    in_ns dnsperf -s "$addr" -d "$WORK/queries.txt" -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" \
        >"$WORK/max.txt" 2>&1
    avg=$(sed -n 's/^ *Average Latency (s): *\([0-9.]*\).*/\1/p' "$WORK/max.txt")
    before=$(ticks "${PID[$s]}")
    # -v prints one line per query ("> NOERROR name A 0.000061"): percentiles from those.
    in_ns dnsperf -s "$addr" -d "$WORK/queries.txt" -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" \
        -Q "$RATE" -v >"$WORK/rate.txt" 2>&1
    # The server's CPU use during the fixed-rate run, in % of one core: the cost of the
    # same work, less sensitive than qps to whatever else the machine is doing.
    cpu=$(awk -v a="$before" -v b="$(ticks "${PID[$s]}")" -v hz="$(getconf CLK_TCK)" -v d="$DURATION" \
        'BEGIN{printf "%.0f", (b - a) / hz / d * 100}')
    pct=$(awk '/^> /{print $NF}' "$WORK/rate.txt" | sort -g |
        awk '{v[NR]=$1} END {if (NR==0) {print "- - -"; exit}
             printf "%.3f\t%.3f\t%.3f", v[int(NR*0.50)+1]*1000, v[int(NR*0.99)+1]*1000, v[int(NR*0.999)+1]*1000}')
    printf '%s\t%s\t%.0f\t%.3f\t%s\t%.0f\t%s\t%s\t%s\n' "$s" "$round" \
        "$(field "Queries per second:" "$WORK/max.txt")" "$(awk -v a="$avg" 'BEGIN{print a*1000}')" \
        "$(lost "$WORK/max.txt")" "$(field "Queries per second:" "$WORK/rate.txt")" "$pct" \
        "$(lost "$WORK/rate.txt")" "$cpu" >>"$WORK/results.tsv"
}

# Rounds rotate the order of the servers, so that a burst of other work on the machine does
# not always land on the same one; the summary takes the median of each column.
read -r -a order <<<"$SERVERS"
for round in $(seq 1 "$ROUNDS"); do
    for s in "${order[@]}"; do measure "$s" "$round"; done
    order=("${order[@]:1}" "${order[0]}")
done

header() {
    printf '%-10s %5s | %9s %7s %6s | %10s %7s %7s %8s %6s %5s\n' server round "max qps" "avg ms" \
        "lost%" "qps@rate" "p50 ms" "p99 ms" "p99.9ms" "lost%" "cpu%"
}
row() { awk -F'\t' '{printf "%-10s %5s | %9s %7s %6s | %10s %7s %7s %8s %6s %5s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11}'; }

echo
echo "$SERVICES services x $TASKS tasks ($(wc -l <"$WORK/queries.txt") names, half dnsrr, half VIP);" \
    "dnsperf -c $CLIENTS -q $OUTSTANDING, ${DURATION}s per run, fixed rate $RATE qps;" \
    "$(nproc) cores shared by servers and dnsperf"
header
sort -k1,1 -k2,2n "$WORK/results.tsv" | row
echo
echo "median of $ROUNDS round(s):"
header
for s in $SERVERS; do
    awk -F'\t' -v s="$s" '$1 == s' "$WORK/results.tsv" | awk -F'\t' '
        { for (c = 3; c <= 11; c++) v[c, NR] = $c; n = NR; name = $1 }
        END {
            printf "%s\tmed", name
            for (c = 3; c <= 11; c++) {
                m = 0; for (i = 1; i <= n; i++) a[i] = v[c, i]
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
                printf "\t%s", a[int((n + 1) / 2)]
            }
            printf "\n"
        }'
done | tee "$WORK/median.tsv" | row
for s in $SERVERS; do
    [ "$s" = shoal ] && continue
    awk -F'\t' -v n="$s" '$1 == "shoal" {a = $3} $1 == n {b = $3} END {
        if (a && b) printf "median max qps, shoal-dns / %s: %.2f\n", n, a / b }' "$WORK/median.tsv"
done
