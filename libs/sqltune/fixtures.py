"""Pinned files from outside the repository (the KubeRay CRDs, the Spider dev set), found or fetched in one place.

:func:`locate` looks, in order, in

1. the shared folder: ``$SQLTUNE_SHARED_DIR``, else ``../shared`` beside the repository (as CI lays it out);
2. the cache: ``$SQLTUNE_FIXTURES_CACHE``, else ``~/.cache/sqltune/fixtures/<name>/``;
3. the pinned upstream copy (or ``$SQLTUNE_FIXTURES_MIRROR/<name>/<file>``), downloaded into the cache, unless
   ``SQLTUNE_FIXTURES_OFFLINE=1``.

Every file is checked against its pinned sha256 wherever it comes from; a download lands in the cache only
after it matched (temp file, then rename). When no copy can be had, :class:`FixtureUnavailable` says what was
tried and how to fix it.

    python -m sqltune.fixtures fetch [NAME ...]     # fill the cache (e.g. once, while online)
    python -m sqltune.fixtures where [NAME ...]     # print where each one is found
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sqltune.errors import SqltuneError

REPO_ROOT = Path(__file__).resolve().parents[2]
DOWNLOAD_TIMEOUT_S = 30.0


class FixtureUnavailable(SqltuneError):
    """No verified copy of a pinned fixture could be found or downloaded."""


@dataclass(frozen=True)
class PinnedFile:
    name: str
    url: str
    sha256: str


@dataclass(frozen=True)
class Fixture:
    name: str
    shared_subdir: str  # where the files sit under the shared folder
    what: str
    files: tuple[PinnedFile, ...]


_KUBERAY = "https://raw.githubusercontent.com/ray-project/kuberay/v1.7.0/ray-operator/config/crd/bases"
_SPIDER = ("https://raw.githubusercontent.com/taoyds/spider/b7b5b8c890cd30e35427348bb9eb8c6d1350ca7c/"
           "evaluation_examples/examples")

FIXTURES: dict[str, Fixture] = {
    "kuberay-crds": Fixture(
        "kuberay-crds", "k8s/crds", "KubeRay v1.7.0 CustomResourceDefinitions (RayJob, RayService, RayCluster)",
        (
            PinnedFile("ray.io_rayjobs.yaml", f"{_KUBERAY}/ray.io_rayjobs.yaml",
                       "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5"),
            PinnedFile("ray.io_rayservices.yaml", f"{_KUBERAY}/ray.io_rayservices.yaml",
                       "0a8fc325e6e22b9231c1f282b309555e2ecf94227ca20a03df3d1d9a403907ab"),
            PinnedFile("ray.io_rayclusters.yaml", f"{_KUBERAY}/ray.io_rayclusters.yaml",
                       "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1"),
        ),
    ),
    "spider-dev": Fixture(
        "spider-dev", "datasets/spider", "Spider 1.0 dev split (dev.json) and schemas (tables.json)",
        (
            PinnedFile("dev.json", f"{_SPIDER}/dev.json",
                       "30d64a3fccde493226df79687aed9e4a1c0129525baf44f29c0573d914d758a4"),
            PinnedFile("tables.json", f"{_SPIDER}/tables.json",
                       "61bb20aa401f03164e2d7f3b16509b7b5f79cc9c943ca7bd159046df1159e2ed"),
        ),
    ),
}


def _fixture(name: str) -> Fixture:
    if name not in FIXTURES:
        raise FixtureUnavailable(f"unknown fixture {name!r}; known: {', '.join(sorted(FIXTURES))}")
    return FIXTURES[name]


def shared_dirs() -> list[Path]:
    """Candidate shared folders, in the order they are searched."""
    env = os.environ.get("SQLTUNE_SHARED_DIR")
    if env:
        return [Path(env)]
    return [REPO_ROOT.parent / "shared", REPO_ROOT / "shared"]


def cache_dir(name: str) -> Path:
    base = os.environ.get("SQLTUNE_FIXTURES_CACHE") or Path.home() / ".cache" / "sqltune" / "fixtures"
    return Path(base) / name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _complete(folder: Path, fixture: Fixture) -> str | None:
    """None if every pinned file is in ``folder`` with its sha256, else why not (naming the folder)."""
    if not folder.is_dir():
        return f"no folder {folder}"
    for f in fixture.files:
        path = folder / f.name
        if not path.is_file():
            return f"{path} is missing"
        actual = sha256_of(path)
        if actual != f.sha256:
            return f"{path} has sha256 {actual}, expected {f.sha256}"
    return None


def _url(fixture: Fixture, f: PinnedFile) -> str:
    mirror = os.environ.get("SQLTUNE_FIXTURES_MIRROR")
    return f"{mirror.rstrip('/')}/{fixture.name}/{f.name}" if mirror else f.url


def _download(fixture: Fixture, dest: Path) -> None:
    """Fetch every pinned file into ``dest``; each one appears there only once its sha256 matched."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in fixture.files:
        target = dest / f.name
        if target.is_file() and sha256_of(target) == f.sha256:
            continue
        url = _url(fixture, f)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{f.name}.", dir=dest)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
                while block := resp.read(1 << 20):
                    out.write(block)
            actual = sha256_of(tmp)
            if actual != f.sha256:
                raise FixtureUnavailable(
                    f"{url} has sha256 {actual}, expected {f.sha256} (pinned for {fixture.name}); "
                    "the upstream file changed or the download was corrupted: nothing was cached"
                )
            os.replace(tmp, target)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise FixtureUnavailable(f"downloading {url} failed ({reason})") from None
        finally:
            tmp.unlink(missing_ok=True)


def _fix_hint(fixture: Fixture) -> str:
    return (
        f"fix: put the files in ../shared/{fixture.shared_subdir}/ beside the repository (or set "
        f"SQLTUNE_SHARED_DIR), or run `python -m sqltune.fixtures fetch {fixture.name}` once while online"
    )


def locate(name: str, *, download: bool | None = None) -> Path:
    """The folder holding every pinned file of fixture ``name``, each verified against its sha256.

    ``download=None`` downloads unless ``SQLTUNE_FIXTURES_OFFLINE`` is set to 1/true.
    Raises :class:`FixtureUnavailable` naming what was tried and the fix.
    """
    fixture = _fixture(name)
    if download is None:
        download = os.environ.get("SQLTUNE_FIXTURES_OFFLINE", "").lower() not in ("1", "true", "yes")
    tried: list[str] = []
    for shared in shared_dirs():
        folder = shared / fixture.shared_subdir
        problem = _complete(folder, fixture)
        if problem is None:
            return folder
        tried.append(problem)
    cached = cache_dir(name)
    problem = _complete(cached, fixture)
    if problem is None:
        return cached
    tried.append(problem)
    if not download:
        tried.append("downloading is switched off (SQLTUNE_FIXTURES_OFFLINE)")
    else:
        try:
            _download(fixture, cached)
            return cached
        except FixtureUnavailable as exc:
            tried.append(str(exc))
            if cached.is_dir() and not any(cached.iterdir()):
                cached.rmdir()  # leave no empty cache folder behind
    raise FixtureUnavailable(f"{fixture.what} ({name}) not available: {'; '.join(tried)}. {_fix_hint(fixture)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sqltune.fixtures", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["fetch", "where"])
    parser.add_argument("names", nargs="*", help=f"fixtures (default: all of {', '.join(sorted(FIXTURES))})")
    args = parser.parse_args(argv)
    code = 0
    for name in args.names or sorted(FIXTURES):
        try:
            print(f"{name}: {locate(name, download=args.command == 'fetch')}")
        except FixtureUnavailable as exc:
            print(str(exc), file=sys.stderr)
            code = 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
