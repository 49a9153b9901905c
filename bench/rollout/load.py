"""Constant load for bench/rollout: sequential HTTP requests, each on a new connection
(connect, `GET / HTTP/1.0`, read to the end, close), for at most DURATION seconds and at most
MAX requests. Runs inside the lab (a client task, or a node's namespace).

Usage: load.py HOST:PORT DURATION MAX [--resolve-each]

With --resolve-each the name is looked up (getaddrinfo, so the task's DNS, 127.0.0.11) before
every request and the first IPv4 address is taken, as a client of a dnsrr service does;
otherwise it is looked up once (a VIP or a node address does not change).

Prints one JSON line: requests sent, failed (by kind, with the first message of each kind),
p50/p99 latency of every request in ms (a failed one counts with the time it took to fail),
the wall-clock time of the first and last request (to check that the load covered the
update), requests started per 100 ms and the start time of each failed request (to count
those made while the update ran)."""
import json
import socket
import sys
import time

TIMEOUT = 2.0


def resolve(host, port):
    for family, _, _, _, addr in socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM):
        if family == socket.AF_INET:
            return addr
    raise OSError(f"{host} has no IPv4 address")


def request(addr):
    with socket.create_connection(addr, timeout=TIMEOUT) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: load\r\n\r\n")
        reply = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    if not reply.startswith(b"HTTP/1.1 200") and not reply.startswith(b"HTTP/1.0 200"):
        raise ValueError(f"answer was not a 200: {reply[:40]!r}")


def kind(e):
    if isinstance(e, socket.gaierror):
        return "resolve"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(e, ValueError):
        return "bad answer"
    return "other"


def main():
    target, duration, most = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    each = "--resolve-each" in sys.argv[4:]
    host, port = target.rsplit(":", 1)
    port = int(port)
    addr = None if each else resolve(host, port)
    lat, errors, per_tenth, failed_at = [], {}, {}, []
    first = time.time()
    end = time.monotonic() + duration
    while time.monotonic() < end and len(lat) < most:
        t0 = time.monotonic()
        started = time.time()
        tenth = int(started * 10)
        per_tenth[tenth] = per_tenth.get(tenth, 0) + 1
        try:
            request(resolve(host, port) if each else addr)
        except (OSError, ValueError) as e:
            k = kind(e)
            n, msg = errors.get(k, (0, str(e)))
            errors[k] = (n + 1, msg)
            failed_at.append(round(started, 3))
        lat.append(time.monotonic() - t0)
    last = time.time()
    ordered = sorted(lat)

    def pct(p):
        return round(ordered[min(len(ordered) - 1, (len(ordered) * p + 99) // 100 - 1)] * 1000, 2) if ordered else 0

    print(json.dumps({
        "sent": len(lat),
        "failed": sum(n for n, _ in errors.values()),
        "errors": {k: {"count": n, "first": msg} for k, (n, msg) in errors.items()},
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "first": first,
        "last": last,
        "per_tenth": per_tenth,
        "failed_at": failed_at,
    }))


main()
