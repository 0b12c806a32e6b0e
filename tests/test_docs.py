"""The documentation stays true to the code: the generated configuration reference is current, README stays a
front door, and every relative link in README.md and docs/ points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sqltune import configdoc

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 260
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_configuration_reference_is_current() -> None:
    path = ROOT / "docs" / "configuration.md"
    assert path.is_file() and path.read_text() == configdoc.render(), (
        "docs/configuration.md is stale: run `python -m sqltune.configdoc > docs/configuration.md` and commit it"
    )


def test_every_entry_point_config_is_documented() -> None:
    """Each class an entry point parses a config into (parse_cli / load_config) has a section."""
    used = set()
    for path in [*ROOT.glob("jobs/*.py"), *ROOT.glob("scripts/*.py"), *(ROOT / "libs").rglob("*.py")]:
        used |= set(re.findall(r"\b(?:parse_cli|load_config)\(([A-Z]\w*)", path.read_text()))
    documented = {s.cls.__name__ for s in configdoc.SECTIONS}
    assert used <= documented, f"config classes without a section in sqltune.configdoc.SECTIONS: {used - documented}"


def test_configdoc_check_flags_a_stale_file(tmp_path, capsys) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(configdoc.render().replace("| `decode_chunk` |", "| `decode_chunks` |"))
    assert configdoc.main(["--check", str(stale)]) == 1
    assert "python -m sqltune.configdoc >" in capsys.readouterr().err
    stale.write_text(configdoc.render())
    assert configdoc.main(["--check", str(stale)]) == 0


def test_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("doc", [ROOT / "README.md", *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)} links to missing files: {broken}"
