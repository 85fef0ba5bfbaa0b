#!/usr/bin/env bash
# `make demo`: the whole system on one machine.
#
# 1. The local cluster (tests/cluster/up.sh: control plane, the process node
#    with 2 advertised GPUs, kube-proxy).
# 2. The operator, installed with Helm (charts/llorch-operator, through
#    Helm's own library: scripts/helm-install.py): two pods with leader
#    election, running on the node.
# 3. The default model served over HTTP from the host (10.244.0.1:8000), the
#    way an air-gapped mirror would serve it.
# 4. `kubectl apply` of the CPU sample ModelWorker (its URI pointed at that
#    mirror), `kubectl wait --for=condition=Ready`, then a streamed
#    completion through the ModelWorker's Service.
#
# The cluster stays up for you to explore; `make cluster-down` stops it.
# Needs root (network namespaces, iptables).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${LLORCH_CACHE:-$HOME/.cache/llorch}"
model="${MODEL:-$cache/models/gemma-3-270m-q4_k_m.gguf}"
dir="${LLORCH_CLUSTER_DIR:-$cache/cluster}"
ns=demo
mirror=10.244.0.1:8000

current=""
step() { current="$*"; printf '\n==> %s\n' "$*"; }
trap 'echo; echo "make demo failed at: $current" >&2
      echo "logs: $dir/logs/ (cluster components), $dir/node/pods/*/logs/ (containers)" >&2' ERR

step "the default model"
"$root/scripts/fetch-model.sh" "$model" >/dev/null
echo "$model"

step "the local cluster (first run: builds Kubernetes 1.20 from Debian sources, ~5 min)"
kubeconfig="$("$root/tests/cluster/up.sh" | tail -n 1)"
k() { kubectl --kubeconfig "$kubeconfig" "$@" 2>/dev/null; }
k get nodes -o wide

step "a model mirror on the host: http://$mirror/"
pidfile="$dir/run/model-server.pid"
if ! { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
    python3 -m http.server --bind "${mirror%:*}" "${mirror#*:}" --directory "$(dirname "$model")" \
        >"$dir/logs/model-server.log" 2>&1 &
    echo $! > "$pidfile"
fi

step "the operator: helm install llorch charts/llorch-operator -n llorch-system"
python="$("$root/scripts/python-env.sh")/bin/python"
"$python" "$root/scripts/helm-install.py" --kubeconfig "$kubeconfig" --namespace llorch-system --release llorch
k -n llorch-system get pods -o wide

step "a ModelWorker: manifests/samples/cpu-modelworker.yaml, served from the mirror"
k create namespace "$ns" >/dev/null || true
sed "s|uri: .*|uri: http://$mirror/$(basename "$model")|" "$root/manifests/samples/cpu-modelworker.yaml" |
    k -n "$ns" apply -f -
echo "waiting for Ready (fetch, load, readiness report)…"
k -n "$ns" wait --for=condition=Ready mw/gemma-cpu --timeout=300s
k -n "$ns" get mw,pods,svc -o wide

ip="$(k -n "$ns" get svc gemma-cpu -o jsonpath='{.spec.clusterIP}')"
port="$(k -n "$ns" get svc gemma-cpu -o jsonpath='{.spec.ports[0].port}')"
step "POST http://$ip:$port/execute (SSE through the Service's ClusterIP)"
curl -fsS -N -X POST "http://$ip:$port/execute" -H 'content-type: application/json' \
    -d '{"job_id":"demo-1","prompt":"The three primary colors are","max_tokens":48,"temperature":0}' |
    python3 -u -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("data: "):
        continue
    ev = json.loads(line[6:])
    if ev["type"] == "started":
        print("[model: %s]" % ev["model"])
    elif ev["type"] == "token":
        print(ev["t"], end="", flush=True)
    elif ev["type"] in ("end", "error"):
        print("\n[%s]" % json.dumps(ev))
'

gw="$(k -n llorch-system get svc llorch-gateway -o jsonpath='{.spec.clusterIP}')"
step "POST http://$gw/v1/completions, model \"gemma-cpu\" (the gateway: one endpoint for every ModelWorker)"
for _ in $(seq 60); do
    [ "$(k -n llorch-system get deploy llorch-gateway -o jsonpath='{.status.readyReplicas}')" = 2 ] && break
    sleep 1
done
curl -fsS -N "http://$gw/v1/completions" -H 'content-type: application/json' \
    -d '{"model":"gemma-cpu","prompt":"The three primary colors are","max_tokens":24,"temperature":0,"stream":true}' |
    python3 -u -c '
import json, sys
for line in sys.stdin:
    if not line.startswith("data: ") or line.startswith("data: [DONE]"):
        continue
    ev = json.loads(line[6:])
    if "error" in ev:
        print("\n[%s]" % json.dumps(ev))
        continue
    for choice in ev.get("choices", []):
        print(choice.get("text") or "", end="", flush=True)
        if choice.get("finish_reason"):
            print("\n[finish_reason: %s]" % choice["finish_reason"])
'

step "what to try next"
cat <<TXT
export KUBECONFIG=$kubeconfig
kubectl get mw -A                 # MODEL, REPLICAS, READY, PHASE, ENDPOINT
kubectl -n $ns describe mw gemma-cpu
kubectl -n $ns scale mw/gemma-cpu --replicas 2
curl http://$gw/v1/models          # every ModelWorker, through the gateway
curl -N -X POST http://$ip:$port/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"messages":[{"role":"user","content":"Name three colors."}],"max_tokens":32,"temperature":0}'
curl -X POST http://$ip:$port/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"messages":[{"role":"user","content":"A cat named Tom, aged 3, as JSON."}],"response_format":{"type":"json_object"},"max_tokens":64}'
make cluster-down                 # stop everything
TXT
