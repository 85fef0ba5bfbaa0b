#!/usr/bin/env bash
# `make bench-cpu`: llorch-worker bench against llama-bench (the reference
# llama.cpp build, scripts/llama-cpp-build.sh) on the same GGUF files, with
# the same threads, alternating the two tools run by run, and a table of
# medians, ratios and peak resident memory. Models: Gemma 3 270M Q4_K_M,
# random-weight Llama models in the 1B shape (Q4_0, Q8_0, Q4_K, Q5_K, Q3_K,
# Q2_K, IQ4_XS, F16), a Qwen 3 in the 1.7B shape (Q4_K) and a Qwen 3 MoE
# in the 30B-A3B shape cut to 12 layers (Q4_K) and a gpt-oss in the 20B
# shape cut to 6 layers (MXFP4 experts, Q8_0 elsewhere), a Qwen 3.5 in a
# 2B shape (three of four layers gated delta nets; Q4_K) and a Gemma 4 in
# the E2B shape (Q4_K), written by
# `llorch-worker synth` (cached). Each file holds one type in every matrix:
# the K-quant rows stand for the mixes named after them (Q5_K_M, Q3_K_M,
# Q4_K_M), whose bulk is that type.
#
#   scripts/bench-cpu.sh [RUNS]        env: THREADS (default: cores), MODELS
set -euo pipefail
cd "$(dirname "$0")/.."
export LLORCH_CACHE="${LLORCH_CACHE:-$HOME/.cache/llorch}"
runs="${1:-3}"
threads="${THREADS:-$(nproc)}"
build="$(scripts/llama-cpp-build.sh)"
bench="$build/bin/llama-bench"
cargo build --quiet --release --locked -p llorch-worker
worker=target/release/llorch-worker
gemma="$LLORCH_CACHE/models/gemma-3-270m-q4_k_m.gguf"
scripts/fetch-model.sh "$gemma" >/dev/null
dir="$LLORCH_CACHE/bench"
mkdir -p "$dir"
models=("$gemma")
for ty in Q4_0 Q8_0 Q4_K Q5_K Q3_K Q2_K IQ4_XS F16; do
    m="$dir/llama-1b-$ty.gguf"
    [ -f "$m" ] || "$worker" synth --arch llama --shape 1b --type "$ty" --out "$m" >&2
    models+=("$m")
done
m="$dir/qwen3-1.7b-Q4_K.gguf"
[ -f "$m" ] || "$worker" synth --arch qwen3 --shape 1.7b --type Q4_K --out "$m" >&2
models+=("$m")
m="$dir/qwen3moe-30b-a3b-12l-Q4_K.gguf"
[ -f "$m" ] || "$worker" synth --arch qwen3moe --shape 30b-a3b --type Q4_K --out "$m" >&2
models+=("$m")
m="$dir/gpt-oss-20b-6l-MXFP4.gguf"
[ -f "$m" ] || "$worker" synth --arch gpt-oss --shape 20b --type MXFP4 --out "$m" >&2
models+=("$m")
m="$dir/qwen35-2b-Q4_K.gguf"
[ -f "$m" ] || "$worker" synth --arch qwen35 --shape 2b --type Q4_K --out "$m" >&2
models+=("$m")
m="$dir/gemma4-e2b-Q4_K.gguf"
[ -f "$m" ] || "$worker" synth --arch gemma4 --shape e2b --type Q4_K --out "$m" >&2
models+=("$m")
[ -n "${MODELS:-}" ] && read -r -a models <<< "$MODELS"

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
# The machine's read bandwidth with the same threads: decode's physical
# limit is this divided by the bytes a token reads.
cargo build --quiet --release --locked -p worker-compute --example read_bandwidth
bandwidth="$(target/release/examples/read_bandwidth "$threads")"
for m in "${models[@]}"; do
    "$worker" inspect --json "$m" > "$out/$(basename "$m" .gguf).inspect"
done
echo "llama.cpp: $bench; threads: $threads; runs: $runs; read bandwidth: $bandwidth GB/s" >&2
for m in "${models[@]}"; do
    name="$(basename "$m" .gguf)"
    for r in $(seq "$runs"); do
        echo "[$name] run $r/$runs" >&2
        /usr/bin/time -f '%M' -o "$out/$name.llorch.rss.$r" \
            "$worker" bench --model "$m" -p 512 -n 128 --threads "$threads" --reps 1 --json \
            > "$out/$name.llorch.$r"
        LD_LIBRARY_PATH="$build/bin" /usr/bin/time -f '%M' -o "$out/$name.llama.rss.$r" \
            "$bench" -m "$m" -p 512 -n 128 -t "$threads" -r 1 -o json \
            > "$out/$name.llama.$r" 2>/dev/null
    done
done

python3 - "$out" "$runs" "$bandwidth" "${models[@]}" <<'PY'
import json, os, statistics, sys
out, runs, bandwidth, models = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]


def bytes_per_token(name):
    """The weight bytes one decoded token reads: every matrix, the output
    projection included (the embedding table when tied), one embedding row
    otherwise, and of stacked experts only the share a token uses."""
    info = json.load(open(f"{out}/{name}.inspect"))
    meta = {m["key"]: m.get("value") for m in info["metadata"]}
    arch = info["architecture"]
    used, experts = meta.get(f"{arch}.expert_used_count"), meta.get(f"{arch}.expert_count")
    names = {t["name"] for t in info["tensors"]}
    total = 0.0
    for t in info["tensors"]:
        if t["name"] == "token_embd.weight" and "output.weight" in names:
            total += t["bytes"] / t["shape"][-1]
        elif t["name"] == "position_embd.weight":
            total += t["bytes"] / t["shape"][-1]
        elif "_exps." in t["name"] and used and experts:
            total += t["bytes"] * used / experts
        else:
            total += t["bytes"]
    return total


print(f"Read bandwidth {bandwidth:.1f} GB/s; decode bound = bandwidth / bytes a token reads.")
print("| model | test | llorch t/s | llama.cpp t/s | ratio | llorch peak RSS | llama.cpp peak RSS |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
shares = []
for m in models:
    name = os.path.basename(m)[:-5]
    ours, theirs = {"pp512": [], "tg128": []}, {"pp512": [], "tg128": []}
    rss_ours, rss_theirs = [], []
    for r in range(1, runs + 1):
        for row in json.load(open(f"{out}/{name}.llorch.{r}"))["results"]:
            ours[row["test"]].append(row["tokens_per_sec"])
        for row in json.load(open(f"{out}/{name}.llama.{r}")):
            test = f"pp{row['n_prompt']}" if row["n_gen"] == 0 else f"tg{row['n_gen']}"
            theirs[test].append(row["avg_ts"])
        rss_ours.append(int(open(f"{out}/{name}.llorch.rss.{r}").read().split()[-1]))
        rss_theirs.append(int(open(f"{out}/{name}.llama.rss.{r}").read().split()[-1]))
    for test in ("pp512", "tg128"):
        a, b = statistics.median(ours[test]), statistics.median(theirs[test])
        print(f"| {name} | {test} | {a:.1f} | {b:.1f} | {a / b:.2f} | "
              f"{max(rss_ours) / 1024:.0f} MiB | {max(rss_theirs) / 1024:.0f} MiB |")
    bound = bandwidth * 1e9 / bytes_per_token(name)
    shares.append((name, bound, statistics.median(ours["tg128"]), statistics.median(theirs["tg128"])))
print()
print("| model | decode bound t/s | llorch tg128 share | llama.cpp tg128 share |")
print("| --- | ---: | ---: | ---: |")
for name, bound, a, b in shares:
    print(f"| {name} | {bound:.1f} | {100 * a / bound:.0f}% | {100 * b / bound:.0f}% |")
PY
