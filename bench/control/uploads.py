#!/usr/bin/env python3
"""serve's memory under unauthenticated uploads held open (issue 12, item 6).

    bench/control/uploads.py [BINARY] [CONNECTIONS] [BODY_BYTES]

Starts `BINARY serve` (default target/debug/cohort) over a fresh release repo, reads its
VmRSS idle, then opens CONNECTIONS connections that each POST a report with a wrong token and
a body of BODY_BYTES (default 300 and 2,000,000, just under axum's default body limit), send as
much of it as the server takes and hold the connection open; after 5 seconds it reads VmRSS
again and counts the connections the server has closed.
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/cohort"
conns = int(sys.argv[2]) if len(sys.argv) > 2 else 300
body = int(sys.argv[3]) if len(sys.argv) > 3 else 2_000_000


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


with tempfile.TemporaryDirectory() as work:
    env = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null")
    subprocess.run([binary, "init", f"{work}/repo"], env=env, check=True, capture_output=True)
    with open(f"{work}/tokens.yaml", "w") as f:
        f.write("clusters:\n  eu-west:\n    token: bench-token-0123456789abcdef\n")
    server = subprocess.Popen(
        [binary, "-C", f"{work}/repo", "serve", "--listen", "127.0.0.1:0", "--tokens", f"{work}/tokens.yaml"],
        stderr=subprocess.PIPE, text=True)
    try:
        first = server.stderr.readline()
        host, port = re.search(r"http://([0-9.]+):(\d+)", first).groups()
        time.sleep(1)
        idle = rss_kib(server.pid)
        head = (f"POST /v1/clusters/eu-west/reports HTTP/1.1\r\nHost: cohort\r\n"
                f"Authorization: Bearer not-a-token-of-this-server\r\n"
                f"Content-Type: application/json\r\nContent-Length: {body}\r\n\r\n").encode()
        socks = []
        for _ in range(conns):
            s = socket.create_connection((host, int(port)))
            s.sendall(head)
            s.setblocking(False)
            socks.append([s, 0])
        chunk = b" " * 65536
        deadline = time.time() + 5
        while time.time() < deadline:
            for entry in socks:
                s, sent = entry
                if s is None or sent >= body - 1:
                    continue  # the last byte is never sent: the upload is held open
                try:
                    entry[1] += s.send(chunk[: min(len(chunk), body - 1 - sent)])
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    entry[0] = None
            time.sleep(0.01)
        loaded = rss_kib(server.pid)
        closed = 0
        for s, _ in socks:
            if s is None:
                closed += 1
                continue
            try:
                if s.recv(65536, socket.MSG_PEEK) == b"":
                    closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        sent = sum(entry[1] for entry in socks)
        print(f"{binary}: VmRSS idle {idle / 1024:.1f} MiB, with {conns} unauthenticated uploads "
              f"of {body} bytes held open {loaded / 1024:.1f} MiB; body bytes the server took "
              f"{sent / 2**20:.1f} MiB; connections it closed {closed}/{conns}")
        for s, _ in socks:
            if s is not None:
                s.close()
    finally:
        server.kill()
        server.wait()
