#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and
# kube-proxy 1.20.2 from Debian's `kubernetes` source package, once, and
# caches them in $LLORCH_CACHE/k8s/bin. Installs what the build and the
# cluster need from Debian: etcd-server, golang-go, rsync, jq, curl, and the
# reflect2 1.0.2 sources (the vendored 1.0.1 crashes the API server under
# Go >= 1.18 as soon as it serves a custom resource). Prints the bin dir.
# Runs as root (apt). About 5 minutes on 2 cores the first time.
set -euo pipefail
cache="${LLORCH_CACHE:-$HOME/.cache/llorch}"
bin="$cache/k8s/bin"
tools=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy)
have_all() { for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done; }

need_pkgs=()
for p in etcd-server golang-go rsync jq golang-github-modern-go-reflect2-dev iproute2 iptables conntrack curl; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
src_list=/etc/apt/sources.list.d/llorch-deb-src.sources
if ! have_all && [ ! -f "$src_list" ]; then
    # deb-src entries mirroring the main Debian ones, for `apt-get source`.
    awk 'BEGIN { RS=""; ORS="\n\n" } /URIs: http[^ ]*debian\/?$|URIs: http[^ ]*debian\n/ { sub(/Types: deb/, "Types: deb-src"); print }' \
        /etc/apt/sources.list.d/debian.sources > "$src_list"
    need_update=1
fi
if [ "${#need_pkgs[@]}" -gt 0 ] || [ -n "${need_update:-}" ]; then
    apt-get update -qq >&2
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >&2
fi
if have_all; then
    echo "$bin"
    exit 0
fi

work="$cache/k8s/src"
mkdir -p "$work"
cd "$work"
if ! ls kubernetes_*.orig.tar.gz >/dev/null 2>&1; then
    apt-get source --download-only kubernetes >&2
fi
tree="$work/tree"
if [ ! -d "$tree/cmd/kube-apiserver" ]; then
    rm -rf "$tree" "$work/extract"
    mkdir -p "$work/extract"
    tar -xzf kubernetes_*.orig.tar.gz -C "$work/extract"
    mv "$work/extract"/* "$tree"
fi
rm -rf "$tree/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$tree/vendor/github.com/modern-go/reflect2"

gopath="$work/gopath"
mkdir -p "$gopath/src/k8s.io"
ln -sfn "$tree" "$gopath/src/k8s.io/kubernetes"
cd "$gopath/src/k8s.io/kubernetes"
export GOPATH="$gopath" GO111MODULE=off GOFLAGS= GOCACHE="$cache/k8s/gocache"
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kube-proxy" >&2
mkdir -p "$bin"
for t in "${tools[@]}"; do
    cp "_output/bin/$t" "$bin/$t"
done
echo "$bin"
