# The gateway as install.yaml runs it (two pods in llorch-system) in front of
# real workers: two ModelWorkers, Gemma 3 270M (two replicas, an alias) and
# a small synthetic model that autoscales from zero. Routing by name, alias
# and NAMESPACE/NAME; /v1/models; an unknown model; the official openai
# client; a model at zero woken by its first request (a stream that shows
# the waiting comments) and sent back to zero after its delay; a replica
# killed mid-test; API keys (401, 403, rate 429); a gateway restart.
# Sourced by node-checks.sh while the operator from install.yaml runs (its
# autoscaler looks every second over a 4 s window); provides nothing.

gwns="$ns-gw"
python="$("$root/scripts/python-env.sh")/bin/python"
k create namespace "$gwns" >/dev/null
tiny="$model_dir/llorch-tiny-$gwns.gguf"
"$root/target/ci/llorch-worker" synth --arch llama --type Q8_0 --out "$tiny" >/dev/null
cat > "$tmp/gw.yaml" <<YAML
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: gemma}
spec:
  model: {uri: "file://$model"}
  gpu: {count: 0}
  replicas: 2
  servedModelNames: [gemma-3-270m]
  server: {contextSize: 512, parallel: 2}
---
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: tiny}
spec:
  model: {uri: "file://$tiny"}
  gpu: {count: 0}
  replicas: 0
  servedModelNames: [tiny-llama]
  server: {contextSize: 256, parallel: 1}
  autoscaling: {minReplicas: 0, maxReplicas: 1, scaleDownDelaySeconds: 5}
YAML
k -n "$gwns" apply -f "$tmp/gw.yaml" >/dev/null
check "the gateway's two pods turn Ready" eventually 120 bash -c "
    [ \$(ready_pods llorch-system app.kubernetes.io/name=llorch-gateway) = 2 ]"
check "two Gemma replicas behind the gateway turn Ready" bash -c "
    kk -n '$gwns' wait --for=condition=Ready mw/gemma --timeout=240s >/dev/null &&
    for i in \$(seq 120); do
        [ \"\$(kk -n '$gwns' get mw gemma -o jsonpath='{.status.readyReplicas}')\" = 2 ] && exit 0
        sleep 1
    done; exit 1"
gw="http://$(k -n llorch-system get svc llorch-gateway -o jsonpath='{.spec.clusterIP}')"
chat() { # model [curl args...]
    local model="$1"
    shift
    curl -sS -m 120 "$@" "$gw/v1/chat/completions" -H 'content-type: application/json' \
        -d "{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":3,\"temperature\":0}"
}
export -f chat
export gw
check "/v1/models lists both ModelWorkers with their phases, the one at zero included" eventually 30 bash -c "
    curl -fsS '$gw/v1/models' | python3 -c '
import json, sys
d = {m[\"id\"]: m for m in json.load(sys.stdin)[\"data\"]}
assert d[\"gemma-3-270m\"][\"llorch\"][\"phase\"] == \"Ready\", d
assert d[\"tiny-llama\"][\"llorch\"][\"replicas\"] == 0, d
'"
before=$failed
check "a chat completion by alias and by NAMESPACE/NAME" eventually 30 bash -c "
    chat gemma-3-270m > '$tmp/chat-alias.out' 2>&1; chat '$gwns/gemma' > '$tmp/chat-id.out' 2>&1
    grep -q '\"chat.completion\"' '$tmp/chat-alias.out' && grep -q '\"chat.completion\"' '$tmp/chat-id.out'"
if [ "$failed" != "$before" ]; then
    echo "     answers: $(cat "$tmp/chat-alias.out") / $(cat "$tmp/chat-id.out")"
    kk -n "$gwns" get pods -o wide
    kk -n llorch-system logs -l app.kubernetes.io/name=llorch-gateway --tail 20
fi
check "an unknown model: 404 with OpenAI's envelope (MODEL_NOT_FOUND)" bash -c "
    out=\$(chat no-such-model -w ' %{http_code}') && echo \"\$out\" | grep -q 'MODEL_NOT_FOUND' && [ \"\${out##* }\" = 404 ]"
check "the official openai client through the gateway, streaming and not" eventually 60 \
    "$python" "$here/gateway_client.py" "$gw" gemma-3-270m
check "workers export the Inference Extension's metric names" bash -c "
    ip=\$(kk -n '$gwns' get pods -l app.kubernetes.io/instance=gemma -o jsonpath='{.items[0].status.podIP}') &&
    curl -fsS \"http://\$ip:8080/metrics\" | grep -q '^vllm:kv_cache_usage_perc ' &&
    curl -fsS \"http://\$ip:8080/metrics\" | grep -q '^llorch_worker_kv_cache_usage_ratio '"
check "a model at zero: its first request streams waiting comments, then the answer" bash -c "
    out=\$(curl -sS -N -m 240 '$gw/v1/completions' -H 'content-type: application/json' \
        -d '{\"model\":\"tiny-llama\",\"prompt\":\"Hello\",\"max_tokens\":4,\"stream\":true}') &&
    echo \"\$out\" | grep -q '^: waiting for model $gwns/tiny' &&
    echo \"\$out\" | grep -q '\"text_completion\"' && echo \"\$out\" | tail -n 2 | grep -q 'data: \\[DONE\\]'"
# Request to first token from zero, as the gateway counted it (a figure
# for the log; the model is on the node and copied into the pod's cache).
cold="$(for ip in $(k -n llorch-system get pods -l app.kubernetes.io/name=llorch-gateway -o jsonpath='{.items[*].status.podIP}'); do
    curl -fsS "http://$ip:8080/metrics"
done | awk -v m="$gwns/tiny" 'index($0, "llorch_gateway_cold_start_seconds_sum{model=\"" m "\"}") == 1 { s += $2 }
    index($0, "llorch_gateway_cold_start_seconds_count{model=\"" m "\"}") == 1 { n += $2 }
    END { if (n > 0) printf "%.1f s over %d request(s)", s / n, n }')"
echo "     cold start from zero (the gateway's figure): ${cold:-none counted}"
check "the gateway counted the request as a cold start" test -n "$cold"
check "the gateway woke it to one replica" bash -c "
    [ \"\$(kk -n '$gwns' get mw tiny -o jsonpath='{.spec.replicas}')\" != 0 ] ||
    kk -n '$gwns' get events --field-selector reason=ScaledDown -o name | grep -q ."
check "idle for its delay, the autoscaler sends it back to zero (a ScaledDown event)" eventually 120 bash -c "
    [ \"\$(kk -n '$gwns' get mw tiny -o jsonpath='{.spec.replicas}')\" = 0 ] &&
    kk -n '$gwns' get events -o jsonpath='{.items[*].reason}' | grep -q ScaledDown"
victim=$(k -n "$gwns" get pods -l app.kubernetes.io/instance=gemma -o jsonpath='{.items[0].metadata.name}')
k -n "$gwns" delete pod "$victim" --grace-period=1 --wait=false >/dev/null
check "a replica killed: the next requests go to the other" bash -c "
    for i in 1 2 3 4; do chat gemma-3-270m -f | grep -q '\"chat.completion\"' || exit 1; done"
check "gateway metrics count requests per model and code" bash -c "
    for ip in \$(kk -n llorch-system get pods -l app.kubernetes.io/name=llorch-gateway -o jsonpath='{.items[*].status.podIP}'); do
        curl -fsS \"http://\$ip:8080/metrics\"
    done | grep -q 'llorch_gateway_requests_total{model=\"$gwns/gemma\",code=\"200\"}'"

# A second ModelWorker claiming the alias: neither gets it, both say why.
cat > "$tmp/rival.yaml" <<YAML
apiVersion: llorch.dev/v1alpha1
kind: ModelWorker
metadata: {name: rival}
spec:
  model: {uri: "file://$model"}
  gpu: {count: 0}
  replicas: 0
  servedModelNames: [gemma-3-270m]
YAML
k -n "$gwns" apply -f "$tmp/rival.yaml" >/dev/null
cond() { # namespace name: its NameConflict status
    kubectl --kubeconfig "$kubeconfig" -n "$1" get mw "$2" \
    -o jsonpath='{.status.conditions[?(@.type=="NameConflict")].status}' 2>/dev/null; }
export -f cond
check "an alias claimed twice: NameConflict on both, and 409 MODEL_NAME_CONFLICT for it" eventually 60 bash -c "
    [ \"\$(cond '$gwns' gemma)/\$(cond '$gwns' rival)\" = True/True ] &&
    out=\$(chat gemma-3-270m -w ' %{http_code}') && echo \"\$out\" | grep -q 'MODEL_NAME_CONFLICT.* 409\$' &&
    chat '$gwns/gemma' -f | grep -q '\"chat.completion\"'"
k -n "$gwns" delete mw rival --wait=false >/dev/null
check "the rival gone, the condition clears and the alias routes again" eventually 60 bash -c "
    [ -z \"\$(cond '$gwns' gemma)\" ] && [ -n \"\$(kk -n '$gwns' get mw gemma -o jsonpath='{.status.phase}')\" ] && chat gemma-3-270m -f | grep -q '\"chat.completion\"'"

# API keys: a Secret, and the gateway told to require them.
cat > "$tmp/keys.yaml" <<'YAML'
- {key: "tiny-only-0123456789abcdef", models: ["tiny-llama"]}
- {key: "slow-0123456789abcdef", models: ["gemma-3-270m"], requestsPerMinute: 1}
- {key: "admin-0123456789abcdef", models: ["*"]}
YAML
k -n llorch-system create secret generic llorch-keys --from-file=keys.yaml="$tmp/keys.yaml" >/dev/null
check "the gateway with --api-keys-secret rolls out" bash -c "
    kk -n llorch-system patch deploy llorch-gateway --type json \
        -p '[{\"op\":\"add\",\"path\":\"/spec/template/spec/containers/0/args/-\",\"value\":\"--api-keys-secret=llorch-keys\"}]' >/dev/null &&
    kk -n llorch-system rollout status deploy/llorch-gateway --timeout=120s >/dev/null &&
    for i in \$(seq 60); do
        [ \$(ready_pods llorch-system app.kubernetes.io/name=llorch-gateway) = 2 ] &&
        [ \$(kk -n llorch-system get pods -l app.kubernetes.io/name=llorch-gateway -o name | wc -l) = 2 ] && exit 0
        sleep 1
    done; exit 1"
check "keys: none is a 401, another model's is a 403" eventually 30 bash -c "
    chat gemma-3-270m -w ' %{http_code}' | grep -q 'UNAUTHORIZED.* 401\$' &&
    chat gemma-3-270m -H 'authorization: Bearer tiny-only-0123456789abcdef' -w ' %{http_code}' | grep -q 'FORBIDDEN.* 403\$'"
check "keys: a rate of one a minute per gateway replica gives 429 within five requests" bash -c "
    codes=\$(for i in 1 2 3 4 5; do chat gemma-3-270m -o /dev/null -w '%{http_code} ' -H 'authorization: Bearer slow-0123456789abcdef'; done)
    echo \"\$codes\" | grep -q 200 && echo \"\$codes\" | grep -q 429"
k -n llorch-system delete pods -l app.kubernetes.io/name=llorch-gateway --wait=false >/dev/null
check "a gateway restart loses no configuration: names, keys and rates come back" eventually 120 bash -c "
    [ \$(ready_pods llorch-system app.kubernetes.io/name=llorch-gateway) = 2 ] &&
    chat gemma-3-270m -w ' %{http_code}' | grep -q ' 401\$' &&
    chat gemma-3-270m -f -H 'authorization: Bearer admin-0123456789abcdef' | grep -q '\"chat.completion\"'"
k -n "$gwns" delete mw --all --wait=false >/dev/null
check "deleting the gateway's ModelWorkers stops their pods" eventually 90 bash -c "
    [ -z \"\$(kk -n '$gwns' get pods -o name)\" ]"
rm -f "$tiny"
