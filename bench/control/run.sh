#!/usr/bin/env bash
# The cost of an agent's idle poll against `cohort serve`: a GET of a cluster's desired state
# with the ETag of the last answer, answered 304 without rendering anything.
#
#   bench/control/run.sh [SECONDS] [CONNECTIONS]
#
# Prints requests/s (wrk, pinned to core 1; the server pinned to core 0), the server's CPU
# time per idle poll (from /proc), and the bytes of one idle poll on the wire against a full
# answer. Needs a release build (`cargo build --release -p cohort`), wrk, curl and taskset.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-10}
CONNS=${2:-16}
BIN=target/release/cohort
[[ -x $BIN ]] || { echo "build first: cargo build --release -p cohort" >&2; exit 2; }
for tool in wrk curl taskset; do
  command -v $tool >/dev/null || { echo "needs $tool (apt-get install wrk curl util-linux)" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
GIT_CONFIG_GLOBAL=/dev/null $BIN init "$work/repo" >/dev/null 2>&1
token=bench-token-0123456789abcdef
printf 'clusters:\n  eu-west:\n    token: %s\n' "$token" > "$work/tokens.yaml"
taskset -c 0 $BIN -C "$work/repo" serve --listen 127.0.0.1:0 --tokens "$work/tokens.yaml" 2> "$work/serve.log" &
server=$!
for _ in $(seq 50); do grep -q "control API on" "$work/serve.log" && break; sleep 0.1; done
url=$(sed -n 's/.*control API on \(http:\/\/[0-9.:]*\).*/\1/p' "$work/serve.log" | head -1)
path=/v1/clusters/eu-west/desired-state
auth="Authorization: Bearer $token"

# An idle agent has reported once; until then the server asks for a report on every answer
# (a Cohort-Report-Wanted header), which an idle poll does not carry.
report='{"cluster":"eu-west","agent_version":"bench","at":0,"seen_revision":null,"services":[]}'
code=$(curl -s -o /dev/null -w '%{http_code}' -H "$auth" -H 'Content-Type: application/json' -d "$report" "$url/v1/clusters/eu-west/reports")
[[ $code == 2* ]] || { echo "the report was refused: $code" >&2; exit 1; }
etag=$(curl -s -D - -o /dev/null -H "$auth" "$url$path" | tr -d '\r' | sed -n 's/^etag: //Ip')
if curl -s -D - -o /dev/null -H "$auth" -H "If-None-Match: $etag" "$url$path" | grep -qi '^cohort-report-wanted'; then
  echo "the server still asks for a report" >&2; exit 1
fi
full=$(curl -s -o /dev/null -H "$auth" -w '%{size_request} %{size_header} %{size_download} %{http_code}' "$url$path")
idle=$(curl -s -o /dev/null -H "$auth" -H "If-None-Match: $etag" -w '%{size_request} %{size_header} %{size_download} %{http_code}' "$url$path")
read -r fq fh fb fc <<<"$full"
read -r iq ih ib ic <<<"$idle"
[[ $fc == 200 && $ic == 304 ]] || { echo "unexpected answers: full $fc, idle $ic" >&2; exit 1; }

cat > "$work/poll.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["If-None-Match"] = '$etag'
LUA
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' /proc/$server/stat; }
before=$(cpu)
out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$work/poll.lua" "$url$path")
after=$(cpu)
rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
total=$(awk '/requests in/ {print $1}' <<<"$out")
p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
bad=$(awk '/Non-2xx or 3xx/ {print $5}' <<<"$out")
cpu_us=$(awk -v d=$((after - before)) -v t="$ticks" -v n="$total" 'BEGIN { printf "%.1f", d / t / n * 1e6 }')

echo "idle poll (304) against cohort serve, $CONNS connections, ${SECS}s:"
echo "  requests/s:          $rps   (p99 $p99, ${bad:-0} answers other than 304)"
echo "  server CPU per poll: $cpu_us µs"
echo "  bytes per idle poll: request $iq + response headers $ih + body $ib = $((iq + ih + ib))"
echo "  bytes per full answer: request $fq + response headers $fh + body $fb = $((fq + fh + fb))"
