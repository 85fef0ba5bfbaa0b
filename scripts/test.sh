#!/usr/bin/env bash
# `make test`: format check, clippy with warnings denied, then every test.
#
# Each phase prints its duration. Tests build once, with the `ci` profile
# (optimized, with debug assertions and overflow checks).
set -euo pipefail
cd "$(dirname "$0")/.."

export LLORCH_CACHE="${LLORCH_CACHE:-$HOME/.cache/llorch}"
export LLORCH_TEST_MODEL="${LLORCH_TEST_MODEL:-$LLORCH_CACHE/models/gemma-3-270m-q4_k_m.gguf}"
export LLORCH_LLAMA_CPP_SRC="${LLORCH_LLAMA_CPP_SRC:-$LLORCH_CACHE/llama.cpp/src-0.3.36}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

total_start=$SECONDS
phase() {
    local name="$1"
    shift
    local start=$SECONDS
    echo "==> $name"
    "$@"
    echo "==> $name: $((SECONDS - start)) s"
}

setup() {
    # The default model, and llama.cpp's source tree for its tokenizer test
    # vectors; both cached.
    scripts/fetch-model.sh "$LLORCH_TEST_MODEL" >/dev/null
    if [ ! -f "$LLORCH_LLAMA_CPP_SRC/.complete" ]; then
        scripts/llama-cpp-src.sh >/dev/null
    fi
    # A C++ compiler: the CUDA kernels are also compiled for the host and
    # checked there (crates/worker-cuda/tests/emulated.rs).
    if ! command -v c++ >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >&2
    fi
    # Python tools the tests use (the openai client).
    LLORCH_PYTHON="$(scripts/python-env.sh)/bin/python"
    export LLORCH_PYTHON
}

lint() {
    cargo fmt --all -- --check
    # The Helm chart (lint, renders, schema, install.yaml and CRD drift) and
    # the Dockerfiles (hadolint): offline, a few seconds.
    tests/chart/check.sh
    tests/images/lint.sh
    # All features: the CUDA backend builds (and is linted) without a GPU.
    cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
}

# The worker is built and tested with the CUDA backend in: it needs no
# toolkit and no GPU to build, and without a GPU `--device cuda` must fail
# with a clear error (worker/tests/device.rs). GPU tests are `#[ignore]`d
# with their reason and run by scripts/gpu-check.sh on a GPU machine.
FEATURES=(--features llorch-worker/cuda)

build() {
    cargo test --workspace --profile ci --locked "${FEATURES[@]}" --no-run
    # The fuzz target must keep building; it runs only by hand (make fuzz-gguf).
    CARGO_TARGET_DIR=target/fuzz cargo check --quiet \
        --manifest-path crates/worker-gguf/fuzz/Cargo.toml
}

unit() {
    cargo test --workspace --profile ci --locked "${FEATURES[@]}"
    # Every CUDA kernel compiles with NVRTC (from PyPI; no GPU needed).
    local nvrtc
    nvrtc="$(find "$(dirname "$(dirname "$LLORCH_PYTHON")")" -name 'libnvrtc.so.*' -not -name '*alt*' | head -n1)"
    if [ -z "$nvrtc" ]; then
        echo "NVRTC is missing from the Python environment (scripts/requirements.txt)" >&2
        return 1
    fi
    LD_LIBRARY_PATH="$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        LLORCH_KERNEL_CACHE="$LLORCH_CACHE/kernels" \
        cargo test --profile ci --locked -p worker-cuda --test kernels -- --ignored
}

cluster() {
    # The local Kubernetes control plane (root; builds 1.20.2 from Debian's
    # sources on first use, cached) and its smoke test; always torn down.
    tests/cluster/smoke.sh
}

phase setup setup
phase lint lint
phase build build
phase test unit
phase cluster cluster
echo "==> all phases: $((SECONDS - total_start)) s"
