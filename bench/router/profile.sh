#!/usr/bin/env bash
# Instructions per request, the repeatable measure on a noisy machine: `cohort router` (one
# thread, the seed's haproxy.cfg) under callgrind, instrumentation switched on only after a
# warm-up, while wrk sends the cohort mix over 64 keep-alive connections (or a connection per
# request with `close`). Prints Ir per request and the functions that cost most (inclusive).
#
# Usage: bench/router/profile.sh [BINARY] [keepalive|close] [SECONDS]
#   BINARY defaults to this checkout built with the `profiling` profile (release with line
#   tables); give another to compare builds.
#   KEEP_PROFILE=FILE keeps the callgrind output (for callgrind_annotate --tree=caller ...).
#   ROUTER_ARGS="--hyper-only" passes more flags to the router (that one: hyper for every
#   request, to compare with the router's own HTTP/1.1 path).
# Needs: valgrind nginx wrk taskset.
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n 65536 2>/dev/null || true
for tool in valgrind callgrind_control nginx wrk taskset; do
    command -v "$tool" >/dev/null || { echo "profile.sh: $tool is missing; install with: apt-get install -y valgrind nginx-light wrk util-linux" >&2; exit 2; }
done
binary=${1:-}
mode=${2:-keepalive}
secs=${3:-10}
if [ -z "$binary" ]; then
    # The release build with line tables (Cargo.toml's `profiling` profile): names in the profile.
    cargo build --profile profiling --locked -q -p cohort
    binary="${CARGO_TARGET_DIR:-$PWD/target}/profiling/cohort"
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
source bench/router/setup.sh

taskset -c 0 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.out" \
    "$binary" router --threads 1 --haproxy-config "$work/haproxy.cfg" \
    --listen "127.0.0.1:$p_cohort" --admin "127.0.0.1:$p_admin" --max-connections 5000 \
    ${ROUTER_ARGS:-} 2>"$work/cohort.err" & pids+=($!)
router=$!
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$p_admin/ready" && break
    sleep 0.2
done
conns=64; [ "$mode" = close ] && conns=16
# Warm-up: pools filled, metric handles made, allocator settled.
taskset -c 1 wrk -t1 -c"$conns" -d3s -s bench/router/mix.lua "http://127.0.0.1:$p_cohort/" -- "$mode" >/dev/null
callgrind_control -i on "$router" >/dev/null
out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s bench/router/mix.lua "http://127.0.0.1:$p_cohort/" -- "$mode")
callgrind_control -i off "$router" >/dev/null
callgrind_control -d "$router" >/dev/null
requests=$(grep '^RESULT' <<<"$out" | sed -E 's/.*requests=([0-9]+).*/\1/')
errors=$(grep '^RESULT' <<<"$out" | sed -E 's/.*errors=([0-9]+) non200=([0-9]+).*/\1+\2/')
# The dump written by -d: the measured part.
dump=$(ls -1 "$work"/callgrind.out* | sort -V | tail -1)
callgrind_annotate --inclusive=yes "$dump" > "$work/annotated" 2>/dev/null
total=$(grep 'PROGRAM TOTALS' "$work/annotated" | head -1 | awk '{gsub(",", "", $1); print $1}')
python3 -c "print(f'$mode: {$total/$requests:,.0f} instructions per request ({$requests} requests, errors+non200 {$errors})')"
echo "top functions (inclusive instructions per request):"
grep -E '^\s*[0-9,]+ ' "$work/annotated" | sed -n '2,45p' | python3 -c "
import sys
for line in sys.stdin:
    n, rest = line.split(None, 1)
    print(f'{int(n.replace(\",\", \"\"))/$requests:>9,.0f}  {rest.strip()[:150]}')
"
if [ -n "${KEEP_PROFILE:-}" ]; then cp "$dump" "$KEEP_PROFILE"; echo "callgrind output kept in $KEEP_PROFILE"; fi
