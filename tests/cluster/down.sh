#!/usr/bin/env bash
# Stops what up.sh started (by PID: SIGTERM, then SIGKILL; the node first,
# which kills its pods' processes and removes their namespaces), removes
# kube-proxy's and our iptables rules, the bridge and the service route,
# restores IP forwarding, and deletes the cluster's data. Safe to run when
# nothing runs.
set -uo pipefail
dir="${LLORCH_CLUSTER_DIR:-${LLORCH_CACHE:-$HOME/.cache/llorch}/cluster}"
run="$dir/run"
bin="${LLORCH_CACHE:-$HOME/.cache/llorch}/k8s/bin"
for name in model-server llorch-node kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd; do
    f="$run/$name.pid"
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        # The node stops its pods first: give it longer.
        for _ in $(seq 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$f"
done
# Anything else a test started and registered here (e.g. a second node).
for f in "$run"/*.pid; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    kill -TERM "$pid" 2>/dev/null && for _ in $(seq 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    rm -f "$f"
done
# Whatever a killed node left: pod namespaces (and their processes).
for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^llorch-/ {print $1}'); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns delete "$ns" 2>/dev/null
done
[ -x "$bin/kube-proxy" ] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1
# The chains kube-proxy's cleanup leaves (a kubelet would own them).
for table in nat filter mangle; do
    for chain in KUBE-MARK-DROP KUBE-MARK-MASQ KUBE-PROXY-CANARY KUBE-KUBELET-CANARY; do
        iptables -t "$table" -F "$chain" 2>/dev/null && iptables -t "$table" -X "$chain" 2>/dev/null
    done
done
while iptables -D FORWARD -i llorch0 -j ACCEPT -m comment --comment llorch-cluster 2>/dev/null; do :; done
while iptables -D FORWARD -o llorch0 -j ACCEPT -m comment --comment llorch-cluster 2>/dev/null; do :; done
while iptables -D FORWARD -i llorch0 ! -d 10.244.0.0/24 -j REJECT -m comment --comment llorch-cluster 2>/dev/null; do :; done
if [ -f "$run/ip_forward.orig" ]; then
    sysctl -qw net.ipv4.ip_forward="$(cat "$run/ip_forward.orig")"
fi
ip route del 10.96.0.0/16 dev llorch0 2>/dev/null
ip link del llorch0 2>/dev/null
rm -rf "$run"
echo "cluster stopped"
