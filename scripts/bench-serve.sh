#!/usr/bin/env bash
# Serving benchmark: llorch-worker serve and llama-server (the reference
# build) on the same model, same threads, one after the other, each with
# 1, 4, 16 and 64 concurrent streaming clients, one request of 16 tokens
# each (load generator: worker/examples/serve_bench.rs). Prints a Markdown table for
# BENCHMARKS.md. Not part of `make test`.
#   scripts/bench-serve.sh [MODEL] [PARALLEL]
# BENCH_SAMPLING: the sampling fields of every request, as JSON (default
# greedy, {"temperature": 0}); BENCH_CLIENTS: the client counts (default
# "1 4 16 64").
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:-$("$root/scripts/fetch-model.sh")}"
parallel="${2:-4}"
build="$("$root/scripts/llama-cpp-build.sh")"
(cd "$root" && cargo build --release -p llorch-worker --bin llorch-worker --example serve-bench >&2)
bench="$root/target/release/examples/serve-bench"
threads=2
sampling="${BENCH_SAMPLING:-}"
[ -n "$sampling" ] || sampling='{"temperature": 0}'

peak_rss_mib() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

wait_ready() {
    for _ in $(seq 600); do
        if curl -fs "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "server at $1 did not become ready" >&2
    return 1
}

run_server() { # name port ready-path command...
    local name="$1" port="$2" ready="$3"
    shift 3
    "$@" >/dev/null 2>&1 &
    local pid=$!
    if ! wait_ready "http://127.0.0.1:$port$ready"; then kill "$pid"; return 1; fi
    for clients in ${BENCH_CLIENTS:-1 4 16 64}; do
        local out
        out="$("$bench" "http://127.0.0.1:$port" "$clients" 1 16 "$sampling")"
        python3 - "$name" "$out" "$(peak_rss_mib "$pid")" <<'PY'
import json, sys
name, out, rss = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
print(f"| {name} | {out['clients']} | {out['tokens_per_sec']:.1f} | {out['ttft_p50_seconds']*1000:.0f} | {out['ttft_p99_seconds']*1000:.0f} | {rss} | {out['errors']} |")
PY
    done
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
}

echo "| server | clients | tokens/s | TTFT p50 ms | TTFT p99 ms | peak RSS MiB | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
run_server llorch 18181 /ready "$root/target/release/llorch-worker" serve --model "$model" --host 127.0.0.1 --port 18181 \
    --threads "$threads" --parallel "$parallel" --queue-depth 128 --ctx-size 1024
LD_LIBRARY_PATH="$build/bin" run_server llama-server 18182 /health "$build/bin/llama-server" -m "$model" --host 127.0.0.1 --port 18182 \
    -t "$threads" -np "$parallel" -c $((1024 * parallel)) --no-webui
