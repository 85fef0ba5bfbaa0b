#!/usr/bin/env bash
# Stops what up.sh started (by PID: SIGTERM, then SIGKILL), removes the
# bridge and the service route, and deletes the cluster's data. Safe to run
# when nothing runs.
set -uo pipefail
dir="${LLORCH_CLUSTER_DIR:-${LLORCH_CACHE:-$HOME/.cache/llorch}/cluster}"
run="$dir/run"
for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    f="$run/$name.pid"
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$f"
done
ip route del 10.96.0.0/16 dev llorch0 2>/dev/null
ip link del llorch0 2>/dev/null
rm -rf "$run"
echo "cluster stopped"
