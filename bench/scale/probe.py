"""Runs inside a client task's network namespace. For each expected count N read from stdin:
poll 127.0.0.11 for `tasks.web` until it answers N addresses, then connect to the VIP (argv[1],
port 80), and print CLOCK_MONOTONIC in ns (one clock for every namespace of the machine).
The query is built by hand because only the answer count is read."""
import socket
import struct
import sys
import time

VIP = sys.argv[1]
QNAME = b"".join(bytes([len(p)]) + p for p in b"tasks.web".split(b".")) + b"\0"


def answers(sock, qid):
    sock.send(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + QNAME + struct.pack(">HH", 1, 1))
    while True:
        data = sock.recv(4096)
        if struct.unpack(">H", data[:2])[0] == qid:
            return struct.unpack(">H", data[6:8])[0]


dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.connect(("127.0.0.11", 53))
dns.settimeout(1)
qid = 0
for line in sys.stdin:
    want = int(line)
    while True:
        qid = (qid + 1) & 0xFFFF
        try:
            if answers(dns, qid) == want:
                break
        except socket.timeout:
            pass
        time.sleep(0.0005)
    while True:
        try:
            socket.create_connection((VIP, 80), timeout=1).close()
            break
        except OSError:
            time.sleep(0.0005)
    print(time.monotonic_ns(), flush=True)
