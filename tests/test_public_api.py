from __future__ import annotations

import subprocess
import sys

import sqltune


def test_public_names_resolve():
    for name in sqltune.__all__:
        assert getattr(sqltune, name) is not None


def test_import_is_light():
    code = (
        "import sys, sqltune, sqltune.sql, sqltune.data, sqltune.prompts, sqltune.config;"
        "sqltune.analyze; sqltune.Example;"
        "heavy = [m for m in ('torch', 'ray', 'transformers') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
