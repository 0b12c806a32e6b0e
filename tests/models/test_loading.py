"""The tokenizer and prompt template a model replica keeps when its engine runs in a process of its own
are the ones load_for_inference gives, adapters included."""

from __future__ import annotations

import json
import shutil

import pytest

from sqltune.errors import ModelError
from sqltune.models.loading import load_for_inference, load_tokenizer_and_template


@pytest.mark.parametrize("which", ["tiny_base", "tiny_adapter"])
def test_tokenizer_and_template_match_the_loaded_models(which, request):
    path = str(request.getfixturevalue(which))
    loaded = load_for_inference(path)
    tokenizer, template = load_tokenizer_and_template(path)
    text = "SELECT name FROM customers WHERE country = 'Germany';"
    assert tokenizer(text)["input_ids"] == loaded.tokenizer(text)["input_ids"]
    assert template == loaded.template


def test_an_adapter_without_a_tokenizer_takes_its_bases(tiny_adapter, tiny_base, tmp_path):
    bare = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, bare)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (bare / name).unlink()
    tokenizer, _ = load_tokenizer_and_template(str(bare), base_uri=str(tiny_base))
    assert tokenizer.get_vocab() == load_for_inference(str(tiny_base)).tokenizer.get_vocab()
    info = json.loads((bare / "sqltune_artifact.json").read_text())
    info.pop("base_model", None)
    (bare / "sqltune_artifact.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="records no base model; pass base_uri="):
        load_tokenizer_and_template(str(bare))
