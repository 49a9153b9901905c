"""bench/scale driver (run by run.sh): stages of tasks per node, CPU per endpoint change,
then client-observed propagation at FINAL tasks. Talks to the lab only through the shoal
CLI, the API socket and /proc; probes run inside the client tasks' namespaces."""
import json
import os
import subprocess
import sys
import threading
import time

SHOAL, LAB, STAGES, CHANGES, PROBES, FINAL = sys.argv[1:7]
STAGES = [int(s) for s in STAGES.split()]
CHANGES, PROBES, FINAL = int(CHANGES), int(PROBES), int(FINAL)
SOCK = f"/run/shoal-lab/{LAB}/node1/shoal.sock"
HERE = os.path.dirname(os.path.abspath(__file__))
# PROFILE=DIR: perf records each node's shoald during each stage's changes, into
# DIR/stage<TASKS PER NODE>-node<N>.data (`perf report -i ... --sort sym`); PERF_ARGS
# replaces the sampling options (e.g. "-F 499 --call-graph dwarf" for Rust's callers).
PROFILE = os.environ.get("PROFILE")
PERF_ARGS = os.environ.get("PERF_ARGS", "-F 999 -g").split()
# Before each stage's measured changes: SETTLE seconds for the work the growth left (reports,
# the last services' DNS and VIP entries), then WARMUP changes not counted (what a node does
# once, at its first change, is not billed to the first stage and so does not flatter the
# later ones).
SETTLE = float(os.environ.get("SETTLE", "5"))
WARMUP = int(os.environ.get("WARMUP", "5"))


def shoal(*args, check=True):
    out = subprocess.run([SHOAL, "-H", f"unix://{SOCK}", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        sys.exit(f"shoal {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def daemons():
    pids = {}
    for n in (1, 2, 3):
        out = subprocess.run(["ip", "netns", "pids", f"shoal-{LAB}-node{n}"], capture_output=True, text=True).stdout
        for p in out.split():
            try:
                if open(f"/proc/{p}/comm").read().strip() == "shoald":
                    pids[n] = int(p)
            except OSError:
                pass
    return pids


def cpu_ms(pid):
    """CPU time of the process in ms, at nanosecond resolution: its CPU-time clock
    (clock_getcpuclockid(3): every thread's, those that ended included, such as the short
    ones that create a namespace; /proc/PID/stat counts 10 ms ticks, too coarse)."""
    return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e6


def live_threads_ms(pid):
    """The earlier figure: the threads alive now only (schedstat), for comparison."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except OSError:
            pass  # a thread that ended in between
    return total / 1e6


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, -(-len(v) * p // 100) - 1))]


downs = []
stop = threading.Event()


def watch():
    while not stop.is_set():
        out = shoal("node", "ls", "--format", "{{.Hostname}} {{.Status}}", check=False)
        downs.extend(l for l in out.splitlines() if l and not l.endswith(" Ready"))
        time.sleep(1)


def running_tasks():
    out = shoal("service", "ls", "--format", "{{.Replicas}}")
    return sum(int(l.split("/")[0]) for l in out.split() if "/" in l)


services = 0


def grow_to(tasks):
    """Adds services of 2 replicas until `tasks` run (clients and web included)."""
    global services
    t0 = time.monotonic()
    while 3 + 2 * services < tasks:
        if services == 0:
            shoal("service", "create", "--runtime", "host", "-d", "--name", "web", "--network", "ovl", "--replicas", "2", SHOAL, "demo", "vote")
        else:
            shoal("service", "create", "--runtime", "host", "-d", "--name", f"s{services}", "--network", "ovl", "--replicas", "2", "/bin/sleep", "infinity")
        services += 1
    want = 3 + 2 * services
    while (n := running_tasks()) < want:
        if time.monotonic() - t0 > 900:
            sys.exit(f"only {n} of {want} tasks running after 15 minutes; node states seen: {downs[-5:]}")
        time.sleep(2)
    return want, time.monotonic() - t0


shoal("network", "create", "--subnet", "10.10.0.0/16", "ovl")
shoal("service", "create", "--runtime", "host", "--name", "client", "--mode", "global", "--network", "ovl", SHOAL, "demo", "client")
threading.Thread(target=watch, daemon=True).start()

print(f"3-node lab, one /16 overlay; {CHANGES} endpoint changes per stage (scale web 3<->2), "
      f"after {SETTLE:g} s of rest and {WARMUP} changes not counted")
print(f"{'tasks/node':>10} {'tasks':>6} {'cpu ms/change n1':>17} {'n2':>7} {'n3':>7} {'vs first':>9} {'RSS MiB n1/n2/n3':>18} {'live threads only, vs first':>28}")
first = None
first_live = None
replicas = 2
for per_node in STAGES:
    total, _ = grow_to(3 * per_node)
    time.sleep(SETTLE)
    for _ in range(WARMUP):
        replicas = 5 - replicas
        shoal("service", "scale", f"web={replicas}")
    pids = daemons()
    before = {n: cpu_ms(p) for n, p in pids.items()}
    before_live = {n: live_threads_ms(p) for n, p in pids.items()}
    perfs = []
    if PROFILE:
        os.makedirs(PROFILE, exist_ok=True)
        for n, p in pids.items():
            out = f"{PROFILE}/stage{per_node}-node{n}.data"
            perfs.append(subprocess.Popen(["perf", "record", "-q", *PERF_ARGS, "-p", str(p), "-o", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1)  # perf attaches; its sampling adds to the figures: compare stages of one run
        before = {n: cpu_ms(p) for n, p in pids.items()}
        before_live = {n: live_threads_ms(p) for n, p in pids.items()}
    for _ in range(CHANGES):
        replicas = 5 - replicas
        shoal("service", "scale", f"web={replicas}")
    per = {n: (cpu_ms(p) - before[n]) / CHANGES for n, p in pids.items()}
    live = sum(live_threads_ms(p) - before_live[n] for n, p in pids.items()) / CHANGES / len(pids)
    for p in perfs:
        p.send_signal(2)
        p.wait()
    mean = sum(per.values()) / len(per)
    first = first or mean
    first_live = first_live or live
    rss = "/".join(f"{rss_mib(pids[n]):.0f}" for n in sorted(pids))
    print(f"{total // 3:>10} {total:>6} {per[1]:>17.1f} {per[2]:>7.1f} {per[3]:>7.1f} {mean / first:>8.2f}x {rss:>18} {live:>20.1f} ms {live / first_live:>4.2f}x")

total, took = grow_to(FINAL)
print(f"{total} tasks running ({took:.0f} s to add the last ones); node states other than Ready seen: {len(downs)}")

# Client-observed propagation: a probe in each node's client task.
vip = json.loads(shoal("service", "inspect", "--format", "{{json .Endpoint.VirtualIPs}}", "web"))[0]["Addr"].split("/")[0]
clients = [l.split("|") for l in shoal("service", "ps", "--no-trunc", "--format", "{{.Node}}|{{.ID}}|{{.CurrentState}}", "client").split()]
probes = []
for node, task_id, state in (c for c in clients if len(c) == 3):
    ns = f"shoal-task-{task_id[:12]}"
    p = subprocess.Popen(["ip", "netns", "exec", ns, "python3", f"{HERE}/probe.py", vip], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    probes.append((node, p))
if len(probes) != 3:
    sys.exit(f"expected a client task on each of 3 nodes, found {clients}")
subprocess.run(["curl", "-sf", "-X", "DELETE", "--unix-socket", SOCK, "http://shoal/v1/endpoints/stats"], check=True)
lat = {node: [] for node, _ in probes}
ups = []
for i in range(PROBES):
    replicas = 5 - replicas
    for _, p in probes:
        p.stdin.write(f"{replicas}\n")
        p.stdin.flush()
    t0 = time.monotonic_ns()
    shoal("service", "scale", "-d", f"web={replicas}")
    for node, p in probes:
        line = p.stdout.readline()
        if not line:
            sys.exit(f"the probe on {node} stopped")
        ms = (int(line) - t0) / 1e6
        # A scale-down is one endpoint change from the API call on; a scale-up also waits
        # for the new task to start, so it is reported apart.
        (lat[node] if replicas == 2 else ups).append(ms)
    time.sleep(0.05)
for _, p in probes:
    p.stdin.close()
stats = json.loads(subprocess.run(["curl", "-sf", "--unix-socket", SOCK, "http://shoal/v1/endpoints/stats"], capture_output=True, text=True, check=True).stdout)

# Baseline: one committed write through the API (CLI start-up included).
base = []
for i in range(30):
    t0 = time.monotonic_ns()
    shoal("node", "update", "--label-add", f"bench={i}", "node2")
    base.append((time.monotonic_ns() - t0) / 1e6)
stop.set()

allv = [v for vs in lat.values() for v in vs]
print(f"\none endpoint change at {total} tasks (a task of web removed by a scale-down), from the API call")
print(f"until a client on the node resolves tasks.web to the new set and connects to the VIP ({len(allv) // 3} changes):")
for node, vs in sorted(lat.items()):
    print(f"  {node}: p50 {pct(vs, 50):7.1f} ms   p99 {pct(vs, 99):7.1f} ms")
print(f"  all: p50 {pct(allv, 50):7.1f} ms   p99 {pct(allv, 99):7.1f} ms   (target: p99 <= 100 ms)")
print(f"  scale-ups, new task's start included: p50 {pct(ups, 50):7.1f} ms   p99 {pct(ups, 99):7.1f} ms")
print(f"leader's view, table change until every node acked ({stats['Count']} changes): p50 {stats['P50Ms']} ms   p99 {stats['P99Ms']} ms")
b50, b99 = pct(base, 50), pct(base, 99)
print(f"baseline, one committed write through the API: p50 {b50:.1f} ms   p99 {b99:.1f} ms")
print(f"ratio client-observed/commit: p50 {pct(allv, 50) / b50:.2f}x   p99 {pct(allv, 99) / b99:.2f}x")
print(f"node states other than Ready seen during the run: {len(downs)} {downs[:5]}")
