"""Cell discovery and tuned-lens fitting read a store instead of memory (issue 22 part 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.analysis import cells
from workbench.analysis.cells import discover_cells, discover_cells_from_store
from workbench.analysis.lens.logit_lens import readout_hook
from workbench.analysis.lens.tuned_lens import TunedLens, kl_divergence
from workbench.errors import UnknownHookError
from workbench.store import record

from .test_store import TEXTS, corpus, model  # noqa: F401  (shared module fixtures)

FEATURES = ["bracket_depth", "in_string", "position_in_line", "is_whitespace"]


def test_cell_discovery_from_a_store_equals_discovery_in_memory(model, corpus, tmp_path):  # noqa: F811
    hooks = ["blocks.0.mixer.hook_c", "blocks.1.mixer.hook_c", "blocks.1.mixer.hook_f"]
    store = record(model, corpus[:1], tmp_path, hooks, segment_tokens=4096, window=300)  # one segment
    from_store = discover_cells_from_store(store, FEATURES, train_fraction=0.6)
    in_memory = discover_cells(cells.record(model, TEXTS[0], ["c", "f"], layers=[0, 1]), FEATURES,
                               keys=[(0, "c"), (1, "c"), (1, "f")], train_fraction=0.6)
    on = ["feature", "layer", "quantity", "unit"]
    mine = from_store.table.sort_values(on).reset_index(drop=True)
    theirs = in_memory.table.sort_values(on).reset_index(drop=True)
    assert mine[on + ["kind"]].equals(theirs[on + ["kind"]]) and len(mine) == 4 * 3 * 128
    for column in ("train_r", "test_r", "score"):  # float32 storage against float64 in memory
        np.testing.assert_allclose(mine[column], theirs[column], atol=2e-6, equal_nan=True)
    for feature in FEATURES:
        assert abs(from_store.top(feature, 1).train_r[0]) == pytest.approx(
            abs(in_memory.top(feature, 1).train_r[0]), abs=2e-6)
    with pytest.raises(UnknownHookError, match="not in the store"):
        discover_cells_from_store(store, FEATURES, keys=[(1, "o")])


def test_tuned_lens_fits_from_a_store(model, corpus, tmp_path):  # noqa: F811
    lens = TunedLens.from_model(model)
    hooks = [readout_hook(layer) for layer in lens.layers]
    store = record(model, corpus, tmp_path, hooks, segment_tokens=700, segments_per_shard=2, window=300)
    lens.fit_from_store(store, steps=15, tokens_per_step=512, progress=False)
    # the first step's loss is the identity lens's KL on the first 512 tokens, computed in memory
    with torch.no_grad():
        _, cache = model.run_with_cache(TEXTS[0][:512], names_filter=hooks)
        target = model.unembed(model.ln_final(cache[hooks[-1]][0])).float().log_softmax(-1)
        for layer, name in zip(lens.translated_layers, hooks, strict=False):
            logit_lens = lens.unembedding(cache[name][0]).float().log_softmax(-1)
            kl_bits = float(kl_divergence(target, logit_lens).mean()) / np.log(2)
            assert lens.history_[0][str(layer)] == pytest.approx(kl_bits, rel=1e-5)
    first, last = lens.history_[0], lens.history_[-1]
    assert sum(last[str(k)] for k in lens.translated_layers) < 0.8 * sum(first[str(k)] for k in lens.translated_layers)
    assert lens.training_["tokens_seen"] == 15 * 512
    with pytest.raises(UnknownHookError, match="the store lacks"):
        TunedLens.from_model(model).fit_from_store(_only_c(model, corpus, tmp_path),
                                                   steps=1, progress=False)


def _only_c(model, corpus, tmp_path):  # noqa: F811
    return record(model, corpus[1:], tmp_path / "c", "blocks.1.mixer.hook_c", segment_tokens=2048)
