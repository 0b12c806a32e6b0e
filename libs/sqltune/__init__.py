"""sqltune: fine-tune, evaluate and serve small text-to-SQL models on Ray and Kubernetes."""

from __future__ import annotations

__version__ = "0.1.0"
