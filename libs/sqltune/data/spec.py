"""The dataset spec training and evaluation share, and the split contract between them.

A :class:`DatasetSpec` names a dataset (``source``, ``format``, ``source_split``, ``databases_dir``) and
how it is partitioned (``split_ratios``, ``split_seed``, ``stratify``). The training job's ``data``
section and the evaluation job's ``dataset`` section are both a ``DatasetSpec`` plus their own fields, and
both go through :func:`load_examples` and :meth:`DatasetSpec.partition`. That is the split contract:

- **One procedure.** :meth:`DatasetSpec.partition` is :func:`~sqltune.data.splits.split_examples` with
  the spec's ratios, seed and stratum; nothing else splits a dataset.
- **Deterministic.** The same examples and the same spec give the same three splits, whatever order
  the loader returns the examples in.
- **Disjoint and complete.** Every example lands in exactly one of train, validation and test.
- **Stratified.** Each stratum (category, difficulty or evidence length) keeps its share in each split.
- **Shared.** A training run and an evaluation whose specs agree on :data:`SPLIT_FIELDS` see the same
  test split: the one training held out. :func:`split_identity` is that agreement, as a dict.

Caps (``max_train_examples``, evaluation's ``limit``) apply after splitting, so they never move an
example from one split to another.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqltune.config import Config, param
from sqltune.data.loaders import Format, load_dataset
from sqltune.data.record import Example
from sqltune.data.splits import Splits, Stratify, split_examples
from sqltune.errors import ConfigError

__all__ = ["DatasetSpec", "SPLIT_FIELDS", "load_examples", "sample_examples", "split_identity"]

SPLIT_FIELDS = ("source", "format", "source_split", "split_ratios", "split_seed", "stratify", "embedded_seed")
"""The spec fields that decide which example lands in which split (``databases_dir`` and ``embedded_dir``
only say where files live)."""


@dataclass
class DatasetSpec(Config):
    """A dataset and its deterministic train/validation/test split."""

    source: str = param(
        "embedded",
        "Dataset: a local path, an s3:// URI, a hub dataset id, or 'embedded' (the built-in warehouse set).",
    )
    format: Format = param(
        "auto", "Loader format for sqltune.data.load_dataset; auto detects it from the folder/file/columns."
    )
    source_split: str | None = param(
        None,
        "Which split of the source to load before splitting it (Spider/BIRD 'train' or 'dev', hub datasets "
        "'train'); null = the loader's default.",
    )
    databases_dir: str | None = param(
        None,
        "Spider/BIRD: the folder holding <db_id>/<db_id>.sqlite; null = the dataset's own (<source>/database "
        "for Spider, <source>/dev_databases for BIRD).",
    )
    split_ratios: list[float] = param([0.8, 0.1, 0.1], "Train/validation/test fractions (sum to 1).")
    split_seed: int = param(0, "Seed of the deterministic split.")
    stratify: Stratify = param(
        "category",
        "What the train/validation/test split is stratified by (training and evaluation must agree).",
    )
    embedded_seed: int = param(0, "Seed of the embedded dataset when source=embedded.")
    embedded_dir: str | None = param(
        None, "Where the embedded dataset is built/cached (default ~/.cache/sqltune/embedded-<seed>)."
    )

    def validate(self) -> None:
        if len(self.split_ratios) != 3 or any(r < 0 for r in self.split_ratios):
            raise ConfigError(f"split_ratios: {self.split_ratios!r} must be three non-negative fractions")
        if abs(sum(self.split_ratios) - 1.0) > 1e-6:
            raise ConfigError(f"split_ratios: {self.split_ratios!r} must sum to 1")

    @property
    def is_embedded(self) -> bool:
        return self.source == "embedded"

    def embedded_folder(self) -> Path:
        """Where the embedded dataset lives (built there on first use)."""
        default = Path.home() / ".cache" / "sqltune" / f"embedded-{self.embedded_seed}"
        return Path(self.embedded_dir or default).expanduser()

    def root(self) -> Path | None:
        """The local folder of the dataset (relative database paths resolve against it); None if remote."""
        if self.is_embedded:
            return self.embedded_folder()
        path = Path(self.source)
        if path.exists():
            return path if path.is_dir() else path.parent
        return None

    def partition(self, examples: list[Example]) -> Splits:
        """The deterministic train/validation/test split of ``examples`` (see the module docstring)."""
        return split_examples(
            examples, ratios=tuple(self.split_ratios), seed=self.split_seed, stratify=self.stratify
        )


def load_examples(spec: DatasetSpec) -> list[Example]:
    """Every example of the dataset ``spec`` names, before splitting."""
    if spec.is_embedded:
        return load_dataset(spec.embedded_folder(), format="embedded", seed=spec.embedded_seed)
    return load_dataset(spec.source, format=spec.format, split=spec.source_split, db_dir=spec.databases_dir)


def split_identity(spec: DatasetSpec) -> dict[str, Any]:
    """The fields that decide the split; two specs with equal identities split a dataset the same way."""
    return {name: getattr(spec, name) for name in SPLIT_FIELDS}


def sample_examples(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """A seeded sample of at most ``limit`` examples, kept in their order (all when ``limit`` is None)."""
    if not limit or len(examples) <= limit:
        return list(examples)
    keep = sorted(random.Random(f"sqltune-eval:{seed}").sample(range(len(examples)), limit))
    return [examples[i] for i in keep]
