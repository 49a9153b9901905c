#!/usr/bin/env bash
# shoal-dns against well-known servers under dnsperf, in one throwaway network namespace:
# shoal-dns on 127.0.0.11, unbound on .12, dnsmasq on .13, NSD on .14, Knot DNS on .15, all
# answering the same generated names with the same records. Only loopback traffic; the
# namespace has no other interface. Run as root from anywhere: bash bench/dns/run.sh
#
# Knobs (environment): SERVICES=1000 TASKS=3 DURATION=10 CLIENTS=4 OUTSTANDING=100
#   RATE=20000 (offered load of the fixed-rate run) THREADS=2 (workers of every server but
#   dnsmasq, which has one) SERVERS="shoal nsd knot unbound" (dnsmasq too if named) ROUNDS=3
#   PERF_EVENTS (optional, e.g. "context-switches,syscalls:sys_enter_epoll_wait"): perf stat
#   counts of those events in each server's processes during the fixed-rate run, per query
#   DNSPERF_THREADS=1 (dnsperf -T)
#   STEER=off (on: shoal-dns steers each query to the DNS thread on the CPU that received it,
#   one thread pinned per CPU, as shoald --dns-steering cpu; off: the kernel spreads them by
#   hash, the daemon's default)
#   SHOAL_BIN (optional): a dns_bench_server binary to run instead of building this checkout's
set -euo pipefail

SERVICES=${SERVICES:-1000}
TASKS=${TASKS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-100}
RATE=${RATE:-20000}
THREADS=${THREADS:-2}
SERVERS=${SERVERS:-"shoal nsd knot unbound"}
ROUNDS=${ROUNDS:-3}
PERF_EVENTS=${PERF_EVENTS:-}
# dnsperf's own threads (-T): 1 sends every query from one thread, as dnsperf does by
# default; more spread the sending over the CPUs, as a node's many clients do.
DNSPERF_THREADS=${DNSPERF_THREADS:-1}
STEER=${STEER:-off}

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NS="shoalbench-dns-$$"
WORK=$(mktemp -d /tmp/shoal-dns-bench.XXXXXX)
POLICY=/usr/sbin/policy-rc.d
PIDS=()
POLICY_STATE=none # none | ours (created by us) | saved (theirs moved to $WORK)
KEEP_WORK=no

die() { echo "run.sh: $*" >&2; KEEP_WORK=yes; exit 1; }

restore_policy() {
    case $POLICY_STATE in
        ours) rm -f "$POLICY" ;;
        saved) mv -f "$WORK/policy-rc.d.saved" "$POLICY" ;;
    esac
    POLICY_STATE=none
}

cleanup() {
    restore_policy
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    # After a failure the servers' logs and configs stay for a look.
    if [ "$KEEP_WORK" = yes ]; then echo "run.sh: logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"

missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v dig >/dev/null || missing+=(dnsutils)
for s in $SERVERS; do
    case $s in
        unbound) command -v unbound >/dev/null || missing+=(unbound) ;;
        dnsmasq) command -v dnsmasq >/dev/null || missing+=(dnsmasq-base) ;;
        nsd) command -v nsd >/dev/null || missing+=(nsd) ;;
        knot) command -v knotd >/dev/null || missing+=(knot) ;;
    esac
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    # nsd, knot and unbound ship services: a policy-rc.d that says no keeps them from being
    # started on the host during the install. One that is already there is put back after.
    if [ -e "$POLICY" ]; then
        cp -p "$POLICY" "$WORK/policy-rc.d.saved"
        POLICY_STATE=saved
    else
        POLICY_STATE=ours
    fi
    printf '#!/bin/sh\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    restore_policy
fi

if [ -n "${SHOAL_BIN:-}" ]; then
    # Another build of the bench server (e.g. copied from an older checkout): to compare
    # two versions of shoal-dns against the same baselines, run once with each.
    BIN=$SHOAL_BIN
    [ -x "$BIN" ] || die "SHOAL_BIN=$BIN is not an executable (build one with: cargo build --release -p shoal-dns --example dns_bench_server)"
else
    echo "building the bench server (release)..." >&2
    (cd "$ROOT" && cargo build --release -q -p shoal-dns --example dns_bench_server)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/dns_bench_server"
fi

ip netns add "$NS"
ip -n "$NS" link set lo up
in_ns() { ip netns exec "$NS" "$@"; }

# shoal-dns; it also writes the baselines' data and the query file.
# Only said when on, so that a SHOAL_BIN built before the flag still runs.
STEER_ARGS=()
[ "$STEER" = off ] || STEER_ARGS=(--steer "$STEER")
"$BIN" --netns "$NS" --services "$SERVICES" --tasks "$TASKS" --threads "$THREADS" "${STEER_ARGS[@]}" \
    --write-unbound "$WORK/local-data.conf" --write-hosts "$WORK/hosts" \
    --write-zone "$WORK/bench.zone" --write-queries "$WORK/queries.txt" >"$WORK/shoal.log" 2>&1 &
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

# NSD: the zone compiled in memory (no database file), THREADS server processes.
cat >"$WORK/nsd.conf" <<CONF
server:
    ip-address: 127.0.0.14
    port: 53
    do-ip6: no
    server-count: $THREADS
    reuseport: yes
    username: ""
    chroot: ""
    zonesdir: "$WORK"
    database: ""
    zonelistfile: "$WORK/nsd-zone.list"
    xfrdfile: "$WORK/nsd-xfrd.state"
    xfrdir: "$WORK"
    pidfile: "$WORK/nsd.pid"
    logfile: "$WORK/nsd.log"
    verbosity: 0
    # No NS records in the authority section of answers: the same records as the others.
    minimal-responses: yes
    # Response rate limiting is on by default (200 qps per /24): every query comes from
    # 127.0.0.1 here, so it would drop most of them.
    rrl-ratelimit: 0
    rrl-whitelist-ratelimit: 0
remote-control:
    control-enable: no
zone:
    name: "bench."
    zonefile: "$WORK/bench.zone"
CONF

# Knot DNS: THREADS UDP workers (the bench asks over UDP only), its databases in $WORK.
mkdir -p "$WORK/knot"
cat >"$WORK/knot.conf" <<CONF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.15@53
    udp-workers: $THREADS
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: warning
database:
    storage: "$WORK/knot"
template:
  - id: default
    storage: "$WORK"
    semantic-checks: off
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: bench.
    file: bench.zone
CONF

wait_for() { # name addr
    for _ in $(seq 1 100); do
        if in_ns dig +time=1 +tries=1 +short "@$2" svc0.bench A 2>/dev/null | grep -q .; then return 0; fi
        sleep 0.1
    done
    die "$1 did not answer on $2"
}

declare -A ADDR=([shoal]=127.0.0.11 [unbound]=127.0.0.12 [dnsmasq]=127.0.0.13 [nsd]=127.0.0.14 [knot]=127.0.0.15)
wait_for shoal-dns 127.0.0.11
for s in $SERVERS; do
    # Not through in_ns: a backgrounded function is a subshell, and $! would be its pid
    # rather than the server's; ip netns exec execs the server in place.
    case $s in
        shoal) continue ;;
        unbound) ip netns exec "$NS" unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 & ;;
        dnsmasq)
            ip netns exec "$NS" dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts --addn-hosts="$WORK/hosts" \
                --listen-address=127.0.0.13 --bind-interfaces --port=53 --local-ttl=600 \
                --user=root --pid-file= --local=/bench/ >"$WORK/dnsmasq.log" 2>&1 &
            ;;
        nsd) ip netns exec "$NS" nsd -d -c "$WORK/nsd.conf" >"$WORK/nsd.out" 2>&1 & ;;
        knot) ip netns exec "$NS" knotd -c "$WORK/knot.conf" >"$WORK/knot.log" 2>&1 & ;;
        *) die "unknown server $s" ;;
    esac
    PIDS+=($!)
    PID[$s]=$!
    wait_for "$s" "${ADDR[$s]}"
done

# Same answers from every server before any number is taken: the address sets of services
# and tasks. names, NODATA for AAAA, NXDOMAIN for names that do not exist.
answer() { # addr name type
    local out
    out=$(in_ns dig +time=2 +tries=1 "@$1" "$2" "$3")
    printf '%s %s\n' "$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<<"$out")" \
        "$(awk -v t="$3" '/^;; ANSWER SECTION/ {a = 1; next} /^$/ {a = 0} a && $4 == t {print $5}' <<<"$out" |
            sort | tr '\n' ' ')"
}
last=$((SERVICES - 1))
for q in "svc0.bench A" "svc1.bench A" "svc$last.bench A" "tasks.svc0.bench A" \
    "tasks.svc1.bench A" "svc0.bench AAAA" "tasks.svc1.bench AAAA" "nx0.bench A" "nx1.bench AAAA"; do
    read -r name type <<<"$q"
    want=$(answer 127.0.0.11 "$name" "$type")
    for s in $SERVERS; do
        got=$(answer "${ADDR[$s]}" "$name" "$type")
        [ "$got" = "$want" ] || die "$s answers $name $type with '$got', shoal-dns with '$want'"
    done
done

# User ('$12') or system ('$13') CPU time, in clock ticks, used so far by a process and its
# children alive (NSD serves from forked processes), all threads included.
ticks() { # pid field
    local total=0 p
    for p in $(tree "$1"); do
        # Fields 14 and 15, counted after the command name: NSD's have spaces in them.
        total=$((total + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk "{t = $2} END {print t + 0}")))
    done
    echo "$total"
}
tree() { # pid: it and its descendants
    local c
    echo "$1"
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree "$c"; done
}

field() { sed -n "s/^ *$1 *\([0-9.]*\).*/\1/p" "$2" | head -1; }
lost() { sed -n 's/^ *Queries lost: *[0-9]* (\(.*\)%)/\1/p' "$1"; }
avg_ms() { sed -n 's/^ *Average Latency (s): *\([0-9.]*\).*/\1/p' "$1" | awk '{printf "%.3f", $1 * 1000}'; }

# One round for server $1: full speed, then fixed rate. Appends a row to results.tsv:
# server round | maxqps avg_ms lost% | rateqps avg_ms p99_ms lost% cpu_ms_per_100k
measure() {
    local s=$1 round=$2 addr=${ADDR[$1]} user_before sys_before user sys n cpu p99
    echo "round $round, $s ($addr): ${DURATION}s at full speed, then ${DURATION}s at $RATE qps..." >&2
    in_ns dnsperf -s "$addr" -d "$WORK/queries.txt" -l "$DURATION" -c "$CLIENTS" -T "$DNSPERF_THREADS" -q "$OUTSTANDING" \
        >"$WORK/max.txt" 2>&1
    user_before=$(ticks "${PID[$s]}" '$12')
    sys_before=$(ticks "${PID[$s]}" '$13')
    local perf=
    if [ -n "$PERF_EVENTS" ]; then
        # Counted over the whole fixed-rate run (every thread of every server process).
        perf stat -x, -e "$PERF_EVENTS" -p "$(tree "${PID[$s]}" | paste -sd,)" -o "$WORK/perf.txt" \
            -- sleep "$DURATION" 2>/dev/null &
        perf=$!
    fi
    # -v prints one line per query ("> NOERROR name A 0.000061"): the p99 comes from those.
    in_ns dnsperf -s "$addr" -d "$WORK/queries.txt" -l "$DURATION" -c "$CLIENTS" -T "$DNSPERF_THREADS" -q "$OUTSTANDING" \
        -Q "$RATE" -v >"$WORK/rate.txt" 2>&1
    user=$(($(ticks "${PID[$s]}" '$12') - user_before))
    sys=$(($(ticks "${PID[$s]}" '$13') - sys_before))
    n=$(field "Queries completed:" "$WORK/rate.txt")
    # The cpu/100k column split into user and system time (the kernel's share is most of it).
    awk -v s="$s" -v r="$round" -v u="$user" -v k="$sys" -v hz="$(getconf CLK_TCK)" -v n="$n" \
        'BEGIN { if (n > 0) printf "%s\t%s\t%.0f\t%.0f\n", s, r, u / hz * 1e8 / n, k / hz * 1e8 / n }' \
        >>"$WORK/split.tsv"
    if [ -n "$perf" ]; then
        wait "$perf" || true
        awk -F, -v s="$s" -v r="$round" -v n="$n" \
            '$1 ~ /^[0-9.]+$/ && n > 0 { printf "%s\t%s\t%s\t%.3f\n", s, r, $3, $1 / n }' \
            "$WORK/perf.txt" >>"$WORK/perf.tsv"
    fi
    # The server's CPU time for the same work: less sensitive than qps to whatever else the
    # machine is doing.
    cpu=$(awk -v t="$((user + sys))" -v hz="$(getconf CLK_TCK)" -v n="$n" \
        'BEGIN{ if (n > 0) printf "%.0f", t / hz * 1000 * 100000 / n; else print "-" }')
    p99=$(awk '/^> /{print $NF}' "$WORK/rate.txt" | sort -g |
        awk '{v[NR]=$1} END {if (NR==0) print "-"; else printf "%.3f", v[int(NR*0.99)+1]*1000}')
    printf '%s\t%s\t%.0f\t%s\t%s\t%.0f\t%s\t%s\t%s\t%s\n' "$s" "$round" \
        "$(field "Queries per second:" "$WORK/max.txt")" "$(avg_ms "$WORK/max.txt")" "$(lost "$WORK/max.txt")" \
        "$(field "Queries per second:" "$WORK/rate.txt")" "$(avg_ms "$WORK/rate.txt")" "$p99" \
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
    printf '%-13s %5s | %9s %7s %6s | %9s %7s %7s %6s %9s\n' server round "max qps" "avg ms" \
        "lost%" "qps@rate" "avg ms" "p99 ms" "lost%" "cpu/100k"
}
row() { awk -F'\t' '{printf "%-13s %5s | %9s %7s %6s | %9s %7s %7s %6s %9s\n", $1,$2,$3,$4,$5,$6,$7,$8,$9,$10}'; }

echo
echo "$SERVICES services x $TASKS tasks; $(wc -l <"$WORK/queries.txt") queries (A and AAAA of" \
    "services, tasks. names and missing names); dnsperf -c $CLIENTS -T $DNSPERF_THREADS -q $OUTSTANDING, ${DURATION}s" \
    "per run, fixed rate $RATE qps; cpu/100k = server CPU ms per 100k queries at that rate;" \
    "$(nproc) cores shared by servers and dnsperf"
header
sort -k1,1 -k2,2n "$WORK/results.tsv" | row
echo
echo "median of $ROUNDS round(s); under each baseline, shoal-dns's figure divided by its" \
    "(qps: above 1 is better; latency and cpu: below 1 is better):"
header
for s in $SERVERS; do
    awk -F'\t' -v s="$s" '$1 == s' "$WORK/results.tsv" | awk -F'\t' '
        { for (c = 3; c <= 10; c++) v[c, NR] = $c; n = NR; name = $1 }
        END {
            printf "%s\tmed", name
            for (c = 3; c <= 10; c++) {
                for (i = 1; i <= n; i++) a[i] = v[c, i]
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
                printf "\t%s", a[int((n + 1) / 2)]
            }
            printf "\n"
        }'
done >"$WORK/median.tsv"
awk -F'\t' '
    NR == FNR { if ($1 == "shoal") for (c = 3; c <= 10; c++) shoal[c] = $c; next }
    {
        print
        if ($1 == "shoal" || !(3 in shoal)) next
        printf " shoal/%s\tratio", $1
        for (c = 3; c <= 10; c++) {
            # Loss is a percentage already: a ratio of two zeros says nothing.
            if (c == 5 || c == 9 || $c + 0 == 0) printf "\t-"
            else printf "\t%.2f", shoal[c] / $c
        }
        printf "\n"
    }' "$WORK/median.tsv" "$WORK/median.tsv" | row

echo
echo "user / system CPU ms per 100k queries at the fixed rate (the cpu/100k column split):"
sort -k1,1 -k2,2n "$WORK/split.tsv" | awk -F'\t' '{printf "  %-8s round %s: %6s user %6s system\n", $1, $2, $3, $4}'

if [ -s "$WORK/perf.tsv" ]; then
    echo
    echo "perf stat during the fixed-rate runs, events per query answered (PERF_EVENTS):"
    sort -k3,3 -k1,1 -k2,2n "$WORK/perf.tsv" | awk -F'\t' '{printf "  %-40s %-8s round %s: %s\n", $3, $1, $2, $4}'
fi
