"""The gRPC client side of cohort's router tests: runs one scenario against ADDRESS and prints
what it saw as JSON. Usage: client.py ADDRESS SCENARIO [ARG]."""

import json
import sys
import threading
import time

import grpc

ADDRESS, SCENARIO = sys.argv[1], sys.argv[2]
ARG = sys.argv[3] if len(sys.argv) > 3 else ""
channel = grpc.insecure_channel(
    ADDRESS,
    options=[("grpc.max_send_message_length", 16 << 20), ("grpc.max_receive_message_length", 16 << 20)],
)
grpc.channel_ready_future(channel).result(timeout=10)


def method(kind, name):
    return getattr(channel, kind)(f"/test.Echo/{name}")


def status_of(call):
    try:
        call()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


out = {}
if SCENARIO == "unary":
    # ARG: "COHORT:N" calls with that cohort in the metadata; answers by track.
    cohort, n = ARG.split(":")
    unary = method("unary_unary", "Unary")
    md = [("x-traffic-group", cohort)] if cohort else []
    seen = {}
    for i in range(int(n)):
        reply = unary(f"hello {i}".encode(), metadata=md, timeout=10)
        track, saw, echoed = reply.split(b" ", 2)
        assert echoed == f"hello {i}".encode(), reply
        seen[f"{track.decode()} {saw.decode()}"] = seen.get(f"{track.decode()} {saw.decode()}", 0) + 1
    out["answers"] = seen
elif SCENARIO == "streams":
    md = [("x-traffic-group", "ENTERPRISE")]
    replies = list(method("unary_stream", "ServerStream")(b"50", metadata=md, timeout=10))
    out["server_stream"] = [r.decode() for r in replies]
    messages = (b"x" * 1000 for _ in range(20))
    out["client_stream"] = method("stream_unary", "ClientStream")(messages, metadata=md, timeout=10).decode()
    pings = (f"ping {i}".encode() for i in range(10))
    out["bidi"] = [r.decode() for r in method("stream_stream", "Bidi")(pings, metadata=md, timeout=10)]
    # Far more than HTTP/2's initial 64 KiB window, both ways: flow control has to work.
    big = bytes(range(256)) * (3 * 4096)
    reply = method("unary_unary", "Unary")(big, metadata=md, timeout=20)
    out["big"] = {"sent": len(big), "intact": reply.endswith(big), "received": len(reply)}
elif SCENARIO == "statuses":
    # ARG: comma-separated status names the server is asked to fail with (one call each).
    unary = method("unary_unary", "Unary")
    md = [("x-traffic-group", "ENTERPRISE")]
    out["statuses"] = [
        status_of(lambda c=code: unary(f"fail:{c}".encode(), metadata=md, timeout=10)) for code in ARG.split(",")
    ]
elif SCENARIO == "cancel":
    # Read three messages of a slow stream, then cancel it.
    call = method("unary_stream", "Slow")(b"", metadata=[("x-traffic-group", "ENTERPRISE")], timeout=30)
    got = [next(call) for _ in range(3)]
    call.cancel()
    out["received"] = len(got)
    out["status"] = status_of(lambda: list(call))
elif SCENARIO == "deadline":
    unary = method("unary_unary", "Unary")
    out["status"] = status_of(lambda: unary(b"sleep:2", metadata=[("x-traffic-group", "ENTERPRISE")], timeout=0.3))
elif SCENARIO == "stats":
    out = json.loads(method("unary_unary", "Stats")(b"", timeout=10))
else:
    sys.exit(f"unknown scenario {SCENARIO}")
print(json.dumps(out), flush=True)
