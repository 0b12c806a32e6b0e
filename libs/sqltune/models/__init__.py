"""Model building and loading: the tiny local model, base/adapter/export loading."""

from __future__ import annotations
