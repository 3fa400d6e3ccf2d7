"""Implicit attention on `transformers` models through the adapters: Mamba2 (per-head scalar decay,
conv, gate, gated RMSNorm), RWKV-4 (the WKV ratio with bonus and receptance), RecurrentGemma (RG-LRU
with conv and GeLU branch; local attention as its pattern) and Mamba (S6).

For each: Ã v + bias reproduces the recorded output (1e-5 float32, 1e-10 float64), Ã equals the
Jacobian of the gates-held-fixed layer, the upper triangle is exactly zero, and a prefix's map is the
top-left block of the full map. Tiny randomly initialised configs, built here (no downloads)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

import workbench  # noqa: E402
from workbench.analysis.implicit_attention import FAMILIES, implicit_attention  # noqa: E402
from workbench.analysis.implicit_attention.api import record  # noqa: E402
from workbench.analysis.implicit_attention.attribution import METHODS, attribute, output_gradients  # noqa: E402
from workbench.analysis.implicit_attention.evaluation import exactness_report, jacobian  # noqa: E402
from workbench.analysis.implicit_attention.mamba2 import Mamba2  # noqa: E402
from workbench.errors import MemoryBudgetError  # noqa: E402

VOCAB = 50
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
CASES = [("mamba2", "exact"), ("mamba2", "normed"), ("mamba2", "paper"), ("rwkv", "exact"),
         ("recurrent_gemma", "exact"), ("recurrent_gemma", "paper"), ("mamba", "exact"), ("mamba", "paper")]


def _spread(linear: torch.nn.Linear) -> None:
    """Weights of unit-variance outputs, so gates and scores leave their near-constant init range."""
    linear.weight.normal_(0, linear.weight.shape[1] ** -0.5)


def build(family: str, dtype: torch.dtype = torch.float64, seed: int = 0):
    """A tiny `transformers` model of `family` under the adapter, conv biases and norms randomised."""
    torch.manual_seed(seed)
    if family == "mamba2":
        hf = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(
            vocab_size=VOCAB, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2, num_heads=4,
            head_dim=8, n_groups=2, chunk_size=8, conv_kernel=4))
        with torch.no_grad():
            for layer in hf.backbone.layers:
                _spread(layer.mixer.in_proj)
                _spread(layer.mixer.out_proj)
                layer.mixer.conv1d.weight.normal_(0, 0.5)
                layer.mixer.conv1d.bias.normal_(0, 0.5)
                layer.mixer.norm.weight.normal_(1, 0.3)
    elif family == "rwkv":
        hf = transformers.RwkvForCausalLM(transformers.RwkvConfig(
            vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, attention_hidden_size=16,
            intermediate_size=32, context_length=64, rescale_every=1))
        with torch.no_grad():
            for block in hf.rwkv.blocks:
                for linear in (block.attention.key, block.attention.value, block.attention.receptance):
                    _spread(linear)
    elif family == "recurrent_gemma":  # layers 0, 1: RG-LRU; layer 2: local attention (window 4)
        hf = transformers.RecurrentGemmaForCausalLM(transformers.RecurrentGemmaConfig(
            vocab_size=VOCAB, hidden_size=16, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
            num_hidden_layers=3, lru_width=16, attention_window_size=4, conv1d_width=4,
            block_types=["recurrent", "recurrent", "attention"], logits_soft_cap=5.0))
        with torch.no_grad():  # gates spread over (0, 1), as in a trained model
            for layer in hf.model.layers[:2]:
                layer.temporal_block.rg_lru.input_gate_weight.normal_(0.0, 1.0)
                layer.temporal_block.rg_lru.recurrent_gate_weight.normal_(0.0, 1.0)
                layer.temporal_block.conv_1d.bias.normal_(0, 0.5)
    else:
        hf = transformers.MambaForCausalLM(transformers.MambaConfig(
            vocab_size=VOCAB, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2))
        with torch.no_grad():
            for layer in hf.backbone.layers:
                _spread(layer.mixer.in_proj)
                _spread(layer.mixer.x_proj)
                layer.mixer.conv1d.bias.normal_(0, 0.5)
    return workbench.from_transformers(hf.to(dtype).eval())


def ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def prefix_state(model, batch: int) -> list:
    """A real, non-zero initial state: the model's own state after 20 tokens."""
    with torch.no_grad():
        _, states = model(ids(batch, 20, seed=9), return_state=True)
    return states


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("family, mode", CASES)
def test_map_times_value_plus_bias_reproduces_the_recorded_output(family, mode, dtype):
    model = build(family, dtype)
    att = implicit_attention(model, ids(2, 120, seed=1), layer=1, mode=mode, initial_state=prefix_state(model, 2))
    d = FAMILIES[family].channel_name
    assert att.maps.shape == (2, model.sizes[d], 120, 120) and att.maps.dtype == dtype
    assert att.bias.abs().max() > 0.01  # the initial state (and conv bias) enter the bias term
    assert att.output.abs().max() > 0.1  # a layer that does something
    assert att.max_error() < TOLERANCE[dtype] * max(1.0, float(att.output.abs().max()))


@pytest.mark.parametrize("family, mode", CASES)
def test_map_equals_the_jacobian_with_gates_detached(family, mode):
    model = build(family)
    tokens = ids(1, 20, seed=3)
    cache = record(model, tokens, [0], mode, initial_state=prefix_state(model, 1))
    form = FAMILIES[family].form(model, cache, 0, mode)
    # the gates-held-fixed recurrence is the layer: it reproduces the cache ...
    assert (form.recur(form.value) - form.output).abs().max() < 1e-12
    # ... and its autograd Jacobian is the map
    att = implicit_attention(model, tokens, layer=0, mode=mode, cache=cache)
    assert (jacobian(form) - att.maps).abs().max() < 1e-12


def test_rwkv_map_is_the_layers_own_jacobian_in_the_value():
    """v enters RWKV's r ⊙ wkv linearly (r, k and the denominators do not depend on it): no gates to
    detach, so autograd through the adapter itself gives Ã."""
    model = build("rwkv")
    tokens = ids(1, 14, seed=4)
    leaf = {}

    def replace(tensor, hook):
        leaf["v"] = tensor.detach().clone().requires_grad_(True)
        return leaf["v"]

    def keep(name):
        def hook(tensor, hook):
            leaf[name] = tensor
            return tensor
        return hook

    hooks = [("blocks.1.mixer.hook_v", replace), ("blocks.1.mixer.hook_r", keep("r")),
             ("blocks.1.mixer.hook_wkv", keep("wkv"))]
    with model.hooks(fwd_hooks=hooks):
        model(tokens, path="reference")
    out = (leaf["r"] * leaf["wkv"])[0]  # [L, d]
    rows = [torch.autograd.grad(out[t].sum(), leaf["v"], retain_graph=True)[0][0].T for t in range(14)]
    jac = torch.stack(rows, dim=1)  # [d, t, j]
    att = implicit_attention(model, tokens, layer=1)
    assert (jac - att.maps[0]).abs().max() < 1e-12


@pytest.mark.parametrize("family, mode", CASES)
def test_upper_triangle_is_exactly_zero(family, mode):
    model = build(family, torch.float32)
    att = implicit_attention(model, ids(1, 70, seed=5), layer=0, mode=mode)
    assert torch.equal(att.maps.triu(1), torch.zeros_like(att.maps))


@pytest.mark.parametrize("family, mode", CASES)
def test_prefix_map_is_the_top_left_block(family, mode):
    model = build(family)
    tokens = ids(1, 80, seed=6)
    full = implicit_attention(model, tokens, layer=1, mode=mode).maps
    for prefix in (1, 33, 64):
        head = implicit_attention(model, tokens[:, :prefix], layer=1, mode=mode).maps
        assert (head - full[..., :prefix, :prefix]).abs().max() < 1e-12


@pytest.mark.parametrize("family", ["mamba2", "rwkv", "recurrent_gemma"])
def test_rows_channels_and_aggregates_are_slices_and_reductions_of_the_full_map(family):
    model = build(family, torch.float32)
    tokens = ids(2, 50, seed=7)
    full = implicit_attention(model, tokens, layer=1)
    rows = implicit_attention(model, tokens, layer=1, queries=[0, 17, -1])
    assert torch.allclose(rows.maps, full.maps[:, :, [0, 17, 49]], atol=1e-6) and rows.max_error() < 1e-5
    some = implicit_attention(model, tokens, layer=1, channels=[1, 9, 14])  # channels of different heads
    assert torch.allclose(some.maps, full.maps[:, [1, 9, 14]], atol=1e-6) and some.max_error() < 1e-5
    cache = record(model, tokens, [1], "exact")  # the budgets below are for the maps, not the forward
    mean = implicit_attention(model, tokens, layer=1, cache=cache, aggregate="mean", memory_budget_bytes=400_000)
    assert torch.allclose(mean.maps, full.maps.mean(1), atol=1e-6)
    norm = implicit_attention(model, tokens, layer=1, cache=cache, aggregate="norm", memory_budget_bytes=400_000)
    assert torch.allclose(norm.maps, (full.maps * full.value[:, :, None, :]).norm(dim=1), atol=1e-5)
    with pytest.raises(MemoryBudgetError, match="channels x 50 queries x 50 positions") as info:
        implicit_attention(model, tokens, layer=1, cache=cache, memory_budget_bytes=150_000)
    assert info.value.needed_bytes > 2 * 50 * 50 * 4  # at least one channel's map
    # one query row fits the same budget
    row = implicit_attention(model, tokens, layer=1, cache=cache, queries=[49], memory_budget_bytes=150_000)
    assert torch.allclose(row.maps, full.maps[:, :, [49]], atol=1e-6)


def test_rwkv_map_stays_finite_and_exact_where_exp_k_overflows_float32():
    """Keys near ±150 (e^150 > float32's 3e38): the map is built from log-space exponents and the
    recorded stable state, so it reproduces the layer as the layer's own max-shifted form does."""
    model = build("rwkv", torch.float32)
    with torch.no_grad():
        for block in model.hf_model.rwkv.blocks:
            block.attention.key.weight.mul_(60.0)
    tokens = ids(1, 90, seed=8)
    _, cache = model.run_with_cache(tokens, names_filter=["blocks.1.mixer.hook_k"])
    assert cache["blocks.1.mixer.hook_k"].abs().max() > 100
    att = implicit_attention(model, tokens, layer=1)
    assert torch.isfinite(att.maps).all()
    assert att.max_error() < 1e-5 * max(1.0, float(att.output.abs().max()))


def test_mamba2_normed_mode_reproduces_the_norms_output_and_exact_mode_stops_before_it():
    model = build("mamba2")
    tokens = ids(1, 40, seed=10)
    exact = implicit_attention(model, tokens, layer=0)
    normed = implicit_attention(model, tokens, layer=0, mode="normed")
    assert "input of the gated RMSNorm" in exact.output_name and "out_proj" in normed.output_name
    assert normed.max_error() < 1e-10 and exact.max_error() < 1e-10
    # the two maps differ by the norm's per-channel factor w_c / rms_t[g] on each query row
    cache = record(model, tokens, [0], "normed")
    factor = Mamba2.norm_factor(model, cache, 0)  # [b, d, L]
    assert torch.allclose(normed.maps, exact.maps * factor[..., None], atol=1e-12)
    assert factor.std() > 0.05  # a real, varying normalisation, not a constant


def test_mamba2_output_gradient_goes_back_through_the_gated_norm():
    """∂target/∂y from the form's closed form equals autograd at the adapter's hook_y."""
    model = build("mamba2")
    tokens = ids(1, 16, seed=11)
    target, query = torch.tensor([7]), 15
    grads, _, _ = output_gradients(model, tokens, query, target, [0])
    cache = record(model, tokens, [0], "paper")
    closed = Mamba2.output_grad(model, 0, "paper", grads[0], cache)  # [b, d, L]
    store = {}

    def keep(tensor, hook):
        store["y"] = tensor
        return tensor

    with torch.enable_grad(), model.hooks(fwd_hooks=[("blocks.0.mixer.hook_y", keep)]):
        logits = model(tokens)
        logp = torch.log_softmax(logits[:, query], -1)[0, 7]
        (grad_y,) = torch.autograd.grad(logp, store["y"])
    assert torch.allclose(closed, grad_y.flatten(2).transpose(1, 2), atol=1e-12)


@pytest.mark.parametrize("family", ["mamba2", "rwkv", "recurrent_gemma"])
def test_every_attribution_method_scores_each_position_up_to_the_query(family):
    model = build(family, torch.float32)
    tokens = ids(2, 18, seed=12)
    for method in METHODS:
        if method.endswith("_paper") and "paper" not in FAMILIES[family].modes:
            with pytest.raises(ValueError, match="no paper mode"):
                attribute(model, tokens, method, query=12)
            continue
        scores = attribute(model, tokens, method, query=12)
        assert scores.shape == (2, 18) and torch.isfinite(scores[:, :13]).all(), method


def test_exactness_report_covers_every_mode_of_an_adapter_family():
    report = exactness_report(build("mamba2"), ids(1, 30, seed=13), jacobian_positions=8)
    assert list(report["mode"]) == ["exact", "exact", "normed", "normed", "paper", "paper"]
    assert (report.max_error < 1e-10).all() and (report.jacobian_error < 1e-10).all()
    assert (report.upper_triangle_max == 0).all() and (report.prefix_error < 1e-10).all()


def test_griffin_local_attention_block_is_its_own_pattern_exactly():
    """Layer 2 of the tiny Griffin is local attention: Ã is the softmax pattern per head (zero outside
    the window of 4), z = Ã v + bias with the initial state's keys in the bias, and Ã is the block's
    own Jacobian ∂z/∂v (the pattern depends on queries and keys only)."""
    model = build("recurrent_gemma")
    tokens = ids(1, 30, seed=14)
    att = implicit_attention(model, tokens, layer=2, initial_state=prefix_state(model, 1))
    assert att.max_error() < 1e-12 and att.bias.abs().max() > 0.01
    assert torch.equal(att.maps.tril(-4), torch.zeros_like(att.maps))  # beyond the window: exactly 0
    assert torch.allclose(att.maps[0, :, 10:].sum(-1), torch.ones(16, 20, dtype=torch.float64))  # window inside
    leaf = {}

    def replace(tensor, hook):
        leaf["v"] = tensor.detach().clone().requires_grad_(True)
        return leaf["v"]

    def keep(tensor, hook):
        leaf["z"] = tensor
        return tensor

    with model.hooks(fwd_hooks=[("blocks.2.mixer.hook_v", replace), ("blocks.2.mixer.hook_z", keep)]):
        model(tokens[:, :12])
    z, v = leaf["z"][0].flatten(1), leaf["v"]  # [L, H·P], [1, L, Hkv, P]
    short = implicit_attention(model, tokens[:, :12], layer=2)
    kv_of_channel = torch.arange(16) // 4 // 2  # channel -> query head -> key/value head
    for t in range(12):
        for c in range(16):
            # ∂z_t[c]/∂v_j[kv(c), p(c)] for every j: row t of channel c's map
            (grad,) = torch.autograd.grad(z[t, c], v, retain_graph=True)
            assert torch.allclose(grad[0, :, kv_of_channel[c], c % 4], short.maps[0, c, t], atol=1e-12)


def test_griffin_rollout_runs_across_recurrent_and_attention_blocks():
    model = build("recurrent_gemma", torch.float32)
    tokens = ids(2, 20, seed=15)
    for method in ("rollout", "attr"):
        scores = attribute(model, tokens, method, query=19)
        assert scores.shape == (2, 20) and torch.isfinite(scores).all() and (scores[:, :20] >= 0).all()
