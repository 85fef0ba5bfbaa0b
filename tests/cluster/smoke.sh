#!/usr/bin/env bash
# The control plane's own test: bring the cluster up, check that the API
# server answers with the admin token, that the controllers run (service
# account tokens appear, a Deployment makes a ReplicaSet and a Pod) and the
# scheduler is alive, then tear everything down, also on failure.
# Prints "N passed, M failed".
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
passed=0
failed=0
check() { # description command...
    local what="$1"
    shift
    if "$@" >/dev/null 2>&1; then
        passed=$((passed + 1))
        echo "ok   $what"
    else
        failed=$((failed + 1))
        echo "FAIL $what"
    fi
}
trap '"$here/down.sh" >/dev/null 2>&1' EXIT

start=$SECONDS
kubeconfig="$("$here/up.sh" | tail -n 1)" || { echo "0 passed, 1 failed"; exit 1; }
echo "cluster ready in $((SECONDS - start)) s"
k() { kubectl --kubeconfig "$kubeconfig" "$@" 2>/dev/null; }
# The process node runs pods only from node-checks.sh on; until then the
# operator checks see pods that are never scheduled.
k cordon llorch-node-0 >/dev/null
eventually() { # seconds command...
    local until=$((SECONDS + $1))
    shift
    while [ $SECONDS -lt $until ]; do
        if "$@"; then return 0; fi
        sleep 0.5
    done
    return 1
}

ns="smoke-$$"
check "kubectl get ns with the admin token" k get ns default
check "create a namespace" k create namespace "$ns"
check "the token controller fills the default service account" \
    eventually 30 bash -c "kubectl --kubeconfig '$kubeconfig' -n '$ns' get secrets 2>/dev/null | grep -q default-token"
check "a Deployment gets a ReplicaSet and a Pod" bash -c "
    kubectl --kubeconfig '$kubeconfig' -n '$ns' create deployment web --image=llorch/worker:0.1.0 >/dev/null 2>&1 &&
    for i in \$(seq 60); do
        kubectl --kubeconfig '$kubeconfig' -n '$ns' get pods -l app=web -o name 2>/dev/null | grep -q pod/ && exit 0
        sleep 0.5
    done; exit 1"
check "anonymous requests are refused" bash -c "
    ! curl -fsk https://10.244.0.1:6443/api/v1/namespaces >/dev/null 2>&1"
check "RBAC denies a service account what it was not granted" bash -c "
    [ \"\$(kubectl --kubeconfig '$kubeconfig' auth can-i list secrets -A --as system:serviceaccount:$ns:default 2>/dev/null)\" = no ]"
root="$(cd "$here/../.." && pwd)"
# Retried: right after start-up the API server may still refuse or drop a
# first CRD write while its extension controllers sync.
check "the ModelWorker CRD installs and is established" eventually 60 bash -c "
    kubectl --kubeconfig '$kubeconfig' apply -f '$root/manifests/crd.yaml' >/dev/null 2>&1 &&
    kubectl --kubeconfig '$kubeconfig' wait --for condition=Established crd/modelworkers.llorch.dev --timeout 15s >/dev/null 2>&1"
check "the samples are accepted" bash -c "
    for f in '$root'/manifests/samples/*.yaml; do
        kubectl --kubeconfig '$kubeconfig' -n '$ns' apply -f \"\$f\" >/dev/null 2>&1 || exit 1
    done"
check "kubectl get mw shows the printer columns" bash -c "
    kubectl --kubeconfig '$kubeconfig' -n '$ns' get mw 2>/dev/null | head -1 | grep -q 'MODEL.*REPLICAS.*READY.*PHASE.*ENDPOINT.*AGE'"
check "kubectl scale works through the scale subresource" bash -c "
    kubectl --kubeconfig '$kubeconfig' -n '$ns' scale mw/gemma-cpu --replicas 3 >/dev/null 2>&1 &&
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$ns' get mw gemma-cpu -o jsonpath='{.spec.replicas}' 2>/dev/null)\" = 3 ]"
tmp="$(mktemp -d)"
cat > "$tmp/good.yaml" <<'YAML'
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: good}
spec: {model: {uri: "file:///models/m.gguf"}, server: {port: 8080}}
YAML
cat > "$tmp/bad.yaml" <<'YAML'
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: bad}
spec: {model: {uri: "ftp://x"}, server: {port: 70000}, gpu: {count: -1}}
YAML
check "a minimal ModelWorker is accepted" k -n "$ns" apply -f "$tmp/good.yaml"
check "the schema rejects a bad URI, port and GPU count" bash -c "
    out=\$(kubectl --kubeconfig '$kubeconfig' -n '$ns' apply -f '$tmp/bad.yaml' 2>&1); rc=\$?
    [ \$rc -ne 0 ] && echo \"\$out\" | grep -q 'spec.model.uri' && echo \"\$out\" | grep -q 'spec.server.port' && echo \"\$out\" | grep -q 'spec.gpu.count'"
operator="$root/target/ci/llorch-operator"
[ -x "$operator" ] || operator="$root/target/debug/llorch-operator"
# PodDisruptionBudget: policy/v1 where the server has it, else v1beta1.
pdb=policy/v1beta1
k api-versions | grep -qx policy/v1 && pdb=policy/v1
check "the API server accepts what the operator builds for every sample" bash -c "
    for f in '$root'/manifests/samples/*.yaml; do
        '$operator' render -f \"\$f\" -n '$ns' --pdb-api-version '$pdb' > '$tmp/children.yaml' || exit 1
        kubectl --kubeconfig '$kubeconfig' apply --dry-run=server -f '$tmp/children.yaml' >/dev/null 2>&1 || exit 1
    done"
# shellcheck source=operator-checks.sh
source "$here/operator-checks.sh"
# shellcheck source=node-checks.sh
source "$here/node-checks.sh"
rm -rf "$tmp"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
