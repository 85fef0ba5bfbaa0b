# The operator against the real API server; sourced by smoke.sh, which
# provides check, k, eventually, $kubeconfig, $ns, $tmp and $operator.
# One `llorch-operator run` watches every namespace; its log (debug for the
# operator) lands in $tmp/operator.log and is shown when a check fails.

opns="$ns-op"
k create namespace "$opns" >/dev/null
report_port=$((20000 + RANDOM % 20000))
metrics_port=$((report_port + 1))
report="http://127.0.0.1:$report_port/v1/workers/report"
# The operator's own Service: its ClusterIP becomes the report URL.
k -n "$opns" create service clusterip llorch-operator --tcp=8081:8081 >/dev/null
k -n "$opns" patch service llorch-operator --type json \
    -p '[{"op":"replace","path":"/spec/ports/0/name","value":"report"}]' >/dev/null
# The operator runs as the service account of manifests/operator.yaml, so
# every check below also proves its ClusterRole grants enough.
k apply -f "$root/manifests/operator.yaml" >/dev/null
# Its Lease rights are a Role in the operator's namespace; this operator's
# namespace is $opns, so the same Role and binding go there too.
python3 - "$root/manifests/operator.yaml" "$opns" > "$tmp/self-role.yaml" <<'PY'
import re, sys
docs = open(sys.argv[1]).read().split("\n---\n")
own = [d for d in docs if re.search(r"^kind: (Role|RoleBinding)$", d, re.M)]
print("\n---\n".join(re.sub(r"^  namespace: llorch-system$", f"  namespace: {sys.argv[2]}", d, flags=re.M) for d in own))
PY
k apply -f "$tmp/self-role.yaml" >/dev/null
check "manifests/operator.yaml is accepted" k -n llorch-system get deploy/llorch-operator sa/llorch-operator
eventually 20 bash -c "kubectl --kubeconfig '$kubeconfig' -n llorch-system get sa llorch-operator \
    -o jsonpath='{.secrets[0].name}' | grep -q ."
sa_secret=$(k -n llorch-system get sa llorch-operator -o jsonpath='{.secrets[0].name}')
sa_token=$(k -n llorch-system get secret "$sa_secret" -o jsonpath='{.data.token}' | base64 -d)
sed "s|^\( *token: \).*|\1$sa_token|" "$kubeconfig" > "$tmp/operator-kubeconfig"
check "the operator's service account has what it needs and no more" bash -c "
    can() { kubectl --kubeconfig '$tmp/operator-kubeconfig' auth can-i \"\$@\" >/dev/null 2>&1; }
    can list modelworkers.llorch.dev -n '$opns' && can patch modelworkers.llorch.dev --subresource=status -n '$opns' &&
    can update modelworkers.llorch.dev --subresource=finalizers -n '$opns' &&
    ! can delete modelworkers.llorch.dev -n '$opns' && ! can list nodes && ! can create pods -n '$opns' &&
    ! can delete deployments.apps -n '$opns' && ! can patch secrets -n '$opns' &&
    can get secrets -n '$opns' && can create secrets -n '$opns' && can delete secrets -n '$opns' &&
    ! can list secrets -n '$opns' && ! can watch secrets -n '$opns' && ! can list secrets -A &&
    can update leases.coordination.k8s.io/llorch-operator -n '$opns' &&
    ! can update leases.coordination.k8s.io/kube-scheduler -n kube-system &&
    ! can update leases.coordination.k8s.io/other -n '$opns'"
start_operator() { # report-port metrics-port log
    RUST_LOG=llorch_operator=debug,info KUBECONFIG="$tmp/operator-kubeconfig" \
        "$operator" run --report-addr "127.0.0.1:$1" --metrics-addr "127.0.0.1:$2" \
        --operator-namespace "$opns" --allowed-host-paths /models > "$3" 2>&1 &
}
start_operator "$report_port" "$metrics_port" "$tmp/operator.log"
operator_pid=$!
trap 'kill "$operator_pid" "${standby_pid:-}" 2>/dev/null; "$here/down.sh" >/dev/null 2>&1' EXIT
check "the operator takes the leader Lease" eventually 20 bash -c "
    grep -q 'leading' '$tmp/operator.log' &&
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get lease llorch-operator \
        -o jsonpath='{.spec.holderIdentity}' | grep -q ."
standby_port=$((report_port + 2))
start_operator "$standby_port" "$((report_port + 3))" "$tmp/standby.log"
standby_pid=$!
before_checks=$failed

rv() { k -n "$opns" get "$1" -o jsonpath='{.metadata.resourceVersion}'; }
reconciles() { grep -c 'reconciled' "$tmp/operator.log"; }

check "the operator answers /healthz and /readyz" eventually 20 bash -c "
    curl -fsS http://127.0.0.1:$metrics_port/healthz && curl -fsS http://127.0.0.1:$metrics_port/readyz"
k -n "$opns" apply -f "$root/manifests/samples/two-replicas-secured.yaml" >/dev/null
check "a ModelWorker gets a Deployment, Service, Secret, PDB and NetworkPolicy it owns" \
    eventually 30 bash -c "
    for o in deploy/gemma-secured svc/gemma-secured secret/gemma-secured-callback \
             pdb/gemma-secured networkpolicy/gemma-secured; do
        [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get \$o \
            -o jsonpath='{.metadata.ownerReferences[0].kind}' 2>/dev/null)\" = ModelWorker ] || exit 1
    done"
check "the Deployment has probes, a non-root read-only container and rolls with maxUnavailable 0" bash -c "
    d=\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy gemma-secured -o json)
    echo \"\$d\" | python3 -c '
import json, sys
d = json.load(sys.stdin)
s = d[\"spec\"]
c = s[\"template\"][\"spec\"][\"containers\"][0]
assert s[\"strategy\"][\"rollingUpdate\"][\"maxUnavailable\"] in (0, \"0\")
assert c[\"readinessProbe\"][\"httpGet\"][\"path\"] == \"/ready\"
assert c[\"livenessProbe\"][\"httpGet\"][\"path\"] == \"/health\"
assert c[\"startupProbe\"][\"httpGet\"][\"path\"] == \"/ready\"
assert c[\"terminationMessagePolicy\"] == \"FallbackToLogsOnError\"
assert c[\"securityContext\"][\"readOnlyRootFilesystem\"] is True
assert c[\"securityContext\"][\"allowPrivilegeEscalation\"] is False
assert s[\"replicas\"] == 2
'"
check "workers report to the ClusterIP of the operator's Service (no DNS needed)" bash -c "
    ip=\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get svc llorch-operator -o jsonpath='{.spec.clusterIP}')
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy gemma-secured -o json |
        grep -q \"http://\$ip:8081/v1/workers/report\""
check "the callback token is random and 64 hex digits" bash -c "
    t=\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get secret gemma-secured-callback \
        -o jsonpath='{.data.token}' | base64 -d)
    [[ \$t =~ ^[0-9a-f]{64}\$ ]]"
check "the status says Pending with conditions, selector and endpoint" eventually 30 bash -c "
    s=\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw gemma-secured -o json)
    echo \"\$s\" | python3 -c '
import json, sys
m = json.load(sys.stdin)
s = m[\"status\"]
assert s[\"phase\"] == \"Pending\", s
assert s[\"observedGeneration\"] == m[\"metadata\"][\"generation\"]
types = {c[\"type\"]: c for c in s[\"conditions\"]}
assert set(types) == {\"Ready\", \"Progressing\", \"Degraded\", \"ModelAvailable\"}, types
assert types[\"Ready\"][\"status\"] == \"False\"
assert s[\"selector\"] == \"app.kubernetes.io/instance=gemma-secured,app.kubernetes.io/name=llorch-worker\"
assert s[\"endpoint\"].startswith(\"http://gemma-secured.\")
'"
check "/metrics counts reconciles and ModelWorkers by phase" bash -c "
    m=\$(curl -fsS http://127.0.0.1:$metrics_port/metrics) &&
    echo \"\$m\" | grep -Eq '^llorch_operator_reconciles_total\\{result=\"ok\"\\} [1-9]' &&
    echo \"\$m\" | grep -Eq '^llorch_operator_reconcile_duration_seconds_count [1-9]' &&
    echo \"\$m\" | grep -Eq '^llorch_operator_modelworkers\\{phase=\"Pending\"\\} [1-9]'"
check "a phase change is recorded as an event" eventually 10 bash -c "
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get events -o json |
        grep -q '\"reason\": \"Pending\"'"

# Idle: a reconcile with nothing to change writes nothing.
sleep 2
idle_before="$(rv deploy/gemma-secured) $(rv svc/gemma-secured) $(rv pdb/gemma-secured) $(rv networkpolicy/gemma-secured) $(rv secret/gemma-secured-callback)"
n0=$(reconciles)
k -n "$opns" label mw gemma-secured llorch.dev/touch=1 >/dev/null
mw_rv=$(rv mw/gemma-secured)
check "an idle reconcile writes nothing" bash -c "
    until=\$((SECONDS + 15))
    while [ \$(grep -c reconciled '$tmp/operator.log') -le $n0 ]; do
        [ \$SECONDS -lt \$until ] || exit 1; sleep 0.5
    done
    sleep 1
    now=\"\$(for o in deploy/gemma-secured svc/gemma-secured pdb/gemma-secured networkpolicy/gemma-secured secret/gemma-secured-callback; do
        kubectl --kubeconfig '$kubeconfig' -n '$opns' get \$o -o jsonpath='{.metadata.resourceVersion} '; done)\"
    [ \"\$now\" = '$idle_before ' ] &&
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw gemma-secured -o jsonpath='{.metadata.resourceVersion}')\" = '$mw_rv' ]"

# Worker reports over real HTTP. post TOKEN FILE prints the HTTP code.
post() {
    curl -s -o /dev/null -w '%{http_code}' -X POST "$report" \
        -H "Authorization: Bearer $1" -H 'Content-Type: application/json' --data-binary "@$2"
}
export report
export -f post
token=$(k -n "$opns" get secret gemma-secured-callback -o jsonpath='{.data.token}' | base64 -d)
pod=$(k -n "$opns" get pods -l app.kubernetes.io/instance=gemma-secured -o jsonpath='{.items[0].metadata.name}')
cat > "$tmp/ready.json" <<JSON
{"worker_id": "$pod", "status": "ready", "uri": "http://10.0.0.9:8080", "backend": "cpu",
 "device": "cpu", "memory_bytes": 400000000, "memory_architecture": "host",
 "load_seconds": 1.5, "capabilities": ["text-gen", "sse", "openai"],
 "namespace": "$opns", "model_worker": "gemma-secured", "pod": "$pod",
 "model": {"architecture": "gemma3", "name": "Gemma 3 270m", "quantization": "Q4_K_M",
           "parameters": 268098176, "context_length": 32768, "size_bytes": 253114432}}
JSON
sed 's/"model_worker": "gemma-secured"/"model_worker": "invalid"/' "$tmp/ready.json" > "$tmp/other.json"
sed 's/"status": "ready"/"status": "failed", "error": {"code": "INSUFFICIENT_MEMORY", "message": "needs 2 GiB, 1 GiB free"}/' \
    "$tmp/ready.json" > "$tmp/failed.json"
head -c 100000 /dev/zero | tr '\0' x > "$tmp/huge.json"
echo '{"worker_id": ' > "$tmp/garbage.json"
check "a report with a forged token gets 401" bash -c "[ \$(post wrong '$tmp/ready.json') = 401 ]"
check "a report without a token gets 401" bash -c "
    [ \$(curl -s -o /dev/null -w '%{http_code}' -X POST '$report' --data-binary @'$tmp/ready.json') = 401 ]"
check "a ModelWorker's token does not authorize reports for another" bash -c "[ \$(post '$token' '$tmp/other.json') = 401 ]"
check "a malformed report gets 400 and an oversized one 413" bash -c "
    [ \$(post '$token' '$tmp/garbage.json') = 400 ] && [ \$(post '$token' '$tmp/huge.json') = 413 ]"
check "refused reports leave the status alone" bash -c "
    [ -z \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw gemma-secured -o jsonpath='{.status.workers}')\" ]"
check "a ready report lands in status.model, status.workers and ModelAvailable" bash -c "
    [ \$(post '$token' '$tmp/ready.json') = 204 ] &&
    s=\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw gemma-secured -o json) &&
    echo \"\$s\" | python3 -c '
import json, sys
s = json.load(sys.stdin)[\"status\"]
assert s[\"model\"][\"quantization\"] == \"Q4_K_M\" and s[\"model\"][\"contextLength\"] == 32768, s
assert [w[\"pod\"] for w in s[\"workers\"]] == [\"$pod\"] and s[\"workers\"][0][\"ready\"], s
c = {c[\"type\"]: c for c in s[\"conditions\"]}[\"ModelAvailable\"]
assert (c[\"status\"], c[\"reason\"]) == (\"True\", \"ModelLoaded\"), c
' && kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw gemma-secured | grep -q 'Gemma 3 270m'"
check "a failure report sets Degraded with the worker's error code" eventually 20 bash -c "
    [ \$(post '$token' '$tmp/failed.json') = 204 ] &&
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw gemma-secured \
        -o jsonpath='{.status.phase}/{.status.conditions[?(@.type==\"Degraded\")].reason}')\" = Degraded/InsufficientMemory ]"

k -n "$opns" delete svc gemma-secured >/dev/null
check "a deleted Service is restored" eventually 20 bash -c "
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get svc gemma-secured >/dev/null 2>&1"
k -n "$opns" patch deploy gemma-secured --type merge -p '{"spec":{"replicas":5}}' >/dev/null
check "an edited Deployment is put back" eventually 20 bash -c "
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy gemma-secured -o jsonpath='{.spec.replicas}')\" = 2 ]"
# A field dropped from the spec leaves the children too (the live object
# still holds it, so only the applied hash can tell).
k -n "$opns" patch mw gemma-secured --type merge \
    -p '{"spec":{"tolerations":[{"key":"llorch.dev/check","operator":"Exists","effect":"NoSchedule"}]}}' >/dev/null
check "a toleration added to the spec reaches the pod template" eventually 20 bash -c "
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy gemma-secured \
        -o jsonpath='{.spec.template.spec.tolerations}' | grep -q llorch.dev/check"
k -n "$opns" patch mw gemma-secured --type json -p '[{"op":"remove","path":"/spec/tolerations"}]' >/dev/null
check "a toleration removed from the spec leaves the pod template" eventually 20 bash -c "
    ! kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy gemma-secured \
        -o jsonpath='{.spec.template.spec.tolerations}' | grep -q llorch.dev/check"
k -n "$opns" scale mw gemma-secured --replicas 3 >/dev/null
check "kubectl scale on the ModelWorker scales the Deployment" eventually 20 bash -c "
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy gemma-secured -o jsonpath='{.spec.replicas}')\" = 3 ]"
k -n "$opns" scale mw gemma-secured --replicas 1 >/dev/null
check "scaling to one replica removes the PodDisruptionBudget" eventually 20 bash -c "
    ! kubectl --kubeconfig '$kubeconfig' -n '$opns' get pdb gemma-secured >/dev/null 2>&1"

cat > "$tmp/invalid.yaml" <<'YAML'
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: invalid}
spec:
  model: {uri: "file:///models/m.gguf"}
  gpu: {count: 0, product: NVIDIA-H100}
YAML
k -n "$opns" apply -f "$tmp/invalid.yaml" >/dev/null
check "a spec the schema allows but the operator cannot run is InvalidSpec, with a Warning" \
    eventually 20 bash -c "
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw invalid \
        -o jsonpath='{.status.phase}/{.status.conditions[?(@.type==\"Ready\")].reason}')\" = Failed/InvalidSpec ] &&
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get events --field-selector reason=InvalidSpec,type=Warning \
        -o name | grep -q . &&
    ! kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy invalid >/dev/null 2>&1"
k -n "$opns" patch mw invalid --type json -p '[{"op":"remove","path":"/spec/gpu/product"}]' >/dev/null
cat > "$tmp/node-file.yaml" <<'YAML'
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: node-file}
spec:
  model: {uri: "file:///etc/shadow"}
YAML
k -n "$opns" apply -f "$tmp/node-file.yaml" >/dev/null
check "a file:// model outside the allowed host directories is InvalidSpec and mounts nothing" \
    eventually 20 bash -c "
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw node-file \
        -o jsonpath='{.status.phase}/{.status.conditions[?(@.type==\"Ready\")].reason}')\" = Failed/InvalidSpec ] &&
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw node-file \
        -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}' | grep -q 'not inside a host directory' &&
    ! kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy node-file >/dev/null 2>&1"
k -n "$opns" delete mw node-file --wait=false >/dev/null
cat > "$tmp/node-file-ok.yaml" <<'YAML'
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: node-file-later}
spec:
  model: {uri: "file:///models/m.gguf"}
YAML
k -n "$opns" apply -f "$tmp/node-file-ok.yaml" >/dev/null
check "a file:// model inside an allowed host directory gets its Deployment" eventually 20 bash -c "
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy node-file-later \
        -o jsonpath='{.spec.replicas}' 2>/dev/null)\" = 1 ]"
k -n "$opns" patch mw node-file-later --type merge -p '{"spec":{"model":{"uri":"file:///etc/shadow"}}}' >/dev/null
check "a ModelWorker moved beyond the policy is InvalidSpec and its Deployment scaled to zero" \
    eventually 20 bash -c "
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw node-file-later \
        -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}')\" = InvalidSpec ] &&
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy node-file-later \
        -o jsonpath='{.spec.replicas}')\" = 0 ]"
k -n "$opns" delete mw node-file-later --wait=false >/dev/null
check "fixing the spec creates the children" eventually 20 bash -c "
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy invalid >/dev/null 2>&1 &&
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw invalid -o jsonpath='{.status.phase}')\" = Pending ]"

cat > "$tmp/pvc.yaml" <<'YAML'
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: from-pvc}
spec:
  model: {uri: "pvc://models/gemma/q4.gguf"}
  gpu: {count: 0}
  cache: {persistentVolumeClaim: {size: 1Gi}}
YAML
k -n "$opns" apply -f "$tmp/pvc.yaml" >/dev/null
check "a sized cache becomes an owned claim; a pvc:// model is mounted read-only for fetch" \
    eventually 20 bash -c "
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get pvc from-pvc-cache \
        -o jsonpath='{.metadata.ownerReferences[0].name}/{.spec.resources.requests.storage}')\" = from-pvc/1Gi ] &&
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy from-pvc \
        -o jsonpath='{.spec.template.spec.volumes[?(@.name==\"model-source\")].persistentVolumeClaim.claimName}')\" = models ]"

# Play the kubelet: a fetch init container that keeps failing.
pvc_pod=$(k -n "$opns" get pods -l app.kubernetes.io/instance=from-pvc -o jsonpath='{.items[0].metadata.name}')
k -n "$opns" patch pod "$pvc_pod" --subresource=status --type merge -p '{"status": {"initContainerStatuses": [{
    "name": "fetch", "image": "llorch/worker", "imageID": "", "ready": false, "restartCount": 4,
    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
    "lastState": {"terminated": {"exitCode": 1, "message": "fetch: sha256 mismatch"}}}]}}' >/dev/null
check "a crash-looping pod makes the ModelWorker Degraded with its last words" eventually 20 bash -c "
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw from-pvc \
        -o jsonpath='{.status.phase}/{.status.conditions[?(@.type==\"Degraded\")].reason}')\" = Degraded/CrashLoopBackOff ] &&
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw from-pvc \
        -o jsonpath='{.status.conditions[?(@.type==\"Degraded\")].message}' | grep -q 'sha256 mismatch'"

# A spec change the API server refuses (a created claim cannot shrink)
# shows in the status and as a Warning, not only in the operator's log.
k -n "$opns" patch mw from-pvc --type merge -p '{"spec":{"cache":{"persistentVolumeClaim":{"size":"512Mi"}}}}' >/dev/null
check "a child the API server refuses makes the ModelWorker Failed/ApplyFailed, with a Warning" eventually 20 bash -c "
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw from-pvc \
        -o jsonpath='{.status.phase}/{.status.conditions[?(@.type==\"Ready\")].reason}')\" = Failed/ApplyFailed ] &&
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw from-pvc \
        -o jsonpath='{.status.conditions[?(@.type==\"Degraded\")].message}' | grep -q from-pvc-cache &&
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get events --field-selector reason=ApplyFailed,type=Warning \
        -o name | grep -q ."

# A callback Secret's name taken by something the operator did not make.
k -n "$opns" create secret generic taken-callback --from-literal=token=mine >/dev/null
sed 's/name: invalid/name: taken/; /product/d' "$tmp/invalid.yaml" > "$tmp/taken.yaml"
k -n "$opns" apply -f "$tmp/taken.yaml" >/dev/null
check "a callback Secret the operator did not create is left alone and fails the ModelWorker" eventually 20 bash -c "
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw taken \
        -o jsonpath='{.status.phase}/{.status.conditions[?(@.type==\"Ready\")].reason}')\" = Failed/ApplyFailed ] &&
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw taken \
        -o jsonpath='{.status.conditions[?(@.type==\"Degraded\")].message}' | grep -q 'taken-callback exists' &&
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get secret taken-callback -o jsonpath='{.data.token}')\" = \"\$(printf mine | base64)\" ]"
k -n "$opns" delete mw taken --wait=false >/dev/null

# A ModelWorker deleted with its children orphaned, then created again: the
# callback Secret it left (no owner any more) is replaced, not refused.
sed 's/name: invalid/name: orphaned/; /product/d' "$tmp/invalid.yaml" > "$tmp/orphaned.yaml"
k -n "$opns" apply -f "$tmp/orphaned.yaml" >/dev/null
check "a ModelWorker gets its callback Secret" eventually 20 \
    kubectl --kubeconfig "$kubeconfig" -n "$opns" get secret orphaned-callback
old_secret=$(k -n "$opns" get secret orphaned-callback -o jsonpath='{.metadata.uid}')
k -n "$opns" delete mw orphaned --cascade=orphan >/dev/null 2>&1 ||
    k -n "$opns" delete mw orphaned --cascade=false >/dev/null
check "an orphaning delete leaves the callback Secret without an owner" eventually 60 bash -c "
    ! kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw orphaned >/dev/null 2>&1 &&
    [ -z \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get secret orphaned-callback \
        -o jsonpath='{.metadata.ownerReferences}')\" ]"
k -n "$opns" apply -f "$tmp/orphaned.yaml" >/dev/null
check "re-created after an orphaning delete, it replaces the orphaned Secret and does not fail" eventually 30 bash -c "
    uid=\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw orphaned -o jsonpath='{.metadata.uid}') &&
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get secret orphaned-callback \
        -o jsonpath='{.metadata.ownerReferences[0].uid}')\" = \"\$uid\" ] &&
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get secret orphaned-callback \
        -o jsonpath='{.metadata.uid}')\" != '$old_secret' ] &&
    [ \"\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get mw orphaned -o jsonpath='{.status.phase}')\" != Failed ]"
k -n "$opns" delete mw orphaned --wait=false >/dev/null

k -n "$opns" delete mw gemma-secured --wait=false >/dev/null
# The garbage collector learns of a CRD installed after it started at its
# next discovery resync (30 s), so the first cascade can take that long.
check "deleting the ModelWorker removes its children" eventually 90 bash -c "
    ! kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy/gemma-secured >/dev/null 2>&1 &&
    ! kubectl --kubeconfig '$kubeconfig' -n '$opns' get svc/gemma-secured >/dev/null 2>&1 &&
    ! kubectl --kubeconfig '$kubeconfig' -n '$opns' get secret/gemma-secured-callback >/dev/null 2>&1"
check "the token of a deleted ModelWorker no longer authorizes reports" bash -c "[ \$(post '$token' '$tmp/ready.json') = 401 ]"

# An operator started while the API server is down (a proxy that drops
# every connection for 12 s) retries its start-up calls until they are
# answered: the same report URL (the Service's ClusterIP, so no worker
# rolls) and the PodDisruptionBudget version discovery finds.
outage_port=$((report_port + 4))
api_hostport=$(sed -n 's|^ *server: https://||p' "$tmp/operator-kubeconfig" | head -n 1)
python3 "$here/outage-proxy.py" "$outage_port" "$api_hostport" 12 &
outage_proxy_pid=$!
sed "s|^\( *server: \).*|\1https://127.0.0.1:$outage_port|" "$tmp/operator-kubeconfig" > "$tmp/outage-kubeconfig"
RUST_LOG=llorch_operator=debug,info KUBECONFIG="$tmp/outage-kubeconfig" "$operator" run \
    --report-addr "127.0.0.1:$((report_port + 5))" --metrics-addr "127.0.0.1:$((report_port + 6))" \
    --operator-namespace "$opns" --api-retry-max 2 > "$tmp/outage.log" 2>&1 &
outage_pid=$!
check "an operator started during an API-server outage retries until answered and keeps the ClusterIP report URL" \
    eventually 40 bash -c "
    ip=\$(kubectl --kubeconfig '$kubeconfig' -n '$opns' get svc llorch-operator -o jsonpath='{.spec.clusterIP}')
    grep -q 'failed; retrying' '$tmp/outage.log' &&
    grep -q \"report_url=http://\$ip:8081/v1/workers/report\" '$tmp/outage.log' &&
    grep -q 'PodDisruptionBudgets are policy/v1beta1' '$tmp/outage.log'"
kill "$outage_pid" "$outage_proxy_pid" 2>/dev/null

# A leader whose API server stops answering (every request hangs) stops
# leading 10 s after it sent its last successful renewal, before the
# 15 s after which a standby may take the Lease. It leads a Lease of its
# own over an empty namespace, so it reconciles nothing of the above.
k create namespace "$ns-hang" >/dev/null
hang_port=$((report_port + 7))
python3 "$here/outage-proxy.py" "$hang_port" "$api_hostport" 0 "$tmp/hang" &
hang_proxy_pid=$!
# The admin's credentials: the operator's own may renew only its Lease.
sed "s|^\( *server: \).*|\1https://127.0.0.1:$hang_port|" "$kubeconfig" > "$tmp/hang-kubeconfig"
RUST_LOG=llorch_operator=debug,info KUBECONFIG="$tmp/hang-kubeconfig" "$operator" run \
    --report-addr "127.0.0.1:$((report_port + 8))" --metrics-addr "127.0.0.1:$((report_port + 9))" \
    --operator-namespace "$opns" --namespace "$ns-hang" --lease-name hang-test > "$tmp/hang.log" 2>&1 &
hang_pid=$!
check "a second operator leads a Lease of its own" eventually 20 grep -q 'leading' "$tmp/hang.log"
sleep 6
touch "$tmp/hang"
check "a leader whose API server hangs stops within 10 s of its last renewal" eventually 25 python3 -c "
import re, subprocess, sys
from datetime import datetime
log = open('$tmp/hang.log').read()
m = re.search(r'^(\\S+Z).*leadership lost', log, re.M)
if not m:
    sys.exit(1)
lost = datetime.fromisoformat(m.group(1).replace('Z', '+00:00'))
renew = subprocess.check_output(['kubectl', '--kubeconfig', '$kubeconfig', '-n', '$opns', 'get', 'lease',
    'hang-test', '-o', 'jsonpath={.spec.renewTime}'], text=True).strip()
renewed = datetime.fromisoformat(renew.replace('Z', '+00:00'))
gap = (lost - renewed).total_seconds()
print(f'stopped leading {gap:.2f} s after the last renewal the API server recorded')
sys.exit(0 if 8.0 <= gap <= 10.5 else 2)
"
kill "$hang_pid" "$hang_proxy_pid" 2>/dev/null

check "the standby serves reports and health but does not reconcile" bash -c "
    curl -fsS http://127.0.0.1:$((report_port + 3))/readyz >/dev/null &&
    [ \$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer x' \
        --data-binary @'$tmp/ready.json' http://127.0.0.1:$standby_port/v1/workers/report) = 401 ] &&
    grep -q 'waiting for the lease' '$tmp/standby.log' && ! grep -q 'reconciled' '$tmp/standby.log'"
kill -TERM "$operator_pid" 2>/dev/null
check "the operator stops on SIGTERM and releases the Lease" eventually 10 bash -c "! kill -0 $operator_pid 2>/dev/null"
check "the standby takes over the Lease" eventually 20 grep -q 'leading' "$tmp/standby.log"
sed 's/name: invalid/name: after-failover/; /product/d' "$tmp/invalid.yaml" > "$tmp/after.yaml"
k -n "$opns" apply -f "$tmp/after.yaml" >/dev/null
check "the new leader reconciles" eventually 20 bash -c "
    kubectl --kubeconfig '$kubeconfig' -n '$opns' get deploy after-failover >/dev/null 2>&1"
kill -TERM "$standby_pid" 2>/dev/null
if [ "$failed" -ne "$before_checks" ]; then
    echo "--- operator log (last 40 lines)"
    tail -n 40 "$tmp/operator.log" | cut -c1-400
    echo "--- standby log (last 20 lines)"
    tail -n 20 "$tmp/standby.log" | cut -c1-400
    echo "--- operator started during an outage (last 20 lines)"
    tail -n 20 "$tmp/outage.log" | cut -c1-400
    echo "--- leader behind a hanging API server (last 20 lines)"
    tail -n 20 "$tmp/hang.log" | cut -c1-400
fi
