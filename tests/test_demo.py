"""End to end: the demo's own flow (`scripts/demo.py --quick`), i.e. the same commands as `make demo`
(embedded S3, `ray start`, `ray job submit` for train/export/evaluate, `serve deploy`, HTTP questions),
with fewer training steps and a smaller evaluation sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_quick_runs_every_step_and_leaves_nothing_running(tmp_path):
    env = dict(os.environ)
    for key in [k for k in env if k.startswith(("AWS_", "RAY_"))]:
        env.pop(key)
    # A home without ~/.ray/auth_token, as on a fresh machine (ray start then needs the demo's own token).
    env["HOME"] = str(tmp_path / "home")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--quick", "--work-dir", str(tmp_path / "demo")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500, check=False,
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    # The evaluation job's comparison table, one row per variant.
    for variant in ("base", "adapter", "merged", "int8"):
        assert f"| {variant} |" in log, log[-4000:]
    report = tmp_path / "demo" / "report"
    assert (report / "report.json").is_file() and (report / "manifest.json").is_file()
    assert sorted(p.name for p in report.glob("*.png"))
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import demo
    finally:
        sys.path.pop(0)
    # The served model answered every question over HTTP, and wrote the same SQL as the evaluation's merged
    # variant for each question of a category the (sampled) evaluation scored.
    assert log.count("\nQ: ") == 3 and log.count("\nSQL: ") == 3, log[-4000:]
    rows = [json.loads(line) for line in (report / "predictions.jsonl").read_text().splitlines() if line.strip()]
    scored = set(demo.DEMO_CATEGORIES) & {r["category"] for r in rows if r["variant"] == "merged"}
    parity = [line.strip() for line in log.splitlines() if "same SQL as the evaluation's merged variant" in line]
    assert scored and len(parity) == len(scored), (scored, log[-4000:])
    assert all(line.endswith("merged variant: yes") for line in parity), parity
    assert "Demo timings:" in log
    # Nothing of the demo keeps running: no Ray process of its cluster, no embedded S3 server.
    assert demo.own_ray_processes() == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in ps
