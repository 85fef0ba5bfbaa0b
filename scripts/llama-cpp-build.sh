#!/usr/bin/env bash
# Build the reference llama.cpp (from the llama-cpp-python 0.3.36 sdist) with
# its native CPU optimizations, as every comparison uses it: native detection
# off, AVX2, FMA and F16C on, and each optional x86 extension (AVX-VNNI,
# AVX-512 F/BW/DQ/VL, VBMI, VNNI, BF16) on exactly when /proc/cpuinfo lists
# it, since a build with an extension the CPU lacks dies of SIGILL. AMX is
# always off (AMX instructions fault on these machines). Prints the build
# directory, which is keyed by the extensions chosen.
#
# Not part of `make test`: the tests use committed reference files. This is
# for regenerating them (scripts/gen-reference.sh) and for benchmarks.
# Cached under $LLORCH_CACHE/llama.cpp/build-<version>; about 15 minutes on
# 2 cores the first time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${LLORCH_CACHE:-$HOME/.cache/llorch}"
src="$("$here/llama-cpp-src.sh")"
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
has() { case "$flags" in *" $1 "*) echo ON ;; *) echo OFF ;; esac; }
avx512=$(has avx512f)
[ "$avx512" = ON ] && for f in avx512bw avx512dq avx512vl; do [ "$(has $f)" = ON ] || avx512=OFF; done
on_if_avx512() { [ "$avx512" = ON ] && has "$1" || echo OFF; }
avx_vnni=$(has avx_vnni)
avx512_vbmi=$(on_if_avx512 avx512vbmi)
avx512_vnni=$(on_if_avx512 avx512_vnni)
avx512_bf16=$(on_if_avx512 avx512_bf16)
key="vnni$avx_vnni-512$avx512-vbmi$avx512_vbmi-512vnni$avx512_vnni-bf16$avx512_bf16"
build="$cache/llama.cpp/build-0.3.36-${key,,}"
tools="$cache/llama.cpp/tools-venv"
targets=(llama llama-quantize llama-bench llama-server)

if [ -f "$build/.complete" ]; then
    echo "$build"
    exit 0
fi

if [ ! -x "$tools/bin/cmake" ]; then
    python3 -m venv "$tools" >&2
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check cmake ninja >&2
fi
export PATH="$tools/bin:$PATH"

cmake -S "$src" -B "$build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DGGML_NATIVE=OFF \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DGGML_AVX512="$avx512" -DGGML_AVX512_VBMI="$avx512_vbmi" \
    -DGGML_AVX512_VNNI="$avx512_vnni" -DGGML_AVX512_BF16="$avx512_bf16" \
    -DGGML_AVX_VNNI="$avx_vnni" \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DGGML_OPENMP=ON >&2
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" >&2
touch "$build/.complete"
echo "$build"
