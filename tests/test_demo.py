"""End to end: the demo's own flow (`scripts/demo.py --quick`), i.e. the same commands as `make demo`
(embedded S3, `ray start`, `ray job submit` for train/export/evaluate, `serve deploy`, HTTP questions),
with fewer training steps and a smaller evaluation sample."""

from __future__ import annotations

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
    # The served model answered every question over HTTP.
    assert log.count("\nQ: ") == 3 and log.count("\nSQL: ") == 3, log[-4000:]
    assert "Demo timings:" in log
    # Nothing of the demo keeps running: no Ray process of its cluster, no embedded S3 server.
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import demo
    finally:
        sys.path.pop(0)
    assert demo.own_ray_processes() == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(tmp_path) not in ps
