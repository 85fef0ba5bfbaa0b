#!/usr/bin/env bash
# Starts a real local Kubernetes control plane: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler (1.20.2, built from Debian's
# sources by build-k8s.sh), with real security: a CA and serving
# certificate, a service-account signing key, token authentication for an
# admin user, and --authorization-mode=Node,RBAC.
#
# Networking: a bridge `llorch0` holds the pod network 10.244.0.0/24 with the
# host at 10.244.0.1; the API server listens on and advertises that address
# (Endpoints refuse loopback), and the service range 10.96.0.0/16 is routed
# to the bridge so nothing sent to a ClusterIP leaves the machine.
#
# The node: `llorch-node` (tests/node, a test node that runs pods as local
# processes; not a kubelet) registers `llorch-node-0` with
# $LLORCH_NODE_GPUS (default 2) `nvidia.com/gpu`, and kube-proxy (iptables
# mode, masquerading service traffic) makes ClusterIPs work from the host
# and from pods. IP forwarding is turned on for the bridge while the cluster
# runs; down.sh restores it and removes every rule and namespace.
#
# Writes $LLORCH_CLUSTER_DIR/kubeconfig (default ~/.cache/llorch/cluster)
# and prints its path as the last line. Safe to run twice. Needs root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${LLORCH_CLUSTER_DIR:-${LLORCH_CACHE:-$HOME/.cache/llorch}/cluster}"
run="$dir/run"
logs="$dir/logs"
pki="$dir/pki"
kubeconfig="$dir/kubeconfig"
bridge=llorch0
host_ip=10.244.0.1
pod_cidr=10.244.0.0/24
svc_cidr=10.96.0.0/16
etcd_port=12379
api="https://$host_ip:6443"
token_file="$pki/tokens.csv"

alive() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

node_name=llorch-node-0
root="$(cd "$here/../.." && pwd)"

if alive kube-apiserver && alive etcd && alive kube-controller-manager && alive kube-scheduler \
    && alive llorch-node && alive kube-proxy; then
    echo "$kubeconfig"
    exit 0
fi
"$here/down.sh" >/dev/null 2>&1 || true
rm -rf "$dir/node"

bin="$("$here/build-k8s.sh")"
# The node and the binaries it runs for llorch images (incremental).
cargo build --quiet --profile ci --locked -p llorch-node -p llorch-worker -p llorch-operator \
    --features llorch-worker/cuda
mkdir -p "$run" "$logs" "$pki"

# Network.
ip link add "$bridge" type bridge
ip addr add "$host_ip/24" dev "$bridge"
ip link set "$bridge" up
ip route add "$svc_cidr" dev "$bridge"

# PKI, once per cluster directory.
if [ ! -f "$pki/ca.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=llorch-local-ca" \
        -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
        -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
    printf 'subjectAltName=IP:%s,IP:10.96.0.1,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost\n' "$host_ip" > "$pki/san.ext"
    openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 3650 -extfile "$pki/san.ext" -out "$pki/apiserver.crt" 2>/dev/null
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
    echo "$(openssl rand -hex 24),admin,admin,\"system:masters\"" > "$token_file"
fi
admin_token="$(cut -d, -f1 "$token_file")"

cat > "$kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: llorch-local
  cluster:
    server: $api
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: admin
  user:
    token: $admin_token
contexts:
- name: llorch-local
  context:
    cluster: llorch-local
    user: admin
current-context: llorch-local
KC
chmod 600 "$kubeconfig"

start() { # name command...
    local name="$1"
    shift
    "$@" >"$logs/$name.log" 2>&1 &
    echo $! > "$run/$name.pid"
}

start etcd etcd --name llorch --data-dir "$run/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
    --initial-cluster llorch=http://127.0.0.1:12380
start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$host_ip" --advertise-address "$host_ip" --secure-port 6443 \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$token_file" \
    --authorization-mode Node,RBAC \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range "$svc_cidr" --allow-privileged=true

ready=
for _ in $(seq 300); do
    if curl -fsS --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_token" "$api/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    if ! alive kube-apiserver || ! alive etcd; then break; fi
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "kube-apiserver did not become ready; logs in $logs" >&2
    tail -n 20 "$logs/kube-apiserver.log" >&2 || true
    exit 1
fi

start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$kubeconfig" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=true --leader-elect=false \
    --cluster-cidr "$pod_cidr" --service-cluster-ip-range "$svc_cidr" \
    --controllers '*,-nodeipam,-cloud-node-lifecycle,-service,-route' \
    --bind-address 127.0.0.1 --secure-port 0 --port 10252
start kube-scheduler "$bin/kube-scheduler" --kubeconfig "$kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port 0 --port 10251

# The node, then kube-proxy (which reads the Node it runs on).
sysctl -n net.ipv4.ip_forward > "$run/ip_forward.orig"
sysctl -qw net.ipv4.ip_forward=1
iptables -I FORWARD -i "$bridge" -j ACCEPT -m comment --comment llorch-cluster
iptables -I FORWARD -o "$bridge" -j ACCEPT -m comment --comment llorch-cluster
# Nothing a pod sends may leave the machine: only the pod network (service
# traffic arrives here already rewritten to pod addresses) and the host.
iptables -I FORWARD -i "$bridge" ! -d "$pod_cidr" -j REJECT -m comment --comment llorch-cluster
start llorch-node "$root/target/ci/llorch-node" --kubeconfig "$kubeconfig" --name "$node_name" \
    --gpus "${LLORCH_NODE_GPUS:-2}" --state-dir "$dir/node" --bridge "$bridge" --host-ip "$host_ip" \
    --image "llorch/worker=$root/target/ci/llorch-worker" \
    --image "llorch/operator=$root/target/ci/llorch-operator"
for _ in $(seq 100); do
    kubectl --kubeconfig "$kubeconfig" get node "$node_name" >/dev/null 2>&1 && break
    alive llorch-node || break
    sleep 0.2
done
start kube-proxy "$bin/kube-proxy" --kubeconfig "$kubeconfig" --hostname-override "$node_name" \
    --proxy-mode iptables --cluster-cidr "$pod_cidr" --masquerade-all \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256 \
    --conntrack-max-per-core 0 --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0
sleep 1
for c in kube-controller-manager kube-scheduler llorch-node kube-proxy; do
    if ! alive "$c"; then
        echo "$c exited; logs in $logs/$c.log" >&2
        tail -n 20 "$logs/$c.log" >&2 || true
        exit 1
    fi
done
echo "$kubeconfig"
