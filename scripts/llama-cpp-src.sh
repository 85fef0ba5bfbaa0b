#!/usr/bin/env bash
# Obtain llama.cpp's source tree from the PyPI sdist of llama-cpp-python
# (vendor/llama.cpp inside it) and print its path. Cached under
# $LLORCH_CACHE/llama.cpp/src-<version>; a second run does nothing.
#
# Used for the tokenizer test vectors (models/ggml-vocab-*.gguf with their
# .inp/.out files) and, by the reference scripts, to build llama.cpp. The
# sdist's Python bindings (pure ctypes) are kept beside it in py-<version>,
# for the reference scripts.
set -euo pipefail
version=0.3.36
cache="${LLORCH_CACHE:-$HOME/.cache/llorch}"
dest="$cache/llama.cpp/src-$version"
py="$cache/llama.cpp/py-$version"
if [ -f "$dest/.complete" ] && [ -d "$py/llama_cpp" ]; then
    echo "$dest"
    exit 0
fi

mkdir -p "$cache/llama.cpp"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# `pip download` of an sdist prepares its metadata, which needs the build
# backend; a throwaway venv keeps that out of the project's environment.
python3 -m venv "$work/venv" >&2
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    scikit-build-core cmake >&2
"$work/venv/bin/python" -m pip download --quiet --disable-pip-version-check \
    --no-deps --no-build-isolation --no-binary=:all: -d "$work/dl" \
    "llama-cpp-python==$version" >&2

tar -xzf "$work"/dl/llama_cpp_python-$version.tar.gz -C "$work"
rm -rf "$dest" "$py"
mv "$work/llama_cpp_python-$version/vendor/llama.cpp" "$dest"
mkdir -p "$py"
mv "$work/llama_cpp_python-$version/llama_cpp" "$py/llama_cpp"
touch "$dest/.complete"
echo "$dest"
