"""`sqltune pipeline` and `python -m jobs.pipeline`: bad input fails before any stage runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqltune import cli

ROOT = Path(__file__).resolve().parents[2]
PRESET = str(ROOT / "jobs/configs/pipeline-tiny.yaml")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gate.min_gian=0.1"], "gate.min_gian: unknown key (did you mean 'min_gain'?)"),
        (["train_config=nope.yaml"], "train_config: "),
        (["train_overrides=[scaling.num_workerz=2]"], "scaling.num_workerz: unknown key"),
        (["eval_overrides=[noequals]"], "eval_overrides: 'noequals' is not key=value"),
        (["promote.target=cluster"], "'cluster' is not a valid choice"),
        (["gate.min_exec_accuracy=2"], "min_exec_accuracy: 2.0 is above the maximum 1.0"),
    ],
)
def test_bad_input_exits_2_before_training(capsys, args: list[str], message: str) -> None:
    code = cli.main(["pipeline", "--config", PRESET, *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err


def test_job_entry_point_parses_like_the_cli(capsys) -> None:
    import jobs.pipeline

    assert jobs.pipeline.main(["--config", PRESET, "gate.min_gian=0.1"]) == 2
    assert "did you mean 'min_gain'" in capsys.readouterr().err
