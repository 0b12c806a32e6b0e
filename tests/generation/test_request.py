"""The request types load without torch: the HTTP ingress imports them (through serving's length rules)
and must stay light."""

from __future__ import annotations

import subprocess
import sys

from sqltune.generation import GenRequest
from sqltune.generation.request import sequence_error


def test_request_types_and_the_ingress_never_load_torch():
    code = (
        "import sys, sqltune.generation, sqltune.serving.api, sqltune.serving.deployments;"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"the ingress loaded {out.stdout.strip()}"


def test_sequence_rule_and_request_state():
    assert sequence_error(100, 28, 128) is None
    assert sequence_error(100, 29, 128) == (
        "prompt (100 tokens) + max_new_tokens (29) exceeds the engine's sequence length 128"
    )
    req = GenRequest([1, 2, 3], 4)
    assert not req.finished and req.tokens == []
    req.finish_reason = "stop"
    assert req.finished
