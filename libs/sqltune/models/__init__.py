"""Model building and loading: the tiny local model, base/adapter/export loading, batched generation."""

from __future__ import annotations
