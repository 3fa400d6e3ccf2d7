"""Every shipped checkpoint loads, matches its config, scores well on held-out text and writes code.

A corrupted, truncated or untrained file fails here: the held-out bits per character of an untrained
model are near log2(vocabulary) ≈ 7, far above the bound each model states in its config.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import workbench
from workbench.data.corpora import load_corpus
from workbench.registry import CHECKPOINTS_DIR
from workbench.training.train import evaluate_bpc

MODELS = [row["name"] for row in workbench.list_models()]
CORPUS_OF = {row["name"]: row["corpus"] for row in workbench.list_models()}
# The first 20,000 characters of the linux corpus's test split (files never trained on), shipped
# with the tests because CI machines have no /usr/src/linux-source-*: load_corpus("linux",
# max_bytes=50_000_000).test[:20_000] from Debian's linux-source 6.1.
LINUX_TEST_SLICE = Path(__file__).parent / "fixtures" / "linux-test-slice.txt"
HELD_OUT_CHARS = 20_000
# A model may score this much worse on a short held-out slice than on its full test split.
SLICE_MARGIN_BPC = 0.35


def test_at_least_one_embedded_model_ships():
    assert MODELS, f"no embedded checkpoints in {CHECKPOINTS_DIR}"


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_loads_and_matches_its_config(name):
    model = workbench.load(name)
    document = json.loads((CHECKPOINTS_DIR / name / "config.json").read_text())
    assert model.cfg.to_dict() == workbench.RecurrentConfig.from_dict(document["config"]).to_dict()
    assert model.tokenizer is not None and model.cfg.d_vocab == len(model.tokenizer)
    assert document["provenance"]["command"].startswith("workbench train ")


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_scores_below_its_stated_loss_on_held_out_text(name):
    model = workbench.load(name)
    row = next(r for r in workbench.list_models() if r["name"] == name)
    if row["corpus"] == "linux":
        held_out = LINUX_TEST_SLICE.read_text(encoding="utf-8")
    else:
        held_out = load_corpus(row["corpus"], max_bytes=2_000_000).test
    with torch.no_grad():
        bpc = evaluate_bpc(model, model.tokenizer, held_out, max_chars=HELD_OUT_CHARS)
    assert bpc < row["test_bpc"] + SLICE_MARGIN_BPC, f"{name}: {bpc:.3f} bpc on a held-out slice"
    assert bpc < 3.0


@pytest.mark.parametrize("name", [n for n in MODELS if CORPUS_OF[n] == "python-stdlib"])
def test_generated_text_looks_like_python(name):
    model = workbench.load(name)
    text = model.generate("def ", max_new_tokens=400, temperature=0.5, seed=0)
    assert "(" in text and ")" in text and ":" in text
    assert "\n    " in text, "no indented lines"


@pytest.mark.parametrize("name", [n for n in MODELS if CORPUS_OF[n] == "linux"])
def test_generated_text_looks_like_kernel_c(name):
    model = workbench.load(name)
    text = model.generate("{\n\tint ret;\n\n\t", max_new_tokens=300, temperature=0.5, seed=0)
    assert "(" in text and ")" in text and ";" in text
    assert "\n\t" in text, "no tab-indented lines"
