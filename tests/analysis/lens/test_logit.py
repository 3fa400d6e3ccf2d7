"""The logit lens decodes read-outs with the model's own final norm and unembedding, exactly."""

import pytest
import torch

from workbench.analysis.lens import (
    LogitLens,
    TunedLens,
    collect_residuals,
    evaluate_lenses,
    readout_hook,
    readout_layers,
)
from workbench.analysis.tokens import printable_tokenizer
from workbench.models import HookedRecurrentLM, RecurrentConfig
from workbench.training import evaluate_bpc

TEXT = "def f(x):\n    return [x, (x + 1)]  # ok\n" * 8


def small_lm(family="lstm", norm="layernorm", n_layers=3, seed=0, **overrides):
    torch.manual_seed(seed)
    tok = printable_tokenizer()
    cfg = RecurrentConfig(family=family, n_layers=n_layers, d_model=12, d_hidden=10, d_vocab=len(tok),
                          d_state=3, norm=norm, **overrides)
    model = HookedRecurrentLM(cfg).eval()
    model.tokenizer = tok
    return model


@pytest.mark.parametrize("family, norm", [
    ("lstm", "layernorm"), ("gru", "rmsnorm"), ("mingru", "none"), ("s6", "layernorm"), ("elman", "none"),
])
def test_last_layer_of_the_logit_lens_is_the_models_output_exactly(family, norm):
    model = small_lm(family, norm)
    tokens = model.to_tokens(TEXT[:40])  # [1, 40]
    resid, logits, _ = collect_residuals(model, tokens)  # [4, 1, 40, 12]
    assert torch.equal(LogitLens(model)(resid[-1], model.cfg.n_layers - 1), logits)
    with torch.no_grad():  # the same kernels as the recording (with grad, LSTM/GRU may take others)
        assert torch.equal(LogitLens(model)(resid[-1], -1), model(tokens))


def test_identity_blocks_give_the_output_at_every_layer():
    model = small_lm("gru", "layernorm", n_layers=4, d_mlp=0)
    with torch.no_grad():
        for block in model.blocks:  # mixer output W_out h + b_out = 0: every block is the identity
            block.mixer.W_out.weight.zero_()
            block.mixer.W_out.bias.zero_()
    tokens = model.to_tokens(TEXT[:30])
    resid, logits, _ = collect_residuals(model, tokens)
    lens = LogitLens(model)
    for i, layer in enumerate(lens.layers):
        assert torch.equal(lens(resid[i], layer), logits), layer


def test_readouts_are_the_embedding_and_each_block_output():
    model = small_lm(n_layers=3)
    assert readout_layers(model) == ["embed", 0, 1, 2]
    assert [readout_hook(x) for x in ("embed", 1)] == ["hook_embed", "blocks.1.hook_resid_post"]
    tokens = model.to_tokens(TEXT[:20])
    resid, _, _ = collect_residuals(model, tokens)
    with torch.no_grad():  # recording every gate picks another kernel: equal to rounding
        _, cache = model.run_with_cache(tokens)
    assert torch.equal(resid[0], cache["hook_embed"])
    torch.testing.assert_close(resid[2], cache["blocks.1.hook_resid_post"], atol=1e-6, rtol=1e-6)
    assert resid.shape == (4, 1, 20, 12)


def test_collecting_in_windows_with_the_state_carried_equals_one_pass():
    model = small_lm("s6", n_layers=2)
    tokens = model.to_tokens(TEXT[:60])
    whole, _, _ = collect_residuals(model, tokens)
    first, _, state = collect_residuals(model, tokens[:, :25])
    second, _, _ = collect_residuals(model, tokens[:, 25:], state)
    torch.testing.assert_close(torch.cat([first, second], dim=2), whole, atol=1e-5, rtol=1e-5)


def test_an_unfitted_tuned_lens_is_the_logit_lens():
    model = small_lm("lstm")
    tokens = model.to_tokens(TEXT[:30])
    resid, _, _ = collect_residuals(model, tokens)
    tuned, logit = TunedLens.from_model(model), LogitLens(model)
    for i, layer in enumerate(logit.layers):
        assert torch.equal(tuned(resid[i], layer), logit(resid[i], layer))


def test_evaluation_of_the_last_layer_matches_the_model():
    model = small_lm("gru")
    evaluation = evaluate_lenses(model, TEXT, batch_size=4, seq_len=32)
    last = evaluation.table.iloc[-1]
    assert last.layer == "2" and last.kl_bits == pytest.approx(0.0, abs=1e-6)
    assert last.top1_agreement == 1.0
    assert last.ce_bits == pytest.approx(evaluation.model_ce_bits, rel=1e-6)
    # the same positions and streams as the training code's own bits per character
    assert evaluation.model_ce_bits == pytest.approx(
        evaluate_bpc(model, model.tokenizer, TEXT, batch_size=4, seq_len=32), rel=1e-5)
    assert (evaluation.table.kl_bits.iloc[:-1] > 0).all()
    assert list(evaluation.metric("kl_bits").index) == ["embed", "0", "1", "2"]
