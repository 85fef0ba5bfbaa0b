#!/usr/bin/env bash
# The Helm chart's checks (lint, renders with default and other values, the
# values schema, and drift of manifests/install.yaml and the chart's CRD).
# Offline and quick: Helm runs in process from the project's venv
# (helm-python-sdk); no helm binary and no cluster.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="${LLORCH_PYTHON:-$("$root/scripts/python-env.sh")/bin/python}"
exec "$python" "$root/tests/chart/check.py" "$@"
