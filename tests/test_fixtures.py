"""sqltune.fixtures: shared folder, then cache, then a sha256-checked download (from a real HTTP server on
127.0.0.1 standing in for upstream); and the tests' skip-or-fail rule when none is available."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import pytest

from external_fixtures import external_fixture
from sqltune import fixtures
from sqltune.fixtures import Fixture, FixtureUnavailable, PinnedFile, locate

CONTENT = {"a.yaml": b"kind: A\n", "b.json": b'{"b": 1}\n'}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def pinned(monkeypatch, tmp_path):
    """A two-file fixture 'demo-fx' pinned to CONTENT; no shared folder, an empty cache, downloads allowed."""
    fx = Fixture("demo-fx", "demo/fx", "a demo fixture",
                 tuple(PinnedFile(n, f"http://127.0.0.1:9/{n}", _sha(d)) for n, d in CONTENT.items()))
    monkeypatch.setitem(fixtures.FIXTURES, "demo-fx", fx)
    monkeypatch.setenv("SQLTUNE_SHARED_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("SQLTUNE_FIXTURES_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SQLTUNE_FIXTURES_MIRROR", raising=False)
    monkeypatch.delenv("SQLTUNE_FIXTURES_OFFLINE", raising=False)
    return tmp_path


@pytest.fixture()
def mirror(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving <root>/demo-fx/<file>; SQLTUNE_FIXTURES_MIRROR points at it."""
    root = tmp_path / "mirror"
    (root / "demo-fx").mkdir(parents=True)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("SQLTUNE_FIXTURES_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
    yield root / "demo-fx"
    server.shutdown()
    server.server_close()


def _write(folder: Path, content: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in content.items():
        (folder / name).write_bytes(data)


def test_shared_folder_comes_first(pinned):
    _write(pinned / "shared" / "demo" / "fx", CONTENT)
    _write(pinned / "cache" / "demo-fx", CONTENT)
    assert locate("demo-fx") == pinned / "shared" / "demo" / "fx"


def test_a_missing_file_is_named(pinned):
    _write(pinned / "shared" / "demo" / "fx", {"a.yaml": CONTENT["a.yaml"]})
    with pytest.raises(FixtureUnavailable, match=r"demo/fx/b\.json is missing"):
        locate("demo-fx", download=False)


def test_cache_when_the_shared_folder_is_absent(pinned):
    _write(pinned / "cache" / "demo-fx", CONTENT)
    assert locate("demo-fx", download=False) == pinned / "cache" / "demo-fx"


def test_a_wrong_shared_copy_is_not_used(pinned):
    _write(pinned / "shared" / "demo" / "fx", {**CONTENT, "b.json": b"changed"})
    with pytest.raises(FixtureUnavailable, match=r"b\.json has sha256 [0-9a-f]{64}, expected"):
        locate("demo-fx", download=False)


def test_download_into_the_cache(pinned, mirror):
    _write(mirror, CONTENT)
    folder = locate("demo-fx")
    assert folder == pinned / "cache" / "demo-fx"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == CONTENT
    for p in mirror.iterdir():  # the second call is served from the cache
        p.unlink()
    assert locate("demo-fx") == folder


def test_a_corrupt_download_is_refused_and_not_cached(pinned, mirror):
    _write(mirror, {**CONTENT, "b.json": b"tampered"})
    with pytest.raises(FixtureUnavailable, match=r"b\.json has sha256 [0-9a-f]{64}, expected .*nothing was cached"):
        locate("demo-fx")
    cached = pinned / "cache" / "demo-fx"
    assert sorted(p.name for p in cached.iterdir()) == ["a.yaml"]  # only the verified file, no temp leftovers


def test_unavailable_names_what_was_tried_and_the_fix(pinned, monkeypatch):
    monkeypatch.setenv("SQLTUNE_FIXTURES_OFFLINE", "1")
    with pytest.raises(FixtureUnavailable) as err:
        locate("demo-fx")
    msg = str(err.value)
    assert f"no folder {pinned / 'shared' / 'demo' / 'fx'}" in msg and "SQLTUNE_FIXTURES_OFFLINE" in msg
    assert "../shared/demo/fx/" in msg and "python -m sqltune.fixtures fetch demo-fx" in msg


def test_a_failed_download_leaves_no_cache_folder(pinned, monkeypatch):
    monkeypatch.setenv("SQLTUNE_FIXTURES_MIRROR", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(FixtureUnavailable, match=r"downloading http://127\.0\.0\.1:9/demo-fx/a\.yaml failed"):
        locate("demo-fx")
    assert not (pinned / "cache" / "demo-fx").exists()


def test_unknown_fixture_lists_the_known_ones():
    with pytest.raises(FixtureUnavailable, match="unknown fixture 'nope'; known: kuberay-crds, spider-dev"):
        locate("nope")


def test_tests_skip_without_the_fixture_and_fail_under_ci(pinned, monkeypatch):
    monkeypatch.setenv("SQLTUNE_FIXTURES_OFFLINE", "1")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="python -m sqltune.fixtures fetch demo-fx"):
        external_fixture("demo-fx")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        external_fixture("demo-fx")


def test_cli_where_reports_missing(pinned, monkeypatch, capsys):
    monkeypatch.setenv("SQLTUNE_FIXTURES_OFFLINE", "1")
    assert fixtures.main(["where", "demo-fx"]) == 1
    assert "not available" in capsys.readouterr().err
    _write(pinned / "cache" / "demo-fx", CONTENT)
    assert fixtures.main(["where", "demo-fx"]) == 0
    assert str(pinned / "cache" / "demo-fx") in capsys.readouterr().out
