#!/usr/bin/env bash
# Regenerates the llama.cpp reference files of the model conformance tests
# (crates/worker-models/tests/fixtures/). Not run in CI: the tests use the
# committed files. Needs the reference llama.cpp (built on first use, about
# 15 minutes) and a release build of llorch-worker.
#
# For each architecture and weight type, `llorch-worker synth` writes the
# random-weight conformance model (and llama-quantize its Q4_K_M form) (deterministic: same bytes every time, so
# the tests can write it again themselves), and llama.cpp evaluates the
# prompt below; its logits at every position are stored (little-endian).
# Plain-float models use an f32 KV cache, quantized ones llama.cpp's default
# f16 cache. llama.cpp runs the prompt in batches of 16 tokens: its matrix
# products for larger batches accumulate in another order, which moves its
# own logits by up to 1e-5 NMSE. For Gemma 3 270M the greedy continuations of five prompts and
# the prompts' last-position logits (as f16) are stored, with how far
# llama.cpp moves from itself when the prompt runs token by token (the
# test's bounds).
#
# ONLY="qwen3 llama:IQ4_NL" limits the run to those architectures (every
# type, their llama-quantize files included) and architecture:type pairs,
# skipping the RoPE, Q4_K_M-only and Gemma 3 270M parts unless named
# (ONLY="rope q4_k_m gemma270m").
set -euo pipefail
want() { # want ARCH [TYPE]
    [ -z "${ONLY:-}" ] && return 0
    case " $ONLY " in *" $1 "*|*" $1:${2:-} "*) return 0 ;; esac
    return 1
}
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/crates/worker-models/tests/fixtures"
ref="$root/scripts/reference/run.sh"
# LLORCH_WORKER: a llorch-worker binary to use instead of a release build.
worker="${LLORCH_WORKER:-$root/target/release/llorch-worker}"
cache="${LLORCH_CACHE:-$HOME/.cache/llorch}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

[ -n "${LLORCH_WORKER:-}" ] || (cd "$root" && cargo build --release -p llorch-worker >&2)
mkdir -p "$out"

# BOS, then 127 ids spread over the vocabulary (512 tokens).
tokens="1$(for i in $(seq 1 127); do printf ',%d' $(( (i * 197 + 3) % 509 + 3 )); done)"
# The first five architectures with five types each; the later ones with F32
# and Q4_K (their quantized mix below covers Q6_K too); gpt-oss with F32 and
# MXFP4, its experts' type (the rest of its synthetic model stays F32).
new_archs="qwen3 gemma2 mistral3 smollm3 olmo2 granite qwen3moe gpt-oss qwen35 qwen35moe gemma4"
for arch in llama qwen2 phi3 gpt2 gemma3 $new_archs; do
    types="F32 Q8_0 Q4_0 Q4_K Q6_K"
    case " $new_archs " in *" $arch "*) types="F32 Q4_K" ;; esac
    [ "$arch" = gpt-oss ] && types="F32 MXFP4"
    if [ "$arch" = llama ]; then
        types="$types F16 BF16 Q4_1 Q5_0 Q5_1 Q5_K Q2_K Q3_K IQ4_NL IQ4_XS MXFP4"
    fi
    for ty in $types; do
        want "$arch" "$ty" || continue
        # Plain types: f32 cache, f32 logits; quantized: f16 cache, and f16
        # logits, which is ample for their NMSE limit and halves the files.
        # Gemma 4's F32 logits are stored as f16 too, to keep the fixtures
        # small (f16 rounding moves them by about 1e-7 NMSE).
        kv=f16 fmt=--f16 ext=logits16
        case "$arch:$ty" in
            gemma4:F32) kv=f32 ;;
            *:F32|*:F16|*:BF16) kv=f32 fmt= ext=logits ;;
        esac
        "$worker" synth --arch "$arch" --type "$ty" --out "$tmp/m.gguf" >/dev/null
        "$ref" logits "$tmp/m.gguf" --tokens "$tokens" --out "$out/$arch-$ty.$ext" --kv "$kv" --ctx 256 $fmt >/dev/null
        echo "$arch $ty ($kv cache)" >&2
    done
done
echo "$tokens" > "$out/tokens.txt"

# Mixtures of experts: Qwen 3 MoE (in the loops above), a Llama with
# experts and Gemma 4 with experts beside its dense feed-forward (their
# `moe` shapes), F32 and Q4_K (Gemma 4's F32 logits as f16, as above),
# and the Llama as llama-quantize's Q4_K_M (Gemma 4's would not fit the
# fixtures' size; ONLY="gemma4-moe:Q4_K_M" writes it all the same).
for variant in llama-moe gemma4-moe; do
    arch="${variant%-moe}"
    for ty in F32 Q4_K; do
        want "$variant" "$ty" || continue
        kv=f16 fmt=--f16 ext=logits16
        [ "$ty" = F32 ] && kv=f32
        [ "$variant:$ty" = llama-moe:F32 ] && fmt= ext=logits
        "$worker" synth --arch "$arch" --shape moe --type "$ty" --out "$tmp/m.gguf" >/dev/null
        "$ref" logits "$tmp/m.gguf" --tokens "$tokens" --out "$out/$variant-$ty.$ext" --kv "$kv" --ctx 256 $fmt >/dev/null
        echo "$variant $ty ($kv cache)" >&2
    done
    q4_k_m=no
    case " ${ONLY:-} " in *" $variant:Q4_K_M "*) q4_k_m=yes ;; esac
    [ "$variant" = llama-moe ] && { want q4_k_m || want "$variant" Q4_K_M; } && q4_k_m=yes
    if [ "$q4_k_m" = yes ]; then
        bin="$("$root/scripts/llama-cpp-build.sh")/bin"
        "$worker" synth --arch "$arch" --shape moe --type F32 --out "$tmp/f32.gguf" >/dev/null
        LD_LIBRARY_PATH="$bin" "$bin/llama-quantize" "$tmp/f32.gguf" "$out/$variant-Q4_K_M.gguf" Q4_K_M >/dev/null 2>&1
        "$ref" logits "$out/$variant-Q4_K_M.gguf" --tokens "$tokens" --out "$out/$variant-Q4_K_M.logits16" --kv f16 --ctx 256 --f16 >/dev/null
        echo "$variant Q4_K_M (llama-quantize, f16 cache)" >&2
    fi
done

# RoPE scalings, on F32 models with an f32 cache; the logits as f16. The
# context is 256, so the LongRoPE variants pick their long (original 128)
# or short (original 256) factors.
for pair in llama:yarn qwen2:yarn gemma3:linear phi3:longrope-long phi3:longrope-short; do
    want rope || continue
    arch="${pair%%:*}" scaling="${pair#*:}"
    "$worker" synth --arch "$arch" --type F32 --rope-scaling "$scaling" --out "$tmp/m.gguf" >/dev/null
    "$ref" logits "$tmp/m.gguf" --tokens "$tokens" --out "$out/$arch-$scaling-F32.logits16" --kv f32 --ctx 256 --f16 >/dev/null
    echo "$arch $scaling (f32 cache)" >&2
done

# Q4_K_M as llama-quantize makes it (its Q4_K/Q6_K mix, from the F32
# model's weights): the one model file per architecture that is committed,
# since the tests cannot make it without llama.cpp.
quantize="$("$root/scripts/llama-cpp-build.sh")/bin/llama-quantize"
for arch in llama qwen2 phi3 gpt2 gemma3 $new_archs; do
    # gpt-oss is released as MXFP4_MOE (below), not Q4_K_M; its Q4_K_M file
    # would take 2.6 MB of the fixture budget for a mix no one ships.
    [ "$arch" = gpt-oss ] && continue
    want q4_k_m || want "$arch" Q4_K_M || continue
    "$worker" synth --arch "$arch" --type F32 --out "$tmp/f32.gguf" >/dev/null
    LD_LIBRARY_PATH="$(dirname "$quantize")" "$quantize" "$tmp/f32.gguf" "$out/$arch-Q4_K_M.gguf" Q4_K_M >/dev/null 2>&1
    "$ref" logits "$out/$arch-Q4_K_M.gguf" --tokens "$tokens" --out "$out/$arch-Q4_K_M.logits16" --kv f16 --ctx 256 --f16 >/dev/null
    echo "$arch Q4_K_M (llama-quantize, f16 cache)" >&2
done

# gpt-oss as its released files are: llama-quantize's MXFP4_MOE (experts
# MXFP4, every other matrix Q8_0), from the F32 model's weights; committed.
if want q4_k_m || want gpt-oss MXFP4_MOE; then
    "$worker" synth --arch gpt-oss --type F32 --out "$tmp/f32.gguf" >/dev/null
    LD_LIBRARY_PATH="$(dirname "$quantize")" "$quantize" "$tmp/f32.gguf" "$out/gpt-oss-MXFP4_MOE.gguf" MXFP4_MOE >/dev/null 2>&1
    "$ref" logits "$out/gpt-oss-MXFP4_MOE.gguf" --tokens "$tokens" --out "$out/gpt-oss-MXFP4_MOE.logits16" --kv f16 --ctx 256 --f16 >/dev/null
    echo "gpt-oss MXFP4_MOE (llama-quantize, f16 cache)" >&2
fi

want gemma270m || { echo "wrote $out" >&2; exit 0; }
gemma="$("$root/scripts/fetch-model.sh")"
: > "$out/gemma3-270m-greedy.jsonl"
i=0
while IFS= read -r prompt; do
    "$ref" greedy "$gemma" --prompt "$prompt" --n 32 --spread-batch 1 --logits-out "$out/gemma3-270m-prompt$i.f16" \
        >> "$out/gemma3-270m-greedy.jsonl"
    i=$((i + 1))
done < "$root/crates/worker-models/tests/gemma_prompts.txt"
echo "wrote $out" >&2
