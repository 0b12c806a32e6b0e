"""Every benchmark figure quoted in README.md and docs/*.md is in a results file under benchmarks/results/.

A *benchmark line* is a line naming a measured quantity (tokens/s, tok/s, MFU, p50, p95, latency=, execution
accuracy) or a row of a Markdown table whose header names one (p50, Exec, tokens/s, figure(s), time). Its
*benchmark figures* are the numbers in it, except:

- table cells under a header that is not a result (date, machine, command, results file, what, model);
- settings: a number followed by steps, seeds, concurrent, examples, tokens (not tokens/s), epochs, workers,
  GPUs or requests, or either side of an ``N x M`` shape; numbers glued to letters (Qwen2.5, h200, r16);
- approximations and bounds (written right after ``~``, ``≤``, ``≥``, ``<``, ``>``), and targets (a line that
  starts with "Target");
- NOT_FIGURES: the few remaining numbers that are not measurements, each with its reason.

Each figure must equal, at its printed precision, a number in the results file the line links under
benchmarks/results/ (a table also takes the link of the paragraph right before it), or in any results file
when none is linked; a percentage may be stored as a fraction (68.1% = 0.681), milliseconds as seconds, and a
speed-up ``N x`` as the ratio of two numbers of the same file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

MEASURED = re.compile(r"tokens/s|tok/s|\bMFU\b|\bp50\b|\bp95\b|latency=|execution accuracy", re.I)
TABLE_HEADER = re.compile(r"\bp50\b|\bExec\b|tokens/s|\bfigures?\b|\btime\b", re.I)
NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
UNIT = r"tokens/s|tok/s|ms|s|min|GiB|%|x(?!\s?\d)"
FIGURE = re.compile(rf"(?<![\w.,-])(?<!x )({NUMBER})(?:\s?({UNIT})(?![\w/])|(?![\w.,-]))")
RANGE = re.compile(rf"(?<![\w.,-])({NUMBER})-({NUMBER})(?![\w.,-])")  # a spread of results, e.g. 0.000-0.031
SETTING = re.compile(r"\s?(?:x\s?\d|steps?\b|seeds?\b|concurrent\b|(?:test |held-out )?examples?\b|"
                     r"tokens\b(?!/)|epochs?\b|workers?\b|GPUs?\b|requests?\b|questions?\b)")
NOT_RESULT_COLUMNS = {"date", "machine", "command", "results file", "what", "model", "machine, date, command"}
NOT_A_RESULT = ("~", "≤", "≥", "<", ">")  # an approximation or a bound, written just before the number
INTERVAL = re.compile(rf"%\s?\(({NUMBER})-({NUMBER})\)")  # a confidence interval after a percentage
RESULTS_LINK = re.compile(r"benchmarks/results/([\w.\-/]+)(?![\w.\-/*])")

# (document, text on the line, the number as written or None for all of the line's): numbers on benchmark
# lines that are not measurements, with the reason.
NOT_FIGURES = {
    ("docs/training.md", "2,450 tok/s", None): "the format of a progress line, not a measurement",
    ("docs/evaluation.md", "<- shape only", None): "the layout of a report table, not a result",
}


@dataclass(frozen=True)
class Figure:
    doc: str
    line_no: int
    line: str
    text: str  # the number as written
    unit: str
    source: str | None  # the results file or folder the line links, if any

    @property
    def value(self) -> float:
        return float(self.text.replace(",", ""))

    @property
    def decimals(self) -> int:
        return len(self.text.partition(".")[2])


def _table_cells_header(lines: list[str], i: int) -> str | None:
    """The header row of the Markdown table line ``i`` belongs to (None when it is not a table row)."""
    if not lines[i].lstrip().startswith("|"):
        return None
    j = i
    while j > 0 and lines[j - 1].lstrip().startswith("|"):
        j -= 1
    return lines[j]


def _preceding_paragraph_links(lines: list[str], i: int) -> list[str]:
    """Results links in the paragraph right before the table that line ``i`` is in."""
    j = i
    while j > 0 and lines[j - 1].lstrip().startswith("|"):
        j -= 1
    while j > 0 and not lines[j - 1].strip():
        j -= 1
    links: list[str] = []
    while j > 0 and lines[j - 1].strip() and not lines[j - 1].startswith("#"):
        links = RESULTS_LINK.findall(lines[j - 1]) + links
        j -= 1
    return links


def _exempt(doc: str, line: str, number: str) -> bool:
    return any(d == doc and t in line and n in (None, number) for (d, t, n) in NOT_FIGURES)


def _result_text(line: str, header: str | None) -> str:
    """The parts of ``line`` that can hold results: for a table row, the cells under result columns."""
    if header is None:
        return line
    names = [c.strip().lower() for c in header.strip().strip("|").split("|")]
    cells = line.strip().strip("|").split("|")
    return " | ".join(c for name, c in zip(names, cells) if name not in NOT_RESULT_COLUMNS)


def figures(doc: Path) -> list[Figure]:
    lines = doc.read_text().splitlines()
    rel = str(doc.relative_to(ROOT))
    found: list[Figure] = []
    for i, line in enumerate(lines):
        header = _table_cells_header(lines, i)
        is_table_row = header is not None and header != line and not re.fullmatch(r"[|\s:-]+", line)
        if not (MEASURED.search(line) or (is_table_row and TABLE_HEADER.search(header))):
            continue
        if line.lstrip().lower().startswith("target"):
            continue
        links = RESULTS_LINK.findall(line) or (_preceding_paragraph_links(lines, i) if is_table_row else [])
        text = _result_text(line, header if is_table_row else None)
        text = re.sub(r"`[^`]*`", " ", text)  # code: commands, flags, file names
        numbers = [(m.group(1), m.group(2) or "", m.start(1), m.end(1)) for m in FIGURE.finditer(text)]
        numbers += [(n, "%", m.start(k + 1), m.end(k + 1)) for m in INTERVAL.finditer(text)
                    for k, n in enumerate(m.groups())]
        numbers += [(n, "", m.start(k + 1), m.end(k + 1)) for m in RANGE.finditer(text)
                    if not re.fullmatch(r"\d{4}-\d\d", m.group(0)) for k, n in enumerate(m.groups())]
        for number, unit, start, end in numbers:
            if text[:start].rstrip().endswith(NOT_A_RESULT) or _exempt(rel, line, number):
                continue
            if not unit and SETTING.match(text, end):
                continue
            found.append(Figure(rel, i + 1, line.strip(), number, unit, links[0] if links else None))
    return found


def _numbers_in(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers_in(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers_in(v)]
    if isinstance(value, str):
        return [float(n.replace(",", "")) for n in re.findall(NUMBER, value)]
    return []


def results_numbers(path: Path) -> list[float]:
    text = path.read_text(errors="replace")
    if path.suffix == ".json":
        try:
            return _numbers_in(json.loads(text))
        except json.JSONDecodeError:
            pass
    return [float(n.replace(",", "")) for n in re.findall(NUMBER, text)]


def _files(source: str | None) -> list[Path]:
    target = RESULTS / source.rstrip("/") if source else RESULTS
    if target.is_file():
        return [target]
    return sorted(p for p in target.rglob("*") if p.is_file())


def _close(x: float, fig: Figure) -> bool:
    return abs(x - fig.value) <= 0.5 * 10 ** -fig.decimals + 1e-9


def backed(fig: Figure) -> bool:
    for path in _files(fig.source):
        nums = results_numbers(path)
        scaled = {"%": (1, 100), "ms": (1, 1000), "s": (1, 0.001)}.get(fig.unit, (1,))
        if any(_close(x * k, fig) for x in nums for k in scaled):
            return True
        if fig.unit == "x":
            big = [x for x in nums if x > 0]
            if any(_close(a / b, fig) for a in big for b in big if a != b):
                return True
    return False


ALL = [f for doc in DOCS if doc.is_file() for f in figures(doc)]


def test_the_definition_finds_the_headline_figures():
    """Guards the definition itself: every row of the benchmarks table and of the README's headline table
    yields figures, and the README's own tokens/s and accuracy are among them."""
    rows = {(f.doc, f.line_no) for f in ALL}
    for doc, header in (("docs/benchmarks.md", "| date | machine | command | figures |"),
                        ("README.md", "| what | figure |")):
        lines = (ROOT / doc).read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith(header))
        table = range(start + 3, next(i for i in range(start, len(lines)) if not lines[i].startswith("|")) + 1)
        assert all((doc, n) in rows for n in table), (doc, [n for n in table if (doc, n) not in rows])
    units = {f.unit for f in ALL if f.doc == "README.md"}
    assert {"tokens/s", "%", "s", "GiB", "x"} <= units, units


def test_every_results_link_exists():
    for doc in DOCS:
        for i, line in enumerate(doc.read_text().splitlines(), 1):
            for link in RESULTS_LINK.findall(line):
                assert (RESULTS / link.rstrip("/")).exists(), f"{doc.relative_to(ROOT)}:{i}: no {link}"


def test_exemptions_are_still_in_the_docs():
    for doc, text, number in NOT_FIGURES:
        lines = [ln for ln in (ROOT / doc).read_text().splitlines() if text in ln]
        assert any(number is None or number in ln for ln in lines), f"{doc}: the exemption {text!r} is stale"


@pytest.mark.parametrize("doc", [str(d.relative_to(ROOT)) for d in DOCS if d.is_file()])
def test_every_benchmark_figure_has_a_results_file(doc):
    missing = [f"{f.doc}:{f.line_no}: {f.text} {f.unit} (looked in benchmarks/results/{f.source or ''})\n    {f.line}"
               for f in ALL if f.doc == doc and not backed(f)]
    assert not missing, ("figures with no results file: measure them and add the raw result under "
                         "benchmarks/results/, or say they are unmeasured without a figure\n" + "\n".join(missing))
