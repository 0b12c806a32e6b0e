"""checkov (installed by scripts/tools.sh into .venv-tools) finds no failing check in the rendered
overlays, in the pod templates inside the KubeRay custom resources, or in the Dockerfiles.

checkov knows nothing of RayJob/RayService, so their pod templates are extracted as Pods (with the
template's annotations, which carry the justified ``checkov.io/skipN`` suppressions). Offline checkov
has no severities (those come from its platform), so the bar is stricter than "no HIGH/CRITICAL":
no failed check at all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sqltune.k8s.validate import pod_templates

from .conftest import ROOT, TOOLS


def checkov() -> str:
    exe = TOOLS / "checkov"
    if not exe.is_file():
        pytest.fail("checkov is missing: run `bash scripts/tools.sh` (installs it into .venv-tools)")
    return str(exe)


def scan(directory: Path, *frameworks: str) -> list[dict]:
    out = subprocess.run(
        [checkov(), "-d", str(directory), "--framework", *frameworks, "--skip-download",
         "-o", "json"],
        capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(directory), "BC_SKIP_MAPPING": "TRUE",
             "LOG_LEVEL": "ERROR"},
    )
    assert out.returncode in (0, 1), out.stderr[-3000:]
    data = json.loads(out.stdout or "[]")
    reports = data if isinstance(data, list) else [data]
    return [r for r in reports if isinstance(r, dict) and "results" in r]


def failed(reports: list[dict]) -> list[str]:
    return [
        f"{c['check_id']} {c['check_name']} in {c['resource']} ({c['file_path']})"
        for r in reports for c in r["results"]["failed_checks"]
    ]


def write_scan_dir(tmp: Path, rendered: dict[str, list[dict]]) -> None:
    for overlay, objs in rendered.items():
        pods = [pod for o in objs for _, pod in pod_templates(o)]
        for i, pod in enumerate(pods):
            pod["metadata"]["name"] = f"{overlay}-{i}-{pod['metadata']['name']}"[:63]
        (tmp / f"{overlay}.yaml").write_text(yaml.safe_dump_all(objs + pods, sort_keys=False))


def test_checkov_clean(rendered, tmp_path: Path) -> None:
    k8s_dir = tmp_path / "k8s"
    k8s_dir.mkdir()
    write_scan_dir(k8s_dir, rendered)
    reports = scan(k8s_dir, "kubernetes")
    assert reports, "checkov produced no report"
    assert failed(reports) == []
    pods = sum(1 for r in reports for c in r["results"]["passed_checks"] if c["resource"].startswith("Pod."))
    assert pods > 100, "checkov did not look at the extracted pod templates"
    for r in reports:
        for c in r["results"]["skipped_checks"]:
            assert len(c["check_result"].get("suppress_comment", "")) > 20, f"unjustified skip {c['check_id']}"

    docker_dir = tmp_path / "docker"
    shutil.copytree(ROOT / "docker", docker_dir)
    reports = scan(docker_dir, "dockerfile")
    assert reports and failed(reports) == []
    assert sum(r["summary"]["passed"] for r in reports) > 0


def test_checkov_catches_an_insecure_pod(rendered, tmp_path: Path) -> None:
    obj = next(o for o in rendered["gpu"] if o["kind"] == "RayJob")
    _, pod = next(iter(pod_templates(obj)))
    pod["metadata"]["annotations"] = {}
    c = pod["spec"]["containers"][0]
    c["securityContext"] = {"privileged": True, "allowPrivilegeEscalation": True, "runAsUser": 0}
    pod["spec"]["securityContext"] = {}
    pod["spec"]["hostNetwork"] = True
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(pod))
    ids = {f.split()[0] for f in failed(scan(tmp_path, "kubernetes"))}
    assert {"CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_19"} <= ids, ids
