"""bench/failover driver (run by run.sh, one lab per manager count): the leader's shoald
stopped by SIGKILL, and beside it by SIGTERM, while clients create services through every
other manager. Talks to the lab only through the shoal CLI, `shoal lab exec`, the daemons'
logs and /proc. Usage: driver.py SHOAL LAB MANAGERS WORKERS ROUNDS TERM_ROUNDS."""
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime

SHOAL, LAB = sys.argv[1], sys.argv[2]
MANAGERS, WORKERS, ROUNDS, TERM_ROUNDS = (int(a) for a in sys.argv[3:7])
NODES = MANAGERS + WORKERS
# A client begins a create on each non-leader manager this often, whether or not the
# previous one answered (open loop: a write that hangs does not hold the next one back,
# so "the first write begun after the kill" is at most this late).
INTERVAL = float(os.environ.get("INTERVAL", "0.2"))
# Writes go on this long after the first one begun after the kill succeeded.
AFTER = float(os.environ.get("AFTER", "2"))
# A round's writes stop this long after the kill at the latest.
WINDOW = float(os.environ.get("WINDOW", "20"))
BASE_CREATES = int(os.environ.get("BASE_CREATES", "30"))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def node_dir(n):
    return f"/run/shoal-lab/{LAB}/node{n}"


def shoal(n, *args, timeout=60):
    """`shoal ARGS` against node n's API: (ok, stdout, stderr)."""
    try:
        out = subprocess.run([SHOAL, "-H", f"unix://{node_dir(n)}/shoal.sock", *args],
                             capture_output=True, text=True, timeout=timeout)
        return out.returncode == 0, out.stdout, out.stderr.strip()
    except subprocess.TimeoutExpired:
        return False, "", f"no answer within {timeout} s (the bench gave up)"


def must(n, *args):
    ok, out, err = shoal(n, *args)
    if not ok:
        sys.exit(f"`shoal {' '.join(args)}` on node{n} failed: {err}")
    return out


def rows(n):
    """`node ls` on node n: {node number: (status, manager status)}, or None if it fails."""
    ok, out, _ = shoal(n, "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}", timeout=10)
    if not ok:
        return None
    got = {}
    for line in out.splitlines():
        f = line.split(" ")
        if f and f[0].startswith("node"):
            got[int(f[0][4:])] = (f[1] if len(f) > 1 else "", f[2] if len(f) > 2 else "")
    return got


def leader_in(r):
    leaders = [n for n, (_, m) in r.items() if m == "Leader"]
    return leaders[0] if len(leaders) == 1 else None


def settled(n):
    """The leader once node n sees one leader, every other manager Reachable, all Ready."""
    r = rows(n)
    if not r or len(r) != NODES or any(s != "Ready" for s, _ in r.values()):
        return None
    lead = leader_in(r)
    if lead is None or any(r[m][1] != "Reachable" for m in range(1, MANAGERS + 1) if m != lead):
        return None
    return lead


def wait_settled(ask, what, limit=90):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        lead = settled(ask)
        if lead:
            return lead
        time.sleep(0.3)
    sys.exit(f"the cluster did not settle within {limit} s {what}: node ls on node{ask} says {rows(ask)}")


def daemon_pid(n):
    out = subprocess.run(["ip", "netns", "pids", f"shoal-{LAB}-node{n}"], capture_output=True, text=True).stdout
    for p in out.split():
        try:
            if open(f"/proc/{p}/comm").read().strip() == "shoald":
                return int(p)
        except OSError:
            pass
    return None


def alive(pid):
    """Whether the process still runs (a zombie waiting for its parent does not: the
    daemons `lab up` started are reaped by init, at its own pace)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, -(-len(v) * p // 100) - 1))]


class Write:
    def __init__(self, node, name):
        self.node, self.name = node, name
        self.began = time.monotonic()
        self.ended = None
        self.ok = False
        self.said = ""

    def run(self):
        self.ok, _, self.said = shoal(self.node, "service", "create", "-d", "--runtime", "host",
                                      "--replicas", "0", "--name", self.name, "sleep", "600")
        self.ended = time.monotonic()


def clients(nodes, prefix, stop, writes):
    """Begins a create on each of `nodes` every INTERVAL until `stop`, each on a thread of
    its own; appends them to `writes` as they begin and returns once all have ended."""
    threads = []
    i = 0
    while not stop.is_set():
        for n in nodes:
            w = Write(n, f"{prefix}n{n}x{i}")
            t = threading.Thread(target=w.run)
            writes.append(w)
            t.start()
            threads.append(t)
        i += 1
        stop.wait(INTERVAL)
    for t in threads:
        t.join()


def log_size(n):
    try:
        return os.path.getsize(f"{node_dir(n)}/shoald.log")
    except OSError:
        return 0


def sessions_since(n, offset):
    """(wall time, manager address) of each "session established" in node n's log past offset."""
    found = []
    with open(f"{node_dir(n)}/shoald.log", errors="replace") as f:
        f.seek(offset)
        for line in f:
            line = ANSI.sub("", line)
            if "session established" not in line:
                continue
            m = re.search(r"manager=(\S+)", line)
            ts = datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
            found.append((ts, m.group(1) if m else ""))
    return found


def restart(n, argv):
    """Starts node n's shoald again with its old command line, through `lab exec` (its
    namespace and the lab's cgroup), its output appended to its log."""
    log = open(f"{node_dir(n)}/shoald.log", "ab")
    return subprocess.Popen([SHOAL, "lab", "exec", "--name", LAB, f"node{n}", "--", *argv],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


def remove_all(ask):
    ok, out, _ = shoal(ask, "service", "ls", "-q")
    ids = out.split()
    for i in range(0, len(ids), 100):
        shoal(ask, "service", "rm", *ids[i:i + 100])


addrs = {n: must(1, "node", "inspect", f"node{n}", "--format", "{{.Status.Addr}}").strip() for n in range(1, NODES + 1)}
started = []  # the `lab exec` processes of restarted daemons, reaped at the end


def round_(r, signal):
    lead = wait_settled(1 if daemon_pid(1) else 2, "before the round")
    others = [m for m in range(1, MANAGERS + 1) if m != lead]
    ask = others[0]
    pid = daemon_pid(lead)
    argv = [a.decode() for a in open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0") if a]
    offsets = {w: log_size(w) for w in range(MANAGERS + 1, NODES + 1)}

    stop = threading.Event()
    writes = []
    runner = threading.Thread(target=clients, args=(others, f"r{r}{signal[0].lower()}", stop, writes))
    runner.start()
    time.sleep(2)
    subprocess.run(["kill", f"-{signal}", str(pid)], check=True)
    killed, killed_wall = time.monotonic(), time.time()

    # node ls on a survivor, all round long: when it first names a new leader, and any
    # worker state other than Ready.
    seen = {"leader": None, "not_ready": []}
    watching = threading.Event()

    def watch():
        while not watching.is_set():
            rw = rows(ask)
            if rw:
                seen["not_ready"] += [(n, s) for n, (s, _) in rw.items() if n > MANAGERS and s != "Ready"]
                lead2 = leader_in(rw)
                if seen["leader"] is None and lead2 and lead2 != lead:
                    seen["leader"] = (time.monotonic() - killed, lead2)
            watching.wait(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    exited = None
    while time.monotonic() - killed < 60:
        if not alive(pid):
            exited = time.monotonic() - killed
            break
        time.sleep(0.02)

    # Writes go on until one begun after the kill has succeeded, and AFTER more.
    while time.monotonic() - killed < WINDOW:
        oks = [w.ended - killed for w in list(writes) if w.began >= killed and w.ended is not None and w.ok]
        if oks and time.monotonic() - killed > min(oks) + AFTER:
            break
        time.sleep(0.1)
    stop.set()
    runner.join()
    oks = [w.ended - killed for w in writes if w.ok and w.began >= killed]
    first_ok = min(oks) if oks else None
    after = [w for w in writes if w.began >= killed]
    failed_after = [w for w in after if not w.ok]
    in_flight = [w for w in writes if w.began < killed < w.ended]
    before = [w.ended - w.began for w in writes if w.ended < killed and w.ok]

    # Workers: the first session with the new leader after the kill (a session start is
    # the new leader taking the node's heartbeat).
    t0 = time.monotonic()
    while seen["leader"] is None and time.monotonic() - t0 < 30:
        time.sleep(0.1)
    new_leader = seen["leader"]
    worker_s = {}
    if new_leader:
        addr = addrs[new_leader[1]]
        while len(worker_s) < WORKERS and time.monotonic() - t0 < 30:
            for w in range(MANAGERS + 1, NODES + 1):
                if w not in worker_s:
                    hits = [ts for ts, a in sessions_since(w, offsets[w]) if a.split(":")[0] == addr]
                    if hits:
                        worker_s[w] = min(hits) - killed_wall
            time.sleep(0.2)
    time.sleep(1)  # a last look: the workers stay Ready with the new leader
    watching.set()
    watcher.join()
    not_ready = seen["not_ready"]

    # Every acknowledged write on every surviving manager.
    acked = {w.name for w in writes if w.ok}
    lost = {}
    for m in others:
        t0 = time.monotonic()
        while True:
            ok, out, _ = shoal(m, "service", "ls", "--format", "{{.Name}}")
            listed = set(out.split()) if ok else set()
            missing = acked - listed
            if not missing or time.monotonic() - t0 > 20:
                break
            time.sleep(0.5)
        lost[m] = sorted(missing)
    # A failed write may have been committed all the same (the error says so when it
    # cannot tell): how many were.
    applied_anyway = sum(1 for w in writes if not w.ok and w.name in listed)

    # Back: the daemon restarted, the cluster settled, the old leader lists every ack too.
    started.append(restart(lead, argv))
    wait_settled(ask, f"after node{lead}'s daemon was restarted")
    t0 = time.monotonic()
    while True:
        ok, out, _ = shoal(lead, "service", "ls", "--format", "{{.Name}}")
        lost_back = acked - set(out.split()) if ok else acked
        if not lost_back or time.monotonic() - t0 > 20:
            break
        time.sleep(0.5)
    remove_all(ask)
    return dict(signal=signal, lead=lead, first_ok=first_ok, new_leader=new_leader, exited=exited,
                writes=len(writes), after=len(after), failed_after=failed_after, in_flight=in_flight,
                in_flight_failed=[w for w in in_flight if not w.ok], before=before,
                lost=sum(len(v) for v in lost.values()), lost_back=len(lost_back), acked=len(acked),
                workers=worker_s, not_ready=not_ready, applied_anyway=applied_anyway)



def fmt(v):
    return "-" if v is None else f"{v:.2f}"


def summary(label, res):
    """Figures over `res` (rounds of one signal): p50 and max of each time."""
    n = len(res)
    first = [x["first_ok"] for x in res if x["first_ok"] is not None]
    lead = [x["new_leader"][0] for x in res if x["new_leader"]]
    work = [max(x["workers"].values()) for x in res if len(x["workers"]) == WORKERS]
    out = {"first": first, "lead": lead, "work": work}
    print(f"{label} ({n} rounds; p50 and max over {n} samples each):")
    for name, v in (("first write begun after it succeeded", first), ("new leader in node ls", lead),
                    ("every worker's session with the new leader", work)):
        if len(v) < n:
            print(f"  {name}: only {len(v)} of {n} rounds got there")
        if v:
            print(f"  {name}: p50 {pct(v, 50):.2f} s   max {max(v):.2f} s")
    after = sum(x["after"] for x in res)
    failed = [w for x in res for w in x["failed_after"]]
    print(f"  writes begun after it: {after}, failed {len(failed)}")
    for said, c in Counter(w.said.splitlines()[-1] if w.said else "(no message)" for w in failed).most_common(5):
        print(f"    {c}x {said}")
    print(f"  failed writes that were applied all the same: {sum(x['applied_anyway'] for x in res)}")
    flight = sum(len(x["in_flight"]) for x in res)
    flight_failed = [w for x in res for w in x["in_flight_failed"]]
    print(f"  writes in flight at it: {flight}, failed {len(flight_failed)}")
    for said, c in Counter(w.said.splitlines()[-1] if w.said else "(no message)" for w in flight_failed).most_common(3):
        print(f"    {c}x {said}")
    acked = sum(x["acked"] for x in res)
    print(f"  acknowledged writes: {acked}; lost on a surviving manager: {sum(x['lost'] for x in res)}; "
          f"missing on the restarted one: {sum(x['lost_back'] for x in res)}")
    nr = [s for x in res for s in x["not_ready"]]
    print(f"  worker states other than Ready seen in node ls: {len(nr)} {Counter(nr).most_common(3) if nr else ''}")
    return out


print(f"lab {LAB}: {MANAGERS} managers, {WORKERS} workers; clients begin a create every {INTERVAL} s on each "
      f"non-leader manager ({MANAGERS - 1} of them)")
lead = wait_settled(1, "after the lab came up")
# Baseline: one create with no failure, alone, through a non-leader manager (as the
# clients' writes go), CLI start-up included.
followers = [m for m in range(1, MANAGERS + 1) if m != lead]
plain = []
for i in range(BASE_CREATES):
    n = followers[i % len(followers)]
    t0 = time.monotonic()
    must(n, "service", "create", "-d", "--runtime", "host", "--replicas", "0", "--name", f"base{i}", "sleep", "600")
    plain.append(time.monotonic() - t0)
remove_all(followers[0])
print(f"plain create through a non-leader manager, no failure: p50 {pct(plain, 50) * 1000:.0f} ms   "
      f"max {max(plain) * 1000:.0f} ms ({BASE_CREATES} creates)")

res = {"KILL": [], "TERM": []}
# Interleaved, so both see the same machine: KILL, TERM, KILL, TERM, ..., the rest of one.
order = [s for pair in zip(["KILL"] * ROUNDS, ["TERM"] * TERM_ROUNDS) for s in pair] + \
    ["KILL"] * max(0, ROUNDS - TERM_ROUNDS) + ["TERM"] * max(0, TERM_ROUNDS - ROUNDS)
for r, sig in enumerate(order):
    x = round_(r, sig)
    res[sig].append(x)
    nl = f"node{x['new_leader'][1]} at {x['new_leader'][0]:.2f} s" if x["new_leader"] else "none"
    ws = " ".join(f"node{w}:{t:.2f}" for w, t in sorted(x["workers"].items()))
    conc = f"{pct(x['before'], 50) * 1000:.0f} ms" if x["before"] else "-"
    print(f"round {r + 1:>2} SIG{sig}: leader node{x['lead']} (exited at {fmt(x['exited'])} s); first write begun "
          f"after it ok at {fmt(x['first_ok'])} s; new leader {nl}; workers {ws or '-'} s; writes "
          f"{x['writes']} (before it p50 {conc}), begun after {x['after']}, failed {len(x['failed_after'])}, "
          f"in flight {len(x['in_flight'])} failed {len(x['in_flight_failed'])}; acked {x['acked']}, "
          f"lost {x['lost']}, missing on the restarted {x['lost_back']}", flush=True)

print()
k = summary("SIGKILL of the leader's shoald", res["KILL"])
t = summary("SIGTERM of the leader's shoald (baseline: a polite stop)", res["TERM"])
p50 = pct(plain, 50)
if k["first"] and t["first"]:
    kf, tf = pct(k["first"], 50), pct(t["first"], 50)
    print(f"ratios (p50): API answering again after SIGKILL {kf:.2f} s = {kf / tf:.1f}x SIGTERM's {tf:.2f} s "
          f"= {kf / p50:.0f}x one plain create ({p50 * 1000:.0f} ms)")
if k["lead"] and t["lead"]:
    kl, tl = pct(k["lead"], 50), pct(t["lead"], 50)
    print(f"         new leader after SIGKILL {kl:.2f} s = {kl / tl:.1f}x SIGTERM's {tl:.2f} s")
if k["work"] and t["work"]:
    kw, tw = pct(k["work"], 50), pct(t["work"], 50)
    print(f"         every worker with the new leader after SIGKILL {kw:.2f} s = {kw / tw:.1f}x SIGTERM's {tw:.2f} s")
lost = sum(x["lost"] + x["lost_back"] for v in res.values() for x in v)
if lost:
    sys.exit(f"{lost} acknowledged writes were lost")
