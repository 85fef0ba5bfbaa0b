# Pods that really run: the process node (tests/node) with kube-proxy, then
# the operator installed from manifests/install.yaml running as pods and
# reconciling ModelWorkers to Ready with real workers. Sourced by smoke.sh,
# which provides check, k, eventually, $kubeconfig, $root, $tmp, $ns and
# $opns, and cordons the node until here so the operator checks before see
# pods that never start.

node=llorch-node-0
model="${LLORCH_TEST_MODEL:-${LLORCH_CACHE:-$HOME/.cache/llorch}/models/gemma-3-270m-q4_k_m.gguf}"
kk() { kubectl --kubeconfig "$kubeconfig" "$@" 2>/dev/null; }
export -f kk 2>/dev/null || true
export kubeconfig

# Free the node: nothing of the earlier checks may hold its GPUs.
for n in "$ns" "$opns"; do
    k -n "$n" delete mw --all --wait=false >/dev/null
    k -n "$n" delete deploy --all --wait=false >/dev/null
done
k -n llorch-system delete deploy llorch-operator --wait=false >/dev/null
eventually 60 bash -c "[ -z \"\$(kubectl --kubeconfig '$kubeconfig' get pods -A -o name 2>/dev/null)\" ]"
k uncordon "$node" >/dev/null

nn="$ns-node"
k create namespace "$nn" >/dev/null
check "the node is Ready with 2 nvidia.com/gpu and its Lease" bash -c "
    [ \"\$(kk get node $node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}/{.status.allocatable.nvidia\\.com/gpu}')\" = True/2 ] &&
    kk -n kube-node-lease get lease $node >/dev/null"

model_dir="$(dirname "$model")"
model_file="$(basename "$model")"
cat > "$tmp/workers.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: w}
spec:
  replicas: 2
  selector: {matchLabels: {app: w}}
  template:
    metadata: {labels: {app: w}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: worker
        image: registry.example/llorch/worker:0.1.0
        args: [serve, --model, /models/$model_file, --threads, "1", --ctx-size, "512", --parallel, "1"]
        # The node overrides this: it has no GPU (the worker would refuse).
        env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}, {name: LLORCH_DEVICE, value: cuda}]
        ports: [{name: http, containerPort: 8080}]
        resources: {limits: {nvidia.com/gpu: 1}}
        readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1}
        livenessProbe: {httpGet: {path: /health, port: http}, periodSeconds: 5}
        volumeMounts: [{name: models, mountPath: /models, readOnly: true}]
      volumes: [{name: models, hostPath: {path: $model_dir}}]
---
apiVersion: v1
kind: Service
metadata: {name: w}
spec: {selector: {app: w}, ports: [{name: http, port: 80, targetPort: http}]}
YAML
k -n "$nn" apply -f "$tmp/workers.yaml" >/dev/null
ready_pods() { kubectl --kubeconfig "$kubeconfig" -n "$1" get pods -l "$2" \
    -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null |
    grep -c ' True$'; }
export -f ready_pods
check "two GPU workers are scheduled, run and turn Ready through the readiness probe" \
    eventually 90 bash -c "[ \$(ready_pods '$nn' app=w) = 2 ]"
check "each pod has its own address on the pod network, and the Service their endpoints" bash -c "
    ips=\$(kk -n '$nn' get pods -l app=w -o jsonpath='{.items[*].status.podIP}') &&
    [ \$(echo \$ips | tr ' ' '\n' | grep -c '^10\\.244\\.0\\.') = 2 ] &&
    [ \$(kk -n '$nn' get endpoints w -o jsonpath='{.subsets[0].addresses[*].ip}' | wc -w) = 2 ]"
svc_ip=$(k -n "$nn" get svc w -o jsonpath='{.spec.clusterIP}')
# kube-proxy programs a new Service's rules within a sync period: retry.
check "/execute answers through the Service's ClusterIP (kube-proxy)" eventually 30 bash -c "
    curl -fsS -m 60 -N -X POST http://$svc_ip/execute -H 'content-type: application/json' \
        -d '{\"job_id\":\"n1\",\"prompt\":\"The capital of France is\",\"max_tokens\":4,\"temperature\":0}' |
        grep -q '^event: end'"
check "a worker that asks for a GPU is told the node has none (LLORCH_DEVICE=cpu)" bash -c "
    pod=\$(kk -n '$nn' get pods -l app=w -o jsonpath='{.items[0].status.podIP}') &&
    curl -fsS http://\$pod:8080/health | grep -q '\"backend\":\"cpu\"'"
k -n "$nn" scale deploy w --replicas 3 >/dev/null
check "a third GPU replica stays Pending: the node has 2 GPUs" eventually 30 bash -c "
    kk -n '$nn' get events --field-selector reason=FailedScheduling -o jsonpath='{.items[*].message}' |
        grep -q 'nvidia.com/gpu'"
victim=$(k -n "$nn" get pods -l app=w -o jsonpath='{.items[?(@.status.phase=="Running")].metadata.name}' | cut -d' ' -f1)
k -n "$nn" delete pod "$victim" --wait=false >/dev/null
check "a deleted pod is stopped and replaced; two are Ready again" eventually 90 bash -c "
    ! kk -n '$nn' get pod '$victim' >/dev/null && [ \$(ready_pods '$nn' app=w) = 2 ]"
k -n "$nn" delete deploy w >/dev/null
check "deleted pods leave no network namespace behind" eventually 60 bash -c "
    [ -z \"\$(kk -n '$nn' get pods -o name)\" ] && [ \$(ip netns list | grep -c '^llorch-') = 0 ]"

# One or more nodes: a second llorch-node (no GPUs, its own address range
# and state) takes a pod pinned to it. down.sh stops it by its pid file.
"$root/target/ci/llorch-node" --kubeconfig "$kubeconfig" --name llorch-node-1 --gpus 0 \
    --state-dir "$tmp/node1" --first-pod-ip 200 --last-pod-ip 250 \
    --image "llorch/worker=$root/target/ci/llorch-worker" > "$tmp/node1.log" 2>&1 &
node1_pid=$!
echo "$node1_pid" > "$(dirname "$kubeconfig")/run/llorch-node-1.pid"
check "a second node registers and turns Ready" eventually 30 bash -c "
    [ \"\$(kk get node llorch-node-1 -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]"
cat > "$tmp/pinned.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: pinned}
spec:
  nodeSelector: {kubernetes.io/hostname: llorch-node-1}
  terminationGracePeriodSeconds: 5
  containers:
  - name: worker
    image: llorch/worker:0.1.0
    args: [serve, --model, /models/$model_file, --threads, "1", --ctx-size, "256", --parallel, "1"]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1}
    volumeMounts: [{name: models, mountPath: /models, readOnly: true}]
  volumes: [{name: models, hostPath: {path: $model_dir}}]
YAML
k -n "$nn" apply -f "$tmp/pinned.yaml" >/dev/null
check "a pod pinned to the second node runs there, with an address from its range" eventually 90 bash -c "
    [ \"\$(kk -n '$nn' get pod pinned -o jsonpath='{.spec.nodeName} {.status.conditions[?(@.type==\"Ready\")].status}')\" = 'llorch-node-1 True' ] &&
    ip=\$(kk -n '$nn' get pod pinned -o jsonpath='{.status.podIP}') &&
    [ \"\${ip##*.}\" -ge 200 ] && curl -fsS http://\$ip:8080/health >/dev/null"
k -n "$nn" delete pod pinned --wait=false >/dev/null
check "the second node stops its pod and leaves no namespace behind" eventually 60 bash -c "
    ! kk -n '$nn' get pod pinned >/dev/null && [ \$(ip netns list | grep -c '^llorch-') = 0 ]"
kill -TERM "$node1_pid" 2>/dev/null
wait "$node1_pid" 2>/dev/null
rm -f "$(dirname "$kubeconfig")/run/llorch-node-1.pid"
k delete node llorch-node-1 >/dev/null

# The operator as users install it, running as two pods on the node.
# install.yaml allows no file:// model; these checks serve one from the
# cache directory on this node, as an installer would allow it.
check "manifests/install.yaml installs the operator; its pods turn Ready" bash -c "
    kk apply -f '$root/manifests/install.yaml' >/dev/null &&
    kk -n llorch-system set env deploy/llorch-operator LLORCH_ALLOWED_HOST_PATHS='$(dirname "$model")' \
        LLORCH_AUTOSCALE_INTERVAL=1s LLORCH_AUTOSCALE_WINDOW=4s >/dev/null &&
    kk -n llorch-system rollout status deploy/llorch-operator --timeout=120s >/dev/null &&
    for i in \$(seq 120); do
        [ \$(ready_pods llorch-system app.kubernetes.io/name=llorch-operator) = 2 ] && exit 0
        sleep 1
    done; exit 1"
mwns="$ns-mw"
k create namespace "$mwns" >/dev/null
cat > "$tmp/gemma.yaml" <<YAML
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: gemma}
spec:
  model: {uri: "file://$model"}
  gpu: {count: 1, memory: 24Gi}
  server: {contextSize: 512, parallel: 1}
YAML
k -n "$mwns" apply -f "$tmp/gemma.yaml" >/dev/null
check "kubectl wait --for=condition=Ready: fetch, load, readiness report" \
    kk -n "$mwns" wait --for=condition=Ready mw/gemma --timeout=180s
sha=$(sha256sum "$model" | cut -d' ' -f1)
check "the status carries the phase, the worker and the model facts from fetch's model.json" bash -c "
    kk -n '$mwns' get mw gemma -o json | python3 -c '
import json, sys
s = json.load(sys.stdin)[\"status\"]
assert s[\"phase\"] == \"Ready\", s
assert s[\"readyReplicas\"] == 1, s
assert s[\"model\"][\"sha256\"] == \"$sha\", s[\"model\"]
assert s[\"model\"][\"architecture\"] == \"gemma3\", s[\"model\"]
assert s[\"workers\"] and s[\"workers\"][0][\"ready\"], s[\"workers\"]
types = {c[\"type\"]: c for c in s[\"conditions\"]}
assert types[\"ModelAvailable\"][\"status\"] == \"True\", types
'"
mw_ip=$(k -n "$mwns" get svc gemma -o jsonpath='{.spec.clusterIP}')
check "the ModelWorker's Service serves /execute" eventually 30 bash -c "
    curl -fsS -m 60 -N -X POST http://$mw_ip:8080/execute -H 'content-type: application/json' \
        -d '{\"job_id\":\"m1\",\"prompt\":\"Hello\",\"max_tokens\":4,\"temperature\":0}' | grep -q '^event: end'"
# A spec change rolls the pod; Ready must hold all along (maxUnavailable 0).
k -n "$mwns" patch mw gemma --type merge -p '{"spec":{"server":{"parallel":2}}}' >/dev/null
check "a spec change rolls the workers without dropping Ready" bash -c "
    old=\$(kk -n '$mwns' get rs -o jsonpath='{.items[*].metadata.name}')
    for i in \$(seq 240); do
        r=\$(kk -n '$mwns' get mw gemma -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}/{.status.readyReplicas}')
        [ \"\$r\" = True/1 ] || [ \"\$r\" = True/2 ] || { echo \"dropped: \$r\"; exit 1; }
        args=\$(kk -n '$mwns' get pods -l app.kubernetes.io/instance=gemma -o jsonpath='{range .items[*]}{.spec.containers[0].args}{\"\\n\"}{end}')
        n=\$(echo \"\$args\" | grep -c .)
        if [ \"\$n\" = 1 ] && echo \"\$args\" | grep -q '\"--parallel\",\"2\"' &&
            [ \"\$(kk -n '$mwns' get mw gemma -o jsonpath='{.status.phase}')\" = Ready ]; then exit 0; fi
        sleep 0.5
    done; exit 1"
cat > "$tmp/big.yaml" <<YAML
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: too-big}
spec:
  model: {uri: "file://$model"}
  gpu: {count: 1, memory: 100Mi}
YAML
k -n "$mwns" apply -f "$tmp/big.yaml" >/dev/null
check "a model that does not fit gpu.memory: ModelAvailable=False, InsufficientGPUMemory" eventually 120 bash -c "
    [ \"\$(kk -n '$mwns' get mw too-big -o jsonpath='{.status.phase}/{.status.conditions[?(@.type==\"ModelAvailable\")].status}/{.status.conditions[?(@.type==\"ModelAvailable\")].reason}')\" = Degraded/False/InsufficientGPUMemory ] &&
    kk -n '$mwns' get mw too-big -o jsonpath='{.status.conditions[?(@.type==\"Degraded\")].message}' | grep -q 'gpu.memory declares 100 MiB'"
k -n "$mwns" delete mw too-big --wait=false >/dev/null
cat > "$tmp/bad.yaml" <<YAML
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: bad-hash}
spec:
  model: {uri: "file://$model", sha256: "$(printf '0%.0s' $(seq 64))"}
  gpu: {count: 0}
YAML
k -n "$mwns" apply -f "$tmp/bad.yaml" >/dev/null
check "a fetch that fails: Degraded and ModelAvailable=False, FetchFailed with fetch's words" eventually 120 bash -c "
    [ \"\$(kk -n '$mwns' get mw bad-hash -o jsonpath='{.status.phase}/{.status.conditions[?(@.type==\"ModelAvailable\")].reason}')\" = Degraded/FetchFailed ] &&
    kk -n '$mwns' get mw bad-hash -o jsonpath='{.status.conditions[?(@.type==\"Degraded\")].message}' | grep -q 'sha256 mismatch'"
# A model the worker cannot run: a synthetic Llama model whose
# general.architecture says mamba, beside $model (the one node directory
# file:// models may come from here). fetch refuses it in the init
# container; the ModelWorker fails until its spec names another model.
unsupported="$model_dir/llorch-unsupported-$mwns.gguf"
"$root/target/ci/llorch-worker" synth --arch llama --type Q8_0 --out "$tmp/unsupported.gguf" >/dev/null
python3 - "$tmp/unsupported.gguf" "$unsupported" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
at = data.index(b"llama", data.index(b"general.architecture"))
open(sys.argv[2], "wb").write(data[:at] + b"mamba" + data[at + 5:])
PY
cat > "$tmp/unsupported.yaml" <<YAML
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: unsupported}
spec:
  model: {uri: "file://$unsupported"}
  gpu: {count: 0}
YAML
k -n "$mwns" apply -f "$tmp/unsupported.yaml" >/dev/null
check "an unsupported model: Failed and ModelAvailable=False, UnsupportedModel with fetch's words" eventually 120 bash -c "
    [ \"\$(kk -n '$mwns' get mw unsupported -o jsonpath='{.status.phase}/{.status.conditions[?(@.type==\"ModelAvailable\")].status}/{.status.conditions[?(@.type==\"ModelAvailable\")].reason}')\" = Failed/False/UnsupportedModel ] &&
    kk -n '$mwns' get mw unsupported -o jsonpath='{.status.conditions[?(@.type==\"ModelAvailable\")].message}' | grep -q 'architecture .mamba. is not supported (supported architectures: llama'"
k -n "$mwns" patch mw unsupported --type merge -p "{\"spec\":{\"model\":{\"uri\":\"file://$model\"}}}" >/dev/null
check "naming a supported model in the spec brings it out of Failed to Ready" \
    kk -n "$mwns" wait --for=condition=Ready mw/unsupported --timeout=180s
rm -f "$unsupported"
k -n "$mwns" delete mw --all --wait=false >/dev/null
check "deleting the ModelWorkers stops their pods" eventually 90 bash -c "
    [ -z \"\$(kk -n '$mwns' get pods -o name)\" ]"
# shellcheck source=gateway-checks.sh
source "$here/gateway-checks.sh"

# The chart with Helm's own library, namespaced: watchNamespace gives the
# operator a Role in one namespace and no ClusterRole. The cluster-wide
# operator from install.yaml steps aside first.
k -n llorch-system scale deploy llorch-operator --replicas 0 >/dev/null
scoped="$ns-scoped"
watched="$ns-watched"
k create namespace "$watched" >/dev/null
python="$("$root/scripts/python-env.sh")/bin/python"
check "helm install with watchNamespace: the operator and the gateway run under namespaced Roles" bash -c "
    '$python' '$root/scripts/helm-install.py' --kubeconfig '$kubeconfig' --namespace '$scoped' \
        --release scoped --set 'watchNamespace=$watched' --set replicas=1 --set gateway.replicas=1 \
        --set 'policy.allowedHostPaths={$(dirname "$model")}' --timeout 180 >/dev/null 2>&1 &&
    [ \$(ready_pods '$scoped' app.kubernetes.io/name=llorch-operator,app.kubernetes.io/instance=scoped) = 1 ] &&
    [ \$(ready_pods '$scoped' app.kubernetes.io/name=llorch-gateway,app.kubernetes.io/instance=scoped) = 1 ] &&
    kk -n '$watched' get role scoped-operator >/dev/null &&
    kk -n '$watched' get role scoped-gateway >/dev/null &&
    [ -z \"\$(kk get clusterrole -l app.kubernetes.io/instance=scoped -o name)\" ]"
sed 's/gpu: {count: 1, memory: 24Gi}/gpu: {count: 0}/' "$tmp/gemma.yaml" | k -n "$watched" apply -f - >/dev/null
check "the namespaced operator brings a ModelWorker in its namespace to Ready" \
    kk -n "$watched" wait --for=condition=Ready mw/gemma --timeout=180s
k -n "$watched" delete mw gemma --wait=false >/dev/null
