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
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
