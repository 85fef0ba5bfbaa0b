#!/usr/bin/env bash
# Create (or reuse) the project's Python virtual environment with the packages
# listed in scripts/requirements.txt, and print its path. Cached under
# $LLORCH_CACHE/venv; it is rebuilt when the requirements change.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${LLORCH_CACHE:-$HOME/.cache/llorch}"
venv="$cache/venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
    echo "$want" > "$stamp"
fi
echo "$venv"
