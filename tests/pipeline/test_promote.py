"""Promotion without a cluster: the RayService patch (dry run from a rendered overlay) and bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from sqltune import cli
from sqltune.errors import ConfigError
from sqltune.pipeline.promote import kubernetes_patch, replace_model_uri

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cpu_dev(tmp_path_factory) -> Path:
    import sys

    sys.path.insert(0, str(ROOT))
    from tests.k8s.conftest import kubectl_path

    out = subprocess.run(
        [kubectl_path(), "kustomize", str(ROOT / "k8s/overlays/cpu-dev")],
        capture_output=True,
        text=True,
        check=True,
    )
    path = tmp_path_factory.mktemp("render") / "cpu-dev.yaml"
    path.write_text(out.stdout)
    return path


def test_dry_run_prints_the_patch_of_model_uri_only(cpu_dev: Path, capsys) -> None:
    code = cli.main(
        [
            "promote",
            "--model-uri",
            "s3://sqltune/runs/tiny-candidate/merged",
            "--target",
            "kubernetes",
            "--dry-run",
            "--from",
            str(cpu_dev),
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "merge patch for RayService sqltune/sqltune" in out.out
    patch = yaml.safe_load(out.out)
    assert list(patch) == ["spec"] and list(patch["spec"]) == ["serveConfigV2"]
    new = yaml.safe_load(patch["spec"]["serveConfigV2"])
    svc = [o for o in yaml.safe_load_all(cpu_dev.read_text()) if o and o["kind"] == "RayService"][0]
    old = yaml.safe_load(svc["spec"]["serveConfigV2"])
    assert old["applications"][0]["args"]["model_uri"] == "s3://sqltune/runs/tiny/merged"
    old["applications"][0]["args"]["model_uri"] = "s3://sqltune/runs/tiny-candidate/merged"
    assert new == old
    assert "s3://sqltune/runs/tiny/merged -> s3://sqltune/runs/tiny-candidate/merged" in out.err + out.out


def test_patch_names_missing_app() -> None:
    svc = {"metadata": {"name": "s"}, "spec": {"serveConfigV2": "applications:\n- name: other\n  args: {}\n"}}
    with pytest.raises(
        ConfigError, match=r"no application 'sqltune' \(it has \['other'\]\); set promote.app"
    ):
        kubernetes_patch(svc, "sqltune", "s3://b/m")
    cfg, prev = replace_model_uri({"applications": [{"name": "a", "args": {"model_uri": "x"}}]}, "a", "y")
    assert prev == "x" and cfg["applications"][0]["args"]["model_uri"] == "y"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "kubernetes", "--from", "{f}"], "add --dry-run"),
        (["--target", "kubernetes", "--dry-run", "--from", "/nonexistent.yaml"], "no such file"),
        (
            ["--target", "kubernetes", "--dry-run", "--from", "{f}", "--rayservice", "nope"],
            "no RayService named 'nope'",
        ),
        (["--target", "local", "--address", "127.0.0.1:8265"], "promote.address: no Ray dashboard address"),
    ],
)
def test_bad_input_exits_2(cpu_dev: Path, capsys, monkeypatch, argv, message) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("SQLTUNE_SERVE_ADDRESS", raising=False)
    argv = [a.format(f=cpu_dev) for a in argv]
    code = cli.main(["promote", "--model-uri", "s3://sqltune/runs/x/merged", *argv])
    assert code == 2 and message in capsys.readouterr().err
