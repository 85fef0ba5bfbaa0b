#!/usr/bin/env bash
# Build what scripts/gpu-check.sh runs on a GPU machine, which has no Rust
# toolchain and no network: llorch-worker with the CUDA backend, the GPU
# test binaries, and the kernels precompiled to cubins (so the check works even
# where NVRTC is missing). Everything lands in BUNDLE (default
# target/gpu-check), small enough to send along (stripped binaries).
#
#   scripts/gpu-bundle.sh [BUNDLE]
set -euo pipefail
cd "$(dirname "$0")/.."
bundle="${1:-target/gpu-check}"
export LLORCH_CACHE="${LLORCH_CACHE:-$HOME/.cache/llorch}"
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/kernels"

cargo build --profile ci --locked -p llorch-worker --features cuda
cp target/ci/llorch-worker "$bundle/bin/"
# The GPU tests: their executables, named by cargo's JSON messages.
cargo test --profile ci --locked -p worker-cuda --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do
    cp "$exe" "$bundle/bin/test-$name"
done
strip "$bundle"/bin/* 2>/dev/null || true

# Cubins for the GPUs a cluster runs (compiled by the kernels test with the
# PyPI NVRTC), so the device needs no compiler.
venv="$(scripts/python-env.sh)"
nvrtc_dir="$(dirname "$(find "$venv" -name 'libnvrtc.so.*' -not -name '*alt*' | head -n1)")"
LD_LIBRARY_PATH="$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    LLORCH_KERNEL_CACHE="$PWD/$bundle/kernels" \
    "$bundle/bin/test-kernels" --ignored --quiet >/dev/null
du -sh "$bundle"
ls -la "$bundle/bin" "$bundle/kernels"
