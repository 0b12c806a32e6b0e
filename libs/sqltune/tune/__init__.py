"""Hyper-parameter search over training runs with Ray Tune (``python -m jobs.tune``).

* :mod:`sqltune.tune.config`: :class:`TuneConfig`, the search space (choice, uniform, loguniform over any
  training config field), stage budgets, ASHA.
* :mod:`sqltune.tune.run`: stage 1 and 2 with Ray Tune, the results table, the best preset and adapter.

Importing this package does not import torch or ray.
"""

from __future__ import annotations

from sqltune.tune.config import TuneConfig

__all__ = ["TuneConfig"]
