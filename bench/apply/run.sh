#!/usr/bin/env bash
# Times `cohort apply` of a fleet (default the seed's: 30 services, 720 pods) against a real API
# server: from nothing, then again when nothing changed, one service at a time (--parallel 1)
# and at the default (--parallel 8), each in its own fresh namespace.
#
# Usage: KUBECONFIG=... bench/apply/run.sh [SERVICES] [PARALLEL...]
#   e.g. KUBECONFIG=$LAB/kubeconfig bench/apply/run.sh 30 1 8
# Last, for the floor the cluster sets, the same objects with no order and no waits between
# them: `kubectl apply --server-side` of everything `cohort render` prints, then
# `kubectl wait` until every Deployment is Available.
# Pods are made Ready by the k8s-lab's fake kubelet (../shared/k8s-lab/): the namespaces are
# labelled for it, so the figures are the API server's and cohort's, not a node's.
# Needs: cargo, git, kubectl; the namespaces are deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${KUBECONFIG:?set KUBECONFIG to the cluster to measure on}"
n="${1:-30}"
shift || true
levels=("${@:-1 8}")
# shellcheck disable=SC2206
levels=(${levels[*]})

cargo build --release --locked -p cohort -p cohort-bench --bins
bin="${CARGO_TARGET_DIR:-$PWD/target}/release"
work=$(mktemp -d)
namespaces=()
cleanup() {
    for ns in "${namespaces[@]}"; do
        kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

minor=$(kubectl version -o json | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | tail -1)
# A fleet of $n services in repo $1 for namespace $2 (made, and served by the fake kubelet).
fleet() {
    local repo=$1 ns=$2
    "$bin/gen-repo" "$n" "$repo" 2>/dev/null
    sed -i "s/^namespace: shop/namespace: $ns/" "$repo/cohort.yaml"
    if [ "${minor:-99}" -lt 30 ]; then
        sed -i 's/^  pre_stop:$/  pre_stop:\n    exec: true/' "$repo/cohort.yaml"
    fi
    git -C "$repo" init -q && git -C "$repo" add -A
    git -C "$repo" -c user.name=bench -c user.email=bench@example.com commit -qm fleet
    kubectl create namespace "$ns" >/dev/null
    kubectl label namespace "$ns" k8s-lab/fake-kubelet=enabled >/dev/null
    namespaces+=("$ns")
}

for p in "${levels[@]}"; do
    ns="bench-apply-$n-p$p-$$"
    repo="$work/repo-p$p"
    fleet "$repo" "$ns"
    for run in "from nothing" "nothing changed"; do
        start=$(date +%s.%N)
        "$bin/cohort" -C "$repo" apply --parallel "$p" --timeout 10m >"$work/apply.log" 2>&1 \
            || { cat "$work/apply.log"; exit 1; }
        end=$(date +%s.%N)
        pods=$(kubectl -n "$ns" get pods --no-headers 2>/dev/null | wc -l)
        printf '%-16s --parallel %-3s %3d services %4d pods  %7.2f s\n' "$run" "$p" "$n" "$pods" \
            "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')"
    done
    # A lab's Service IP range (a /24) holds one fleet's Services, not two: free them first.
    kubectl delete namespace "$ns" --timeout=5m >/dev/null
done

ns="bench-apply-$n-kubectl-$$"
repo="$work/repo-kubectl"
fleet "$repo" "$ns"
"$bin/cohort" -C "$repo" render >"$work/all.yaml"
start=$(date +%s.%N)
kubectl apply --server-side -f "$work/all.yaml" >/dev/null
kubectl -n "$ns" wait --for=condition=Available deployment --all --timeout=10m >/dev/null
end=$(date +%s.%N)
pods=$(kubectl -n "$ns" get pods --no-headers 2>/dev/null | wc -l)
printf '%-16s %-14s %3d services %4d pods  %7.2f s\n' "kubectl, no order" "" "$n" "$pods" \
    "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')"
