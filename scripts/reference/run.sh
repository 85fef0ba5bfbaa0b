#!/usr/bin/env bash
# Runs llama_ref.py against the reference llama.cpp build, setting up (and
# caching) what it needs: the build, the sdist's Python bindings linked to
# it, and a venv with their dependencies. Not used by the tests.
#   scripts/reference/run.sh logits MODEL --tokens 1,2,3 --out FILE
#   scripts/reference/run.sh greedy MODEL --prompt TEXT --n 32
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${LLORCH_CACHE:-$HOME/.cache/llorch}"
build="$("$here/../llama-cpp-build.sh")"
"$here/../llama-cpp-src.sh" >/dev/null
py="$cache/llama.cpp/py-0.3.36"
ln -sfn "$build/bin" "$py/llama_cpp/lib"
venv="$cache/llama.cpp/ref-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
fi
export LLAMA_CPP_LIB_PATH="$build/bin"
export LD_LIBRARY_PATH="$build/bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PYTHONPATH="$py" exec "$venv/bin/python" "$here/llama_ref.py" "$@"
