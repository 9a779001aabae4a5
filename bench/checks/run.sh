#!/usr/bin/env bash
# What the judgement's extra checks cost: `cohort analyze` with three checks (a Prometheus
# value compared with the baseline, a Prometheus ratio, a web check) against the routers'
# counts alone (`--counts-only`), timed side by side with hyperfine; and the Prometheus
# queries one judgement makes. Real parts on loopback: a `cohort router`, two shop apps
# exporting a business counter, a JSON health API, and Debian's Prometheus scraping them.
#
# Usage: bench/checks/run.sh [RUNS]    (default 20)
#   CANARY_CHECKOUT_EVERY=30 makes the canary check out one request in 30 (production: 10),
#   so its business check fails.
# Needs: cargo, git, python3, prometheus, hyperfine, wrk (apt-get install prometheus hyperfine wrk).
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-20}
for tool in prometheus hyperfine wrk python3 git; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install $tool)" >&2; exit 2; }
done

cargo build --release --locked -p cohort
cohort="${CARGO_TARGET_DIR:-$PWD/target}/release/cohort"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# A shop app: every request counted, every EVERY-th a checkout; /metrics exports both.
cat >"$work/shop.py" <<'EOF'
import http.server, sys, threading
every = int(sys.argv[1])
counts = {"requests": 0, "checkouts": 0}
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/metrics":
            with lock:
                body = ("shop_requests_total %d\nshop_checkouts_total %d\n" % (counts["requests"], counts["checkouts"])).encode()
        else:
            with lock:
                counts["requests"] += 1
                if counts["requests"] % every == 0:
                    counts["checkouts"] += 1
            body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
EOF

start_py() { # script args... -> prints the port
    # (a client closing a keep-alive connection makes Python print a traceback: not ours)
    python3 "$@" >"$work/port.$$" 2>/dev/null &
    pids+=($!)
    for _ in $(seq 50); do [[ -s "$work/port.$$" ]] && break; sleep 0.1; done
    cat "$work/port.$$"; rm -f "$work/port.$$"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

canary=$(start_py "$work/shop.py" "${CANARY_CHECKOUT_EVERY:-10}")
production=$(start_py "$work/shop.py" 10)
cat >"$work/health.py" <<'EOF'
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'{"checks":{"db":"ok"}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
EOF
health=$(start_py "$work/health.py")

traffic=$(free_port); admin=$(free_port)
cat >"$work/router.yaml" <<EOF
service: account-service
trusted_peers: [127.0.0.0/8]
tracks:
  - name: canary
    version: 1.17.0
    backends: ["127.0.0.1:$canary"]
  - name: production
    version: 1.15.0
    backends: ["127.0.0.1:$production"]
cohorts:
  - cohort: FREE
    weights:
      - track: canary
        weight: 20%
      - track: production
        weight: 80%
default_route:
  weights:
    - track: production
      weight: 100%
EOF
"$cohort" router --config "$work/router.yaml" --listen "127.0.0.1:$traffic" --admin "127.0.0.1:$admin" \
    >"$work/router.log" 2>&1 &
pids+=($!)

prom=$(free_port)
cat >"$work/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: shop
    static_configs:
      - {targets: ["127.0.0.1:$canary"], labels: {track: canary}}
      - {targets: ["127.0.0.1:$production"], labels: {track: production}}
  - job_name: cohort-router
    static_configs:
      - {targets: ["127.0.0.1:$admin"], labels: {service: account-service}}
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prom" >"$work/prometheus.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$prom/-/ready" >/dev/null 2>&1 && break; sleep 0.2; done

(cd "$work" && "$cohort" init releases >/dev/null)
repo="$work/releases"
cat >>"$repo/cohort.yaml" <<EOF

judgement:
  window: 1m
  min_error_increase: 5%
  prometheus:
    url: http://127.0.0.1:$prom
  checks:
    - name: checkouts-per-request
      prometheus: sum(rate(shop_checkouts_total{track="{{track}}"}[{{window}}])) / sum(rate(shop_requests_total{track="{{track}}"}[{{window}}]))
      must_not_drop_by: 20%
    - name: router-errors
      prometheus:
        errors: sum(increase(cohort_router_requests_total{track="{{track}}",class="5xx"}[{{window}}])) or vector(0)
        requests: sum(increase(cohort_router_requests_total{track="{{track}}"}[{{window}}]))
    - name: orders-api
      web: http://127.0.0.1:$health/health/{{track}}
      json_path: checks.db
      equals: ok
EOF
(cd "$repo" && "$cohort" validate >/dev/null)

# Traffic through the router the whole time: the judgement reads a live window.
sleep 2
wrk -t1 -c4 -d600s -H 'X-Traffic-Group: FREE' "http://127.0.0.1:$traffic/" >/dev/null 2>&1 &
pids+=($!)
# Enough canary requests for the counts to pass (the Python apps take ~100 requests/s).
sleep 30

analyze=(analyze account-service --track canary --metrics-url "http://127.0.0.1:$admin")
echo "== one judgement with three checks"
(cd "$repo" && "$cohort" "${analyze[@]}") || true
(cd "$repo" && "$cohort" "${analyze[@]}" -o json) >"$work/one.json" || true
python3 - "$work/one.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("verdict:", r["verdict"], "| Prometheus queries per judgement:", r["prometheus_queries"],
      "|", ", ".join("%s %s" % (c["name"], c["outcome"]) for c in r["checks"]))
EOF

echo "== time to a verdict: routers' counts alone against three extra checks ($runs runs each)"
cd "$repo"
hyperfine -N -w 2 -r "$runs" -i \
    -n "counts alone" "$cohort ${analyze[*]} --counts-only" \
    -n "three checks" "$cohort ${analyze[*]}"
