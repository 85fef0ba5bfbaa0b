#!/usr/bin/env bash
# The CUDA backend on a GPU machine: op parity with the CPU backend, whole
# models against the CPU backend, and decode/prefill speed with the share of
# the memory-bandwidth roofline. Runs without network and without a Rust
# toolchain, from a bundle built by scripts/gpu-bundle.sh; writes JSON and
# logs under OUTDIR. About 6–8 minutes on an H100 (GPU_CHECK_SHAPES=1b skips the
# 8B models, the longest part).
#
#   scripts/gpu-check.sh OUTDIR [BUNDLE]
#
# Environment: LLORCH_TEST_MODEL (Gemma 3 270M, optional: its checks are
# skipped when absent), PEAK_BW (bytes/s for the roofline, default the
# H100 SXM spec 3.35e12), GPU_CHECK_SHAPES (default "1b 8b").
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: gpu-check.sh OUTDIR [BUNDLE]}"
bundle="${2:-target/gpu-check}"
peak="${PEAK_BW:-3.35e12}"
shapes="${GPU_CHECK_SHAPES:-1b 8b}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
bin="$(cd "$bundle/bin" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
log() { echo "[$(date +%T)] $*" | tee -a "$out/gpu-check.log"; }

# The CUDA libraries may sit outside the default search path, and may carry
# only a newer major version than the names cudarc tries: link what is found
# under plain names in a private directory.
libs="$work/lib"
mkdir -p "$libs"
for name in libcuda libnvrtc libcublas libcublasLt; do
    found="$( (ldconfig -p 2>/dev/null | awk -v n="$name.so" '$1 ~ "^"n {print $NF}';
               find /usr/local/cuda*/ /usr/lib/x86_64-linux-gnu /opt /usr/local/lib/python3* /usr/lib/python3* \
                   -name "$name.so*" 2>/dev/null) | grep -v alt | head -n1)"
    if [ -n "$found" ]; then
        ln -sf "$found" "$libs/$name.so"
        dirs="${dirs:-}:$(dirname "$found")"
        log "$name: $found"
    else
        log "$name: not found"
    fi
done
export LD_LIBRARY_PATH="$libs${dirs:-}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LLORCH_KERNEL_CACHE="$work/kernels"
cp -r "$bundle/kernels" "$LLORCH_KERNEL_CACHE"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader \
    > "$out/gpu.txt" 2>&1 || true
log "gpu: $(cat "$out/gpu.txt")"

# Parity: ops, then models. Test output is kept whole.
status=0
run_test() {
    local name="$1"
    shift
    log "test $name"
    if (cd crates/worker-cuda && "$bin/test-$name" --ignored --test-threads 1 --nocapture "$@") \
        > "$out/test-$name.log" 2>&1; then
        log "test $name: ok"
    else
        log "test $name: FAILED (see test-$name.log)"
        status=1
    fi
}
run_test kernels
run_test ops
run_test ops_forms
if [ -f "${LLORCH_TEST_MODEL:-/nonexistent}" ]; then
    run_test models
else
    log "Gemma 3 270M not present (LLORCH_TEST_MODEL): its greedy check is skipped"
    run_test models --skip gemma3
fi

# Speed: the worker's own bench on models it writes itself.
bench() {
    local model="$1" label="$2"
    log "bench $label"
    if "$bin/llorch-worker" bench --device cuda --model "$model" -p 512 -n 128 --reps 3 --json \
        > "$work/bench.json" 2> "$out/bench-$label.err"; then
        python3 - "$work/bench.json" "$model" "$label" "$peak" >> "$out/bench.jsonl" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
model, label, peak = sys.argv[2], sys.argv[3], float(sys.argv[4])
size = os.path.getsize(model)
for row in r["results"]:
    row["label"] = label
    if row["test"].startswith("tg"):
        # Bytes read per generated token: every weight once (the KV cache
        # at these lengths is small next to them).
        row["roofline_percent"] = 100.0 * size * row["tokens_per_sec"] / peak
print(json.dumps({"label": label, "size_bytes": size, "device": r["device"], "results": r["results"]}))
PY
        tail -n1 "$out/bench.jsonl" | tee -a "$out/gpu-check.log"
    else
        log "bench $label: FAILED (see bench-$label.err)"
        status=1
    fi
}
: > "$out/bench.jsonl"
# Gemma and the 8B shape three times: the default decode (f32
# activations), LLORCH_CUDA_DECODE=q8 (8-bit activations, integer dot
# products), and LLORCH_CUDA_GRAPHS=1 (decode steps replayed as CUDA graphs).
if [ -f "${LLORCH_TEST_MODEL:-/nonexistent}" ]; then
    bench "$LLORCH_TEST_MODEL" gemma3-270m-q4_k_m
    LLORCH_CUDA_DECODE=q8 bench "$LLORCH_TEST_MODEL" gemma3-270m-q4_k_m-q8
    LLORCH_CUDA_GRAPHS=1 bench "$LLORCH_TEST_MODEL" gemma3-270m-q4_k_m-graphs
fi
for shape in $shapes; do
    for ty in Q4_K Q8_0; do
        model="$work/llama-$shape-$ty.gguf"
        log "writing the $shape $ty model"
        "$bin/llorch-worker" synth --arch llama --shape "$shape" --type "$ty" --out "$model" \
            >> "$out/gpu-check.log" 2>&1 || { log "synth failed"; status=1; continue; }
        bench "$model" "llama-$shape-$ty"
        # The roofline goal is on the 8B shape: compare the decode paths there.
        if [ "$shape" = 8b ]; then
            LLORCH_CUDA_DECODE=q8 bench "$model" "llama-$shape-$ty-q8"
            if [ "$ty" = Q4_K ]; then
                LLORCH_CUDA_GRAPHS=1 bench "$model" "llama-$shape-$ty-graphs"
            fi
        fi
        rm -f "$model"
    done
done
log "done: status $status"
exit "$status"
