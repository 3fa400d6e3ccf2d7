"""`model.score`: window by window with the state carried, equal to one pass over the input (issue 19)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import workbench
from workbench.errors import MemoryBudgetError

from .conftest import small_lm

TEXT = (Path(workbench.__file__).parent / "models" / "hooked.py").read_text()[:3000]  # medium, real code


@pytest.fixture(scope="module", params=["lstm-stdlib-2x128", "s6-stdlib-4x96"])
def model(request):
    return workbench.load(request.param).double()


@pytest.mark.parametrize("path", ["reference", "fused"])
def test_streamed_loss_and_log_probs_equal_one_pass(model, path):
    tokens = model.to_tokens(TEXT)  # [1, 3000]
    with torch.no_grad():
        loss = model(tokens, return_type="loss", path=path)
        logits, state = model(tokens, return_state=True, path=path)
    whole = torch.log_softmax(logits[0, :-1], -1).gather(-1, tokens[0, 1:, None])[:, 0]  # [pos - 1]
    streamed = model.score(TEXT, window=700, path=path)  # 700 does not divide 3000: a short last window
    assert streamed.n_windows == 5 and streamed.window == 700
    assert streamed.loss == pytest.approx(float(loss), abs=1e-12, rel=1e-12)
    torch.testing.assert_close(streamed.log_probs[0], whole, atol=1e-10, rtol=1e-10)
    for mine, theirs in zip(streamed.final_state, state, strict=True):
        for name in theirs:
            torch.testing.assert_close(mine[name], theirs[name], atol=1e-10, rtol=1e-10)


def test_recorded_hooks_stream_to_the_sink_window_by_window(model):
    tokens = model.to_tokens(TEXT[:1000])
    hook = f"blocks.{len(model.blocks) - 1}.mixer.hook_{model.state_quantities(0)[-1]}"
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=hook)
    pieces: dict[int, torch.Tensor] = {}
    model.score(tokens, window=300, names_filter=hook, sink=lambda start, c: pieces.__setitem__(start, c[hook]))
    assert sorted(pieces) == [0, 300, 600, 900] and pieces[900].shape[1] == 100
    torch.testing.assert_close(torch.cat([pieces[s] for s in sorted(pieces)], 1), cache[hook],
                               atol=1e-10, rtol=1e-10)


def test_continuing_from_a_state_equals_scoring_the_whole():
    lm = small_lm("gru")
    tokens = torch.randint(0, 7, (2, 40), generator=torch.Generator().manual_seed(3))
    whole = lm.score(tokens, window=7)
    first = lm.score(tokens[:, :21], window=5)  # predicts tokens 1..20
    second = lm.score(tokens[:, 21:], window=9, initial_state=first.final_state)  # tokens 22..39
    torch.testing.assert_close(first.log_probs, whole.log_probs[:, :20], atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(second.log_probs, whole.log_probs[:, 21:], atol=1e-12, rtol=1e-12)


def test_automatic_window_fits_the_budget_and_a_given_one_is_checked():
    lm = small_lm("lstm", dtype=torch.float32)
    tokens = torch.randint(0, 7, (1, 5000), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        per_window = lm.estimate_memory(tokens[:, :1000], return_type="loss").total
    auto = lm.score(tokens, memory_budget_bytes=per_window)
    assert 900 <= auto.window <= 1000 and auto.n_windows == -(-5000 // auto.window)
    with pytest.raises(MemoryBudgetError, match="score with window 4,000"):
        lm.score(tokens, window=4000, memory_budget_bytes=per_window)


def test_bad_arguments_are_named():
    lm = small_lm("mingru")
    tokens = torch.randint(0, 7, (1, 20), generator=torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="pass sink=fn"):
        lm.score(tokens, names_filter="blocks.0.mixer.hook_h")
    with pytest.raises(TypeError, match="sink must be a callable"):
        lm.score(tokens, names_filter="blocks.0.mixer.hook_h", sink=[])
    for window in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="window must be a positive number"):
            lm.score(tokens, window=window)
    with pytest.raises(ValueError, match="at least two tokens"):
        lm.score(tokens[:, :1])
