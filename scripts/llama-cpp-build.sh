#!/usr/bin/env bash
# Build the reference llama.cpp (from the llama-cpp-python 0.3.36 sdist) with
# the one fixed CPU configuration every comparison uses: native detection off;
# AVX2, FMA, F16C, AVX-512 (F/BW/DQ/VL, VBMI), VNNI and BF16 on; AMX off (AMX
# instructions fault on these machines). Prints the build directory.
#
# Not part of `make test`: the tests use committed reference files. This is
# for regenerating them (scripts/gen-reference.sh) and for benchmarks.
# Cached under $LLORCH_CACHE/llama.cpp/build-<version>; about 15 minutes on
# 2 cores the first time.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${LLORCH_CACHE:-$HOME/.cache/llorch}"
src="$("$here/llama-cpp-src.sh")"
build="$cache/llama.cpp/build-0.3.36"
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
    -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON \
    -DGGML_AVX_VNNI=ON \
    -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
    -DGGML_OPENMP=ON >&2
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}" >&2
touch "$build/.complete"
echo "$build"
