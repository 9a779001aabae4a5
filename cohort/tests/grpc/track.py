"""A gRPC track for cohort's router tests (grpcio, raw bytes, no generated code).

Usage: track.py NAME [--health]. Serves test.Echo on an ephemeral loopback port and prints
the port on its first line. With --health it also answers grpc.health.v1.Health/Check as
SERVING; without, that method is UNIMPLEMENTED.

Methods (requests and answers are bytes):
  Unary         b"fail:CODE" aborts with that status; b"sleep:SECONDS" sleeps first;
                anything else comes back as b"NAME COHORT " + request (COHORT: the
                x-traffic-group metadata the call arrived with, or "-").
  ServerStream  request b"N": N messages b"NAME i".
  ClientStream  answers b"NAME COUNT BYTES" for the messages sent.
  Bidi          each message comes back prefixed with b"NAME ".
  Slow          a message every 50 ms for a minute; notes when the call is cancelled.
  Stats         JSON: calls per method and cohort, and cancellations seen.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc

NAME = sys.argv[1]
HEALTH = "--health" in sys.argv[2:]
LOCK = threading.Lock()
STATS = {"calls": {}, "cancelled": 0}


def note(method, context):
    cohort = dict(context.invocation_metadata()).get("x-traffic-group", "-")
    with LOCK:
        key = f"{method} {cohort}"
        STATS["calls"][key] = STATS["calls"].get(key, 0) + 1
    return cohort


def cancelled():
    with LOCK:
        STATS["cancelled"] += 1


def unary(request, context):
    cohort = note("Unary", context)
    if request.startswith(b"fail:"):
        code = grpc.StatusCode[request[5:].decode()]
        context.abort(code, f"{NAME} was asked to fail with {code.name}")
    if request.startswith(b"sleep:"):
        until = time.monotonic() + float(request[6:].decode())
        while time.monotonic() < until:
            if not context.is_active():
                cancelled()
                return b""
            time.sleep(0.02)
        return b"slept"
    return NAME.encode() + b" " + cohort.encode() + b" " + request


def server_stream(request, context):
    note("ServerStream", context)
    for i in range(int(request.decode())):
        yield f"{NAME} {i}".encode()


def client_stream(requests, context):
    note("ClientStream", context)
    count = total = 0
    for r in requests:
        count += 1
        total += len(r)
    return f"{NAME} {count} {total}".encode()


def bidi(requests, context):
    note("Bidi", context)
    for r in requests:
        yield NAME.encode() + b" " + r


def slow(request, context):
    note("Slow", context)
    for _ in range(1200):
        if not context.is_active():
            cancelled()
            return
        yield b"tick"
        time.sleep(0.05)


def stats(request, context):
    with LOCK:
        return json.dumps(STATS).encode()


def health(request, context):
    # HealthCheckResponse { status: SERVING }
    return b"\x08\x01"


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Slow": grpc.unary_stream_rpc_method_handler(slow),
        "Stats": grpc.unary_unary_rpc_method_handler(stats),
    }
    generic = [grpc.method_handlers_generic_handler("test.Echo", handlers)]
    if HEALTH:
        generic.append(
            grpc.method_handlers_generic_handler(
                "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(health)}
            )
        )
    server.add_generic_rpc_handlers(generic)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    # Stops when the test closes stdin (or dies).
    sys.stdin.read()
    server.stop(0)


main()
