"""The front ends accept a hybrid: `workbench.load` and `workbench report` open a `transformers` checkpoint
directory (a tiny random Qwen3-Next saved here with a character tokenizer), and the tour's explorers draw
it when it is picked in their model dropdown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.adapters.conftest import tiny
from workbench.cli import main
from workbench.report import SECTION_IDS

# the tokenizer's 49 characters (id 0 is unknown): the text below uses only these
CHARACTERS = " \n_()[]=:.,'\"0123456789abcdefghijklmnopqrstuvwxyz"
TEXT = "".join(
    f"def scale_{i}(values, factor):\n    result = [value for value in values if value]\n"
    f"    print('scaled', factor, len(result))\n    return result[{i}:]\n\n"
    for i in range(6)
)


def character_tokenizer():
    """One token per character of CHARACTERS, built locally (no download)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, **{c: i + 1 for i, c in enumerate(CHARACTERS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")


@pytest.fixture(scope="module")
def hybrid_directory(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hybrid") / "qwen3-next-tiny"
    tiny("qwen3_next").save_pretrained(directory)
    character_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def hybrid(hybrid_directory):
    import workbench

    model = workbench.load(str(hybrid_directory))
    assert type(model).__name__ == "HookedQwen3Next" and model.to_str_tokens("def f") == list("def f")
    return model


def test_report_draws_every_section_of_a_hybrid(hybrid_directory, tmp_path):
    text, out = tmp_path / "sample.py", tmp_path / "report.html"
    text.write_text(TEXT, encoding="utf-8")
    status = main(["report", "--model", str(hybrid_directory), "--text", str(text), "--out", str(out),
                   "--max-chars", "600", "--no-progress"])
    assert status == 0
    page = out.read_text(encoding="utf-8")
    for section in SECTION_IDS:
        assert f'<section id="{section}">' in page
    assert "Not drawn" not in page
    assert page.count('class="plotly-graph-div"') == 4
    match = re.search(r"largest per-channel error of this text's map ([0-9]+\.[0-9]+e[+-][0-9]+)", page)
    assert match and float(match.group(1)) < 1e-4  # the delta-rule map reproduces the layer


def test_tour_explorers_draw_the_hybrid_picked_in_the_dropdown(hybrid):
    """The tour's widgets with two hybrids in the model picker (Qwen3-Next from its directory, OLMo-Hybrid
    built here with the same tokenizer): each draws with no error, and picking the other recomputes."""
    from workbench.adapters import from_transformers
    from workbench.widgets.cells import CellExplorer
    from workbench.widgets.implicit_attention import ImplicitAttentionExplorer
    from workbench.widgets.lens import LensExplorer

    other = from_transformers(tiny("olmo_hybrid"))
    other.tokenizer = hybrid.tokenizer
    models = {"qwen3-next-tiny": hybrid, "olmo-hybrid-tiny": other}
    with torch.no_grad():
        explorers = [CellExplorer(models, TEXT[:300]), LensExplorer(models, text=TEXT[:90]),
                     ImplicitAttentionExplorer(models, TEXT[:60])]
        for explorer in explorers:
            assert explorer.error.value == "", f"{type(explorer).__name__}: {explorer.error.value}"
            explorer.model_select.value = "olmo-hybrid-tiny"
            assert explorer.model is other
            assert explorer.error.value == "", f"{type(explorer).__name__}: {explorer.error.value}"
