#!/usr/bin/env bash
# The router against HAProxy (Debian's package, one thread) and against no proxy at all, side
# by side in one run, alternating the order each round.
#
# Four track backends (nginx, one worker, keep-alive raised, each answering with its track in
# X-Track) and wrk share one core; the proxy under test gets the other core to itself. For each
# proxy and mode (keep-alive; a new connection per request) it reports requests/s, p50/p99/p99.9,
# the proxy's CPU time per request (utime+stime from /proc over the run, and each apart: on
# loopback the kernel's share is most of it, the same for every proxy) and its RSS, and checks
# the split the backends saw and that nothing failed. A second cohort router with the same
# routing mirrors 5% of FREE's production requests to internal: the cost of mirroring. A third
# (`hyper`) forwards every request with hyper (`--hyper-only`), as the router did before its own
# HTTP/1.1 path (decision 0030): what that path buys.
#
# Usage: [COHORT_BIN=path] bench/router/run.sh [SECONDS] [ROUNDS]   (needs: haproxy nginx wrk taskset)
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n 65536 2>/dev/null || true
secs=${1:-10}
rounds=${2:-2}
for tool in haproxy nginx wrk taskset; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing; install with: apt-get install -y haproxy nginx-light wrk util-linux" >&2; exit 2; }
done
# COHORT_BIN=/path/to/cohort measures that build instead of this checkout's release build.
target=${COHORT_BIN:-}
if [ -z "$target" ]; then
    cargo build --release --locked -q -p cohort
    target="${CARGO_TARGET_DIR:-$PWD/target}/release/cohort"
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# The four track backends (nginx on core 1) and the seed's haproxy.cfg (shared with profile.sh).
source bench/router/setup.sh
taskset -c 0 haproxy -f "$work/haproxy.cfg" -db & pids+=($!)
haproxy_pid=$!

# --- cohort router, the equivalent config, one worker thread -----------------------------
taskset -c 0 "$target" router --threads 1 --haproxy-config "$work/haproxy.cfg" \
    --listen "127.0.0.1:$p_cohort" --admin "127.0.0.1:$p_admin" --max-connections 5000 2>"$work/cohort.err" & pids+=($!)
cohort_pid=$!
# --- and one more with the same routing from router.yaml, mirroring 5% of FREE's production
# requests to internal (the cost of mirroring, on the plain path and the copied one)
taskset -c 0 "$target" router --threads 1 --config "$work/router-mirror.yaml" \
    --listen "127.0.0.1:$p_mirror" --admin "127.0.0.1:$p_mirror_admin" --max-connections 5000 2>"$work/mirror.err" & pids+=($!)
mirror_pid=$!
taskset -c 0 "$target" router --threads 1 --haproxy-config "$work/haproxy.cfg" --hyper-only \
    --listen "127.0.0.1:$p_hyper" --admin "127.0.0.1:$p_hyper_admin" --max-connections 5000 2>"$work/hyper.err" & pids+=($!)
hyper_pid=$!
sleep 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

run() { # name pid port mode
    local name=$1 pid=$2 port=$3 mode=$4 conns=64 before after out
    [ "$mode" = close ] && conns=16
    before=$([ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
    sys_before=$([ "$pid" = - ] && echo 0 || sys_ticks "$pid")
    out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s bench/router/mix.lua "http://127.0.0.1:$port/" -- "$mode")
    after=$([ "$pid" = - ] && echo 0 || cpu_ticks "$pid")
    sys_after=$([ "$pid" = - ] && echo 0 || sys_ticks "$pid")
    local result split req
    result=$(grep '^RESULT' <<<"$out"); split=$(grep '^SPLIT' <<<"$out" || true)
    req=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$result")
    local cpu_us="-" rss="-" sys_us="-"
    if [ "$pid" != - ]; then
        cpu_us=$(python3 -c "print(f'{($after-$before)/$hz*1e6/$req:.1f}')")
        sys_us=$(python3 -c "print(f'{($sys_after-$sys_before)/$hz*1e6/$req:.1f}')")
        rss=$(( $(rss_kib "$pid") / 1024 ))
    fi
    printf '%-8s %-10s %s cpu_us_per_req=%s sys_us_per_req=%s rss_mib=%s %s\n' "$name" "$mode" "${result#RESULT }" "$cpu_us" "$sys_us" "$rss" "${split#SPLIT }" | tee -a "$work/results"
}

echo "expected split with a proxy: internal 5%, canary 2%, paid 2%, production 91%"
for round in $(seq 1 "$rounds"); do
    order=("none" "haproxy" "cohort" "mirror" "hyper")
    [ $((round % 2)) -eq 0 ] && order=("hyper" "mirror" "cohort" "haproxy" "none")
    for mode in keepalive close; do
        for who in "${order[@]}"; do
            case $who in
                none) run none - "${port[production]}" "$mode" ;;
                haproxy) run haproxy "$haproxy_pid" "$p_haproxy" "$mode" ;;
                cohort) run cohort "$cohort_pid" "$p_cohort" "$mode" ;;
                mirror) run mirror "$mirror_pid" "$p_mirror" "$mode" ;;
                hyper) run hyper "$hyper_pid" "$p_hyper" "$mode" ;;
            esac
        done
    done
done

# --- memory with 1,000 open keep-alive connections, each answered once -------------------
for who in haproxy cohort; do
    case $who in haproxy) pid=$haproxy_pid; port=$p_haproxy ;; cohort) pid=$cohort_pid; port=$p_cohort ;; esac
    coproc HOLD { taskset -c 1 python3 bench/router/hold.py "$port" 1000; }
    read -r answered <&"${HOLD[0]}"
    # At once, and once the connections have been idle for 3 s (cohort parks a connection
    # quiet for 1-2 s; HAProxy releases a connection's buffers as soon as it is idle).
    at_once=$(rss_mib "$pid")
    sleep 3
    printf '%-8s rss_mib_at_1000_connections=%s idle_3s=%s answered=%s\n' "$who" "$at_once" "$(rss_mib "$pid")" "$answered"
    exec {HOLD[1]}>&-
    wait "$HOLD_PID" 2>/dev/null || true
done

# --- summary: medians over the rounds, cohort against HAProxy -------------------------------
python3 - "$work/results" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, mode = line.split()[:2]
    f = dict(re.findall(r"(\w+)=([\d.]+)", line))
    rows.setdefault((who, mode), []).append(f)
def med(who, mode, key):
    vals = [float(r[key]) for r in rows.get((who, mode), []) if key in r]
    return statistics.median(vals) if vals else float("nan")
print("\nmedians over the rounds (cohort / HAProxy):")
print(f"{'mode':<10} {'HAProxy us/req':>15} {'cohort us/req':>14} {'ratio':>6} {'(user, sys)':>22} {'HAProxy p99':>12} {'cohort p99':>11} {'ratio':>6} {'no proxy p99':>13}")
for mode in ("keepalive", "close"):
    hc, cc = med("haproxy", mode, "cpu_us_per_req"), med("cohort", mode, "cpu_us_per_req")
    hs, cs = med("haproxy", mode, "sys_us_per_req"), med("cohort", mode, "sys_us_per_req")
    hp, cp = med("haproxy", mode, "p99_us") / 1000, med("cohort", mode, "p99_us") / 1000
    npx = med("none", mode, "p99_us") / 1000
    split = f"{hc-hs:.1f}+{hs:.1f} / {cc-cs:.1f}+{cs:.1f}"
    print(f"{mode:<10} {hc:>15.1f} {cc:>14.1f} {cc/hc:>5.2f}x {split:>22} {hp:>10.2f}ms {cp:>9.2f}ms {cp/hp:>5.2f}x {npx:>11.2f}ms")
print("\nwith 5% of FREE's production requests mirrored to internal (cohort+mirror / cohort):")
print(f"{'mode':<10} {'us/req':>8} {'ratio':>6} {'p50':>9} {'p99':>9} {'ratio':>6}")
for mode in ("keepalive", "close"):
    mc, cc = med("mirror", mode, "cpu_us_per_req"), med("cohort", mode, "cpu_us_per_req")
    m50, m99 = med("mirror", mode, "p50_us") / 1000, med("mirror", mode, "p99_us") / 1000
    cp = med("cohort", mode, "p99_us") / 1000
    print(f"{mode:<10} {mc:>8.1f} {mc/cc:>5.2f}x {m50:>7.2f}ms {m99:>7.2f}ms {m99/cp:>5.2f}x")
print("\nevery request through hyper (--hyper-only), as before decision 0030 (hyper / cohort):")
print(f"{'mode':<10} {'us/req':>8} {'ratio':>6} {'p99':>9} {'ratio':>6}")
for mode in ("keepalive", "close"):
    yc, cc = med("hyper", mode, "cpu_us_per_req"), med("cohort", mode, "cpu_us_per_req")
    y99, cp = med("hyper", mode, "p99_us") / 1000, med("cohort", mode, "p99_us") / 1000
    print(f"{mode:<10} {yc:>8.1f} {yc/cc:>5.2f}x {y99:>7.2f}ms {y99/cp:>5.2f}x")
bad = sum(int(r.get("errors", 0)) + int(r.get("non200", 0)) for rs in rows.values() for r in rs)
print(f"errors and non-200 answers, all runs: {bad}")
PY
