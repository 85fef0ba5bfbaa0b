#!/usr/bin/env bash
# Gateway benchmark, not part of `make test`:
#  1. overhead: the same streaming load (1, 16, 64 clients, one request of 16
#     tokens each; worker/examples/serve_bench.rs) straight to a worker and
#     through the gateway in front of it, alternating, on one machine (the
#     gateway's CPU time competes with the worker's);
#  2. prefix affinity: a multi-turn chat load (operator/examples/
#     gateway_bench.rs chat: CONVERSATIONS conversations of TURNS turns,
#     4 at a time) over two worker replicas, with prefix affinity, with
#     least load alone, and with a random replica per request (what
#     kube-proxy does); each mode on freshly started workers, whose
#     /metrics give the prompt tokens taken from their caches.
# The gateway runs as `gateway-bench serve`: the gateway's router with a
# fixed catalog, no cluster. Prints Markdown tables for BENCHMARKS.md.
#   scripts/bench-gateway.sh [MODEL]
# BENCH_CLIENTS (default "1 16 64"), CONVERSATIONS (8), TURNS (4).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:-$("$root/scripts/fetch-model.sh")}"
(cd "$root" && cargo build --release -p llorch-worker --bin llorch-worker --example serve-bench >&2 &&
    cargo build --release -p llorch-operator --example gateway-bench >&2)
worker="$root/target/release/llorch-worker"
serve_bench="$root/target/release/examples/serve-bench"
gw_bench="$root/target/release/examples/gateway-bench"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

wait_ready() {
    for _ in $(seq 600); do
        curl -fs "$1" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "$1 did not become ready" >&2
    return 1
}
start_worker() { # port threads
    "$worker" serve --model "$model" --host 127.0.0.1 --port "$1" --threads "$2" \
        --parallel 4 --queue-depth 128 --ctx-size 2048 >/dev/null 2>&1 &
    pids+=($!)
    wait_ready "http://127.0.0.1:$1/ready"
}
start_gateway() { # backends [flags]
    "$gw_bench" serve 127.0.0.1:18190 "bench=$1" "${@:2}" >/dev/null 2>&1 &
    pids+=($!)
    wait_ready "http://127.0.0.1:18190/readyz"
}
stop_all() {
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
}
metric() { # port name
    curl -fsS "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}

echo "### Overhead: straight to the worker vs through the gateway"
echo
echo "Medians of ${REPEAT:-3} alternating runs each, after one warm-up run."
echo
echo "| clients | direct tokens/s | gateway tokens/s | ratio | direct TTFT p50 ms | gateway TTFT p50 ms | added p50 ms | errors |"
echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
start_worker 18181 2
start_gateway 127.0.0.1:18181
sampling='{"temperature": 0, "model": "bench"}'
for clients in ${BENCH_CLIENTS:-1 16 64}; do
    "$serve_bench" http://127.0.0.1:18181 "$clients" 1 16 "$sampling" >/dev/null
    runs=()
    for _ in $(seq "${REPEAT:-3}"); do
        runs+=("$("$serve_bench" http://127.0.0.1:18181 "$clients" 1 16 "$sampling")")
        runs+=("$("$serve_bench" http://127.0.0.1:18190 "$clients" 1 16 "$sampling")")
    done
    python3 - "${runs[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(a) for a in sys.argv[1:]]
d, g = runs[0::2], runs[1::2]
med = lambda xs, k: statistics.median(x[k] for x in xs)
dt, gt = med(d, "tokens_per_sec"), med(g, "tokens_per_sec")
df, gf = med(d, "ttft_p50_seconds") * 1000, med(g, "ttft_p50_seconds") * 1000
errors = sum(x["errors"] for x in runs)
print(f"| {d[0]['clients']} | {dt:.1f} | {gt:.1f} | {gt / dt:.3f} | {df:.1f} | {gf:.1f} | {gf - df:+.1f} | {errors} |")
PY
done
stop_all

echo
echo "### Prefix affinity: multi-turn chat over two replicas"
echo
echo "| routing | turns | prompt tokens | from cache | share | TTFT p50 ms | TTFT mean ms | errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for mode in affinity least-load random; do
    start_worker 18181 1
    start_worker 18182 1
    case "$mode" in
        affinity) start_gateway 127.0.0.1:18181,127.0.0.1:18182; load_flags=() ;;
        least-load) start_gateway 127.0.0.1:18181,127.0.0.1:18182 --no-affinity; load_flags=() ;;
        random) start_gateway 127.0.0.1:18181,127.0.0.1:18182; load_flags=(--random-session) ;;
    esac
    out="$("$gw_bench" chat http://127.0.0.1:18190 bench "${CONVERSATIONS:-8}" "${TURNS:-4}" 4 "${load_flags[@]}")"
    tin=0
    cached=0
    for port in 18181 18182; do
        tin=$((tin + $(metric "$port" llorch_worker_tokens_in_total)))
        cached=$((cached + $(metric "$port" llorch_worker_tokens_cached_total)))
    done
    python3 - "$mode" "$out" "$tin" "$cached" <<'PY'
import json, sys
mode, out, tin, cached = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"| {mode} | {out['turns']} | {tin} | {cached} | {100 * cached / max(tin, 1):.0f}% | "
      f"{out['ttft_p50_seconds'] * 1000:.0f} | {out['ttft_mean_seconds'] * 1000:.0f} | {out['errors']} |")
PY
    stop_all
done
