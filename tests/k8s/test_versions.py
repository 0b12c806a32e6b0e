"""Pinned versions agree across pyproject.toml, the Dockerfiles, the package and the manifests."""

from __future__ import annotations

import re
import tomllib

import pytest

from sqltune import __version__
from sqltune.k8s import versions as v
from sqltune.serving.config import RAY_SERVE_ENV

from .conftest import ROOT

DOCKERFILES = {"gpu": ROOT / "docker/Dockerfile.gpu", "cpu": ROOT / "docker/Dockerfile.cpu"}


def pyproject_pin(package: str) -> str:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = [r for group in data["project"]["optional-dependencies"].values() for r in group]
    pins = {m.group(1) for r in reqs if (m := re.match(rf"^{re.escape(package)}(?:\[[^\]]*\])?==([\w.]+)$", r))}
    assert len(pins) == 1, f"expected one == pin of {package} in pyproject.toml, got {pins}"
    return pins.pop()


def test_package_pins_match_pyproject() -> None:
    assert v.RAY_VERSION == pyproject_pin("ray")
    assert v.TORCH_VERSION == pyproject_pin("torch")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["version"] == __version__


@pytest.mark.parametrize("flavor", sorted(DOCKERFILES))
def test_dockerfile_pins(flavor: str) -> None:
    text = DOCKERFILES[flavor].read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(froms) == 1, froms
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-(\w+)", froms[0])
    assert m, froms[0]
    assert m.group(1) == v.RAY_VERSION
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    min_py = tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", data["project"]["requires-python"]).groups())
    assert (int(m.group(2)), int(m.group(3))) >= min_py
    assert f"py{m.group(2)}{m.group(3)}" == v.PYTHON_TAG
    assert m.group(4) == (v.CUDA_TAG if flavor == "gpu" else "cpu")
    assert re.search(rf"^ARG TORCH_VERSION={re.escape(v.TORCH_VERSION)}$", text, re.M)
    index = re.search(r"^ARG TORCH_INDEX_URL=(\S+)$", text, re.M).group(1)
    assert index.endswith("/" + (v.CUDA_TAG if flavor == "gpu" else "cpu"))
    assert f"ray.__version__ == '{v.RAY_VERSION}'" in text
    extras = "train,eval,serve,postgres,k8s" + (",gpu" if flavor == "gpu" else "")  # gpu: Liger kernels
    assert f'"/app[{extras}]"' in text
    # the image tag documented in the Dockerfile is the one the manifests use
    assert (v.GPU_IMAGE if flavor == "gpu" else v.CPU_IMAGE) in text


def test_manifests_use_pinned_ray_and_image_tags(rendered) -> None:
    for overlay, objs in rendered.items():
        flavor = "gpu" if overlay == "gpu" else "cpu"
        expected_image = v.GPU_IMAGE if flavor == "gpu" else v.CPU_IMAGE
        for o in objs:
            if o["kind"] not in ("RayJob", "RayService"):
                continue
            cluster = o["spec"].get("rayClusterSpec") or o["spec"]["rayClusterConfig"]
            assert cluster["rayVersion"] == v.RAY_VERSION
            images = set(re.findall(r"image: (\S+)", str(o).replace("'image': '", "image: ").replace("'", " ")))
            assert images == {expected_image}, (overlay, images)
            tag = expected_image.split(":")[1]
            assert f"-ray{v.RAY_VERSION}-" in tag and tag.startswith(__version__)


def _containers(obj) -> list[dict]:
    """Every container of a rendered object, wherever its pod templates sit."""
    found = []
    if isinstance(obj, dict):
        if isinstance(obj.get("containers"), list):
            found += obj["containers"]
        for value in obj.values():
            found += _containers(value)
    elif isinstance(obj, list):
        for value in obj:
            found += _containers(value)
    return found


@pytest.mark.parametrize("flavor", sorted(DOCKERFILES))
def test_images_run_ray_serve_with_its_transport(flavor: str) -> None:
    text = DOCKERFILES[flavor].read_text()
    for key, value in RAY_SERVE_ENV.items():
        assert re.search(rf"^\s+{key}={value}\b", text, re.M), f"{DOCKERFILES[flavor].name}: ENV {key}={value}"


def test_ray_pods_run_ray_serve_with_its_transport(rendered) -> None:
    """Ray Serve reads its transport when its processes start: the pod environment is where it must be."""
    seen = 0
    for overlay, objs in rendered.items():
        for o in objs:
            if o["kind"] not in ("RayJob", "RayService"):
                continue
            for c in _containers(o["spec"]):
                env = {e["name"]: e.get("value") for e in c.get("env") or []}
                for key, value in RAY_SERVE_ENV.items():
                    assert env.get(key) == value, (overlay, o["metadata"]["name"], c["name"], key)
                seen += 1
    assert seen, "no Ray containers rendered"
