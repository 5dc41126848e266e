#!/usr/bin/env bash
# The demo: an embedded cluster (Lethe's API emulator) with the CRDs
# installed, the example manifests validated and applied with the real
# kubectl, and what kubectl shows of them. Stops the cluster on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin lethe
bin=./target/debug/lethe
[ -n "${CARGO_TARGET_DIR:-}" ] && bin="$CARGO_TARGET_DIR/debug/lethe"

kubeconfig=$(mktemp --suffix=.kubeconfig)
"$bin" dev --kubeconfig "$kubeconfig" > /tmp/lethe-demo-dev.log 2>&1 &
dev=$!
trap 'kill $dev 2>/dev/null; wait $dev 2>/dev/null; rm -f "$kubeconfig"' EXIT
for _ in $(seq 50); do [ -s "$kubeconfig" ] && break; sleep 0.1; done
export KUBECONFIG="$kubeconfig"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
step "$bin" validate -f examples/
step kubectl get crds
step kubectl apply -f examples/
step kubectl get lethe
step kubectl get retentionpolicies
step kubectl describe legalhold fraud-investigation-2026-114
echo
echo "The controllers that fill in these resources' status (effective windows, runs,"
echo "receipts) are not built yet; see README.md, Status."
