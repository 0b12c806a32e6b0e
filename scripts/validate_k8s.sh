#!/usr/bin/env bash
# Render every overlay and validate it offline (KubeRay CRDs + Kubernetes schemas), then lint with
# checkov and hadolint. The same checks run in pytest (tests/k8s), which also feeds checkov the pod
# templates extracted from the RayJob/RayService objects; this is the quick manual version.
#   bash scripts/validate_k8s.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KUBECTL="$ROOT/.venv-tools/bin/kubectl"; [[ -x "$KUBECTL" ]] || KUBECTL=kubectl
# The pinned KubeRay CRDs: ../shared, the fixtures cache, or downloaded (sqltune.fixtures).
export SQLTUNE_CRD_DIR="${SQLTUNE_CRD_DIR:-$(.venv/bin/python -m sqltune.fixtures fetch kuberay-crds | sed 's/^kuberay-crds: //')}"
.venv/bin/sqltune k8s generate --check
out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT
for overlay in k8s/overlays/*/; do
  name="$(basename "$overlay")"
  "$KUBECTL" kustomize "$overlay" > "$out/$name.yaml"
  echo "== $name"; .venv/bin/sqltune k8s validate "$out/$name.yaml"
done
.venv/bin/hadolint docker/Dockerfile.*
if [[ -x .venv-tools/bin/checkov ]]; then
  .venv-tools/bin/checkov -d "$out" --framework kubernetes --skip-download --compact --quiet
  .venv-tools/bin/checkov -d docker --framework dockerfile --skip-download --compact --quiet
else
  echo "checkov missing: run bash scripts/tools.sh" >&2; exit 1
fi
