"""Memory of running tasks: for each task id given, the proportional set size (PSS) of the
task's process (its status.pid, from the API), everything it forked, and its parent when the
parent is a per-task monitor (conmon, or a runc running in the foreground) rather than shoald
itself. Prints the mean per task in KiB. PSS splits shared pages (the image's binaries, libc)
between the processes that map them, so the sum is what the tasks cost the node together.
usage: mem.py SOCKET TASK_ID...   (root; reads /proc)"""
import json
import os
import socket
import sys


def api(sock_path, path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: shoal\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def ppid(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


sock, ids = sys.argv[1], sys.argv[2:]
total, counted = 0, set()
for tid in ids:
    pid = api(sock, f"/v1/tasks/{tid}")["Status"].get("PID")
    if not pid:
        sys.exit(f"task {tid} has no pid")
    todo = [pid]
    parent = ppid(pid)
    if comm(parent) in ("conmon", "runc"):
        todo.append(parent)
    while todo:
        p = todo.pop()
        if p in counted:
            continue
        counted.add(p)
        total += pss_kib(p)
        todo += children(p)
print(f"{total / len(ids):.0f} {len(counted)}")
