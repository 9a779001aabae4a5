"""Opens N keep-alive connections to a proxy, sends one request on each, holds them open
until stdin closes. Prints how many answered."""
import socket
import sys

port, n = int(sys.argv[1]), int(sys.argv[2])
conns, ok = [], 0
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-User-Id: u%d\r\n\r\n" % i)
    s.settimeout(5)
    # One request at a time: 1,000 open client connections, not 1,000 requests at once.
    if s.recv(4096).startswith(b"HTTP/1.1 200"):
        ok += 1
    conns.append(s)
print(ok, flush=True)
sys.stdin.read()
