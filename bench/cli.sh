#!/usr/bin/env bash
# Times the real `cohort` binary on generated release repos of 30 and 300 services:
# `cohort -C DIR validate` and `cohort -C DIR render --out OUTDIR`, with hyperfine.
# Builds the release binary and `gen-repo` first; the repos go to a temporary directory
# that is removed on exit. No git repository is made: validate and render do not need one.
#
# Usage: bench/cli.sh            (from anywhere; honours CARGO_TARGET_DIR)
# Extra arguments are passed to hyperfine, e.g. `bench/cli.sh --runs 50`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v hyperfine >/dev/null; then
    echo "cli.sh: hyperfine is not installed; install it with: apt-get install -y hyperfine" >&2
    exit 1
fi

cargo build --release --locked -p cohort -p cohort-bench --bins
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

commands=()
for n in 30 300; do
    "$bin/gen-repo" "$n" "$work/repo-$n"
    commands+=(
        -n "validate $n" "$bin/cohort -C $work/repo-$n validate"
        -n "render $n" "$bin/cohort -C $work/repo-$n render --out $work/out-$n"
    )
done

# -N: no intermediate shell, so the figures are the binary's own (hyperfine >= 1.13).
hyperfine -N --warmup 3 --min-runs 20 --export-markdown "$work/results.md" --export-json "$work/results.json" \
    "$@" "${commands[@]}"
echo
cat "$work/results.md"
# hyperfine's tables give means; the medians (less swayed by a noisy machine) are in its JSON.
echo
echo "Medians:"
awk -F': ' '/"command"/ { gsub(/[",]/, "", $2); cmd = $2 }
            /"median"/  { gsub(/,/, "", $2); printf "  %-14s %8.1f ms\n", cmd, $2 * 1000 }' "$work/results.json"
