"""xLSTM (mLSTM): the stabilised recurrence holds on the hooks; the reference path is the library's step kernel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from workbench.adapters import from_transformers

from .conftest import tiny, tokens


def test_reference_path_equals_the_library_step_kernel_bit_for_bit():
    """Shorter than the library's chunk size, the library steps exactly as our reference loop does."""
    hf = tiny("xlstm")
    ids = tokens(2, 7, seed=30)
    assert ids.shape[1] < hf.config.chunk_size
    with torch.no_grad():
        torch.testing.assert_close(from_transformers(hf)(ids, path="reference"), hf(ids).logits, atol=0, rtol=0)


def test_stabilised_mlstm_recurrence_holds_on_the_hooked_quantities():
    model = from_transformers(tiny("xlstm", torch.float64))
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens(2, 9, seed=31))
    get = {q: cache[f"blocks.1.mixer.hook_{q}"] for q in ("q", "k", "v", "i", "f", "m", "C", "n", "h")}
    shift = lambda x: torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)  # noqa: E731  state before t
    log_f = F.logsigmoid(get["f"])
    torch.testing.assert_close(get["m"], torch.maximum(log_f + shift(get["m"]), get["i"]))
    f_act, i_act = torch.exp(log_f + shift(get["m"]) - get["m"]), torch.exp(get["i"] - get["m"])
    outer = get["k"][..., :, None] * get["v"][..., None, :]  # [batch, pos, H, d_qk, d_v]
    torch.testing.assert_close(get["C"], f_act[..., None, None] * shift(get["C"]) + i_act[..., None, None] * outer)
    torch.testing.assert_close(get["n"], f_act[..., None] * shift(get["n"]) + i_act[..., None] * get["k"])
    q = get["q"] / get["q"].shape[-1] ** 0.5
    numerator = torch.einsum("bphk,bphkv->bphv", q, get["C"])
    denominator = torch.maximum((q * get["n"]).sum(-1).abs(), torch.exp(-get["m"])) + 1e-6
    torch.testing.assert_close(get["h"], numerator / denominator[..., None])


def test_fused_path_gives_the_same_readout_with_or_without_the_memory_hooked():
    """Unhooked, the fused path runs the chunkwise parallel form; hooked C runs the linear scans."""
    model = from_transformers(tiny("xlstm", torch.float64))
    ids = tokens(2, 150, seed=32)
    with torch.no_grad():
        _, light = model.run_with_cache(ids, names_filter=lambda n: n.endswith("mixer.hook_h"))
        kernel = model.blocks[0].mixer.last_kernel
        _, heavy = model.run_with_cache(ids, names_filter=lambda n: n.endswith(("mixer.hook_h", "mixer.hook_C")))
    assert "chunkwise" in kernel and "linear scan" in model.blocks[0].mixer.last_kernel
    for name, value in light.items():
        torch.testing.assert_close(heavy[name], value, atol=1e-10, rtol=1e-10)


def test_fused_weight_layout_matches_the_library():
    """weight_mode="fused" (one q/k/v/o projection, one i/f projection) reads the same slices."""
    import transformers
    from transformers.initialization import no_init_weights

    config = transformers.xLSTMConfig(vocab_size=50, hidden_size=128, num_hidden_layers=2, num_heads=4,
                                      qk_dim_factor=0.5, ffn_proj_factor=1.0, chunk_size=8, weight_mode="fused")
    torch.manual_seed(0)
    with no_init_weights():  # the library's own initialiser fails for this layout in transformers 5.24
        hf = transformers.xLSTMForCausalLM(config).eval()
    with torch.no_grad():
        for param in hf.parameters():
            param.normal_(0.0, 0.1 if param.ndim > 1 else 0.5)
        for block in hf.backbone.blocks:
            block.mlstm_layer.ifgate_preact.bias[4:].add_(3.0)  # forget gates near σ(3)
    ids = tokens(2, 11, seed=33)
    model = from_transformers(hf)
    with torch.no_grad():
        expected = hf(ids).logits
        for path in ("reference", "fused"):
            torch.testing.assert_close(model(ids, path=path), expected, atol=1e-5, rtol=1e-5)


def test_padding_mask_is_refused_with_the_reason():
    model = from_transformers(tiny("xlstm"))
    ids = tokens(2, 5, seed=34)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    with pytest.raises(ValueError, match="no attention mask"):
        model(ids, attention_mask=mask)
    model(ids, attention_mask=torch.ones_like(ids))  # an all-ones mask is accepted
