#!/usr/bin/env bash
# The autopilot's figures, with the release binary, real `cohort router` processes and real
# loopback backends:
#  1. time from the bad build's first canary request to the rollback commit, at each canary
#     rate given (the demo's bad build: 8% errors against production's 0.2%), a running
#     autopilot looking every second;
#  2. CPU and memory of one pass (`--once --dry-run`) over generated repos of 30 and 300
#     services (one of them routed, the rest waiting with nothing to judge).
#
# Usage: bench/autopilot/run.sh [CANARY_RATE...]    (default: 5 50, requests per second)
# Needs: cargo, git, python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
rates=("${@:-5 50}")
# shellcheck disable=SC2206
rates=(${rates[*]})

cargo build --release --locked -p cohort -p cohort-bench --bins
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# A backend answering `NAME` with 200, and 500 every FAIL_EVERY-th request (0: never).
cat >"$work/backend.py" <<'EOF'
import http.server, sys, threading
name, fail_every = sys.argv[1], int(sys.argv[2])
seen = 0
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        global seen
        with lock:
            seen += 1
            n = seen
        code = 500 if fail_every and n % fail_every == 0 else 200
        body = name.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
EOF

# Runs a command with its stdout to OUT; prints its wall time, CPU time (user+sys) in
# seconds and peak RSS in KiB, read from wait4's rusage (microseconds, where GNU time's
# format stops at 10 ms).
cat >"$work/measure.py" <<'EOF'
import os, subprocess, sys, time
out = open(sys.argv[1], "w")
start = time.monotonic()
child = subprocess.Popen(sys.argv[2:], stdout=out)
_, status, usage = os.wait4(child.pid, 0)
wall = time.monotonic() - start
print(f"{wall:.6f} {usage.ru_utime + usage.ru_stime:.6f} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
EOF

# Sends FREE requests at RATE per second to the canary's half of FREE (2×RATE in all), over
# keep-alive connections, until killed.
cat >"$work/load.py" <<'EOF'
import http.client, sys, time
port, rate = int(sys.argv[1]), float(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)
step, next_at = 1.0 / (2 * rate), time.monotonic()
while True:
    try:
        conn.request("GET", "/", headers={"X-Traffic-Group": "FREE"})
        conn.getresponse().read()
    except Exception:
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port)
    next_at += step
    time.sleep(max(0.0, next_at - time.monotonic()))
EOF

# Starts a backend (in this shell, so cleanup stops it): NAME FAIL_EVERY; its port in $port.
backend() {
    rm -f "$work/port.$1"
    python3 "$work/backend.py" "$1" "$2" >"$work/port.$1" 2>/dev/null &
    pids+=($!)
    for _ in $(seq 50); do [ -s "$work/port.$1" ] && break; sleep 0.1; done
    port=$(head -1 "$work/port.$1")
}

# Starts a router for account-service: FREE half to canary 1.19.0 (a backend failing 8%),
# half to production 1.15.0 (0.2%): DIR; its ports in $traffic and $admin.
router() {
    backend canary 12
    local canary=$port
    backend production 500
    set -- "$canary" "$port" "$1"
    cat >"$3/router.yaml" <<EOF
service: account-service
trusted_peers: [127.0.0.0/8]
tracks:
  - name: canary
    version: 1.19.0
    backends: ["127.0.0.1:$1"]
  - name: production
    version: 1.15.0
    backends: ["127.0.0.1:$2"]
cohorts:
  - cohort: FREE
    weights:
      - track: canary
        weight: 50%
      - track: production
        weight: 50%
default_route:
  weights:
    - track: production
      weight: 100%
EOF
    "$bin/cohort" router --config "$3/router.yaml" --listen 127.0.0.1:0 --admin 127.0.0.1:0 \
        2>"$3/router.log" &
    pids+=($!)
    for _ in $(seq 50); do grep -q " on " "$3/router.log" 2>/dev/null && break; sleep 0.1; done
    read -r traffic admin < <(sed -n 's/.* on 127.0.0.1:\([0-9]*\) (admin on 127.0.0.1:\([0-9]*\)).*/\1 \2/p' "$3/router.log")
}

# A release repo whose canary runs the bad 1.19.0 and may be rolled back by itself.
repo() { # DIR
    export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com
    export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
    "$bin/cohort" init "$1" >/dev/null
    printf 'autopilot:\n  stages:\n    canary:\n      rollback: auto\n' | cat - "$1/cohort.yaml" >"$1/c.yaml"
    mv "$1/c.yaml" "$1/cohort.yaml"
    git -C "$1" commit -qam "autopilot policy"
    "$bin/cohort" -C "$1" deploy account-service 1.19.0 >/dev/null
    "$bin/cohort" -C "$1" promote account-service --to canary --force --reason bench >/dev/null
}

echo "time to the rollback commit (bad canary: 8% errors, production 0.2%; a pass a second)"
for rate in "${rates[@]}"; do
    dir="$work/rate-$rate"
    mkdir -p "$dir"
    repo "$dir/repo"
    router "$dir"
    before=$(git -C "$dir/repo" rev-parse HEAD)
    "$bin/cohort" -C "$dir/repo" autopilot --interval 1s --metrics-url "http://127.0.0.1:$admin" \
        >"$dir/autopilot.log" 2>&1 &
    autopilot=$!
    pids+=($autopilot)
    start=$(date +%s.%N)
    python3 "$work/load.py" "$traffic" "$rate" 2>/dev/null &
    load=$!
    pids+=($load)
    while [ "$(git -C "$dir/repo" rev-parse HEAD)" = "$before" ]; do
        sleep 0.1
        if [ "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print (b - a > 600) }')" = 1 ]; then
            echo "no rollback within 10 minutes at $rate/s"; cat "$dir/autopilot.log"; exit 1
        fi
    done
    end=$(date +%s.%N)
    kill "$load" "$autopilot" 2>/dev/null || true
    subject=$(git -C "$dir/repo" log -1 --format=%s)
    printf '  %4s canary requests/s: %6.1f s   (%s)\n' "$rate" \
        "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$subject"
done

echo "one pass (--once --dry-run): wall, CPU (user+sys) and peak memory, median of 5"
router "$work"
for n in 30 300; do
    dir="$work/fleet-$n"
    "$bin/gen-repo" "$n" "$dir" 2>/dev/null
    git -C "$dir" init -q && git -C "$dir" add -A && git -C "$dir" commit -qm fleet
    : >"$work/times"
    for _ in 1 2 3 4 5; do
        python3 "$work/measure.py" "$work/pass.out" \
            "$bin/cohort" -C "$dir" autopilot --once --dry-run --metrics-url "http://127.0.0.1:$admin" \
            >>"$work/times" || { cat "$work/pass.out"; exit 1; }
    done
    waiting=$(grep -c ": nothing under way" "$work/pass.out" || true)
    sort -n -k1 "$work/times" | sed -n 3p | awk -v n="$n" -v w="$waiting" \
        '{ printf "  %3d services (%d decided): %.1f ms wall, %.1f ms CPU, %.1f MB\n", n, w, $1 * 1000, $2 * 1000, $3 / 1024 }'
done
