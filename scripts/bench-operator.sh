#!/usr/bin/env bash
# The operator benchmark on the local cluster (BENCHMARKS.md):
#   1. N ModelWorkers (CPU, replicas 0) applied at once: seconds until every
#      one has its Deployment, Service and Secret and a status for its
#      generation;
#   2. a fresh operator reconciles all of them once more with nothing to
#      change: how many write requests it sent (its own counter);
#   3. the operator's peak RSS.
# Usage: scripts/bench-operator.sh [N]   (default 200)
set -euo pipefail
n="${1:-200}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --quiet --profile ci -p llorch-operator
operator="$root/target/ci/llorch-operator"
tmp="$(mktemp -d)"
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    tests/cluster/down.sh >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
kubeconfig="$(tests/cluster/up.sh | tail -n 1)"
k() { kubectl --kubeconfig "$kubeconfig" "$@"; }
k apply -f manifests/crd.yaml >/dev/null
k wait --for=condition=Established crd/modelworkers.llorch.dev --timeout=60s >/dev/null
k create namespace bench >/dev/null

start() {
    RUST_LOG=warn KUBECONFIG="$kubeconfig" "$operator" run --namespace bench \
        --leader-elect=false --metrics-addr 127.0.0.1:18480 --report-addr 127.0.0.1:18481 \
        --report-url http://10.96.0.2:8081/v1/workers/report >> "$tmp/operator.log" 2>&1 &
    pid=$!
}
reconciles() {
    curl -fsS http://127.0.0.1:18480/metrics 2>/dev/null |
        awk '/^llorch_operator_reconciles_total/ {s += $2} END {print s + 0}'
}

for i in $(seq 1 "$n"); do
    cat <<YAML
---
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: mw-$i}
spec:
  model: {uri: "http://10.96.0.3:8000/model-$i.gguf"}
  replicas: 0
  gpu: {count: 0}
YAML
done > "$tmp/mws.yaml"

start
until curl -fsS http://127.0.0.1:18480/readyz >/dev/null 2>&1; do sleep 0.2; done
t0=$(date +%s.%N)
k -n bench apply -f "$tmp/mws.yaml" >/dev/null
while :; do
    done_n=$(k -n bench get modelworkers \
        -o jsonpath='{range .items[*]}{.metadata.generation}={.status.observedGeneration}{"\n"}{end}' |
        awk -F= '$1 == $2 && $2 != "" {c++} END {print c + 0}')
    deps=$(k -n bench get deployments --no-headers 2>/dev/null | wc -l)
    [ "$done_n" -ge "$n" ] && [ "$deps" -ge "$n" ] && break
    sleep 0.5
done
t1=$(date +%s.%N)
echo "modelworkers: $n"
echo "all children and status after: $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s (includes kubectl apply)"

# Idle: a fresh operator reconciles everything once, with nothing to do;
# it counts every write request it sends (llorch_operator_api_writes_total).
sleep 2
rss() { awk '/VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status"; }
echo "operator peak RSS (creating $n): $(rss)"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
start
until [ "$(reconciles)" -ge "$n" ]; do sleep 0.5; done
sleep 2
writes=$(curl -fsS http://127.0.0.1:18480/metrics | awk '/^llorch_operator_api_writes_total/ {print $2}')
echo "idle reconciles: $(reconciles), write requests they sent: $writes"
echo "operator peak RSS (idle pass over $n): $(rss)"
