"""Exactness of implicit-attention maps for every family (Zimerman et al. 2024; Ali et al. 2024):
Ã v + bias reproduces the recorded output, Ã is the gates-detached Jacobian, the upper triangle is
exactly zero, and a prefix's map is the top-left block of the full map."""

import pytest
import torch

from workbench.analysis.implicit_attention import FAMILIES, implicit_attention, layer_forms
from workbench.analysis.implicit_attention.api import record
from workbench.analysis.implicit_attention.evaluation import jacobian
from workbench.models import HookedRecurrentLM, RecurrentConfig

CASES = [("s6", "exact"), ("s6", "paper"), ("mingru", "exact"), ("minlstm", "exact"),
         ("lstm", "exact"), ("gru", "exact")]
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def make_model(family: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> HookedRecurrentLM:
    torch.manual_seed(seed)
    cfg = RecurrentConfig(family=family, n_layers=2, d_model=16, d_hidden=12, d_vocab=13, d_state=4)
    return HookedRecurrentLM(cfg).to(dtype)


def random_state(model: HookedRecurrentLM, batch: int) -> list:
    generator = torch.Generator().manual_seed(1)
    return [{k: torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in s.items()}
            for s in model.initial_state(batch)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("family, mode", CASES)
def test_map_times_value_plus_bias_reproduces_the_recorded_output(family, mode, dtype):
    model = make_model(family, dtype)
    tokens = torch.randint(0, 13, (2, 150), generator=torch.Generator().manual_seed(2))
    att = implicit_attention(model, tokens, layer=1, mode=mode, initial_state=random_state(model, 2))
    assert att.maps.shape == (2, 12, 150, 150) and att.maps.dtype == dtype
    assert att.bias.abs().max() > 0.01  # the initial state (and conv bias) enter the bias term
    assert att.max_error() < TOLERANCE[dtype] * max(1.0, float(att.output.abs().max()))


@pytest.mark.parametrize("family, mode", CASES)
def test_map_equals_the_jacobian_with_gates_detached(family, mode):
    model = make_model(family, torch.float64)
    tokens = torch.randint(0, 13, (1, 20), generator=torch.Generator().manual_seed(3))
    state = random_state(model, 1)
    cache = record(model, tokens, [0], mode, initial_state=state)
    form = FAMILIES[family].form(model, cache, 0, mode)
    # the gates-held-fixed recurrence is the layer: it reproduces the cache ...
    assert (form.recur(form.value) - form.output).abs().max() < 1e-12
    # ... and its autograd Jacobian is the map
    att = implicit_attention(model, tokens, layer=0, mode=mode, cache=cache)
    assert (jacobian(form) - att.maps).abs().max() < 1e-12


def test_mingru_map_is_the_models_own_jacobian_in_the_candidate():
    """minGRU's gates depend on the input only, so ∂h/∂h̃ of the model itself equals Ã."""
    model = make_model("mingru", torch.float64)
    tokens = torch.randint(0, 13, (1, 16), generator=torch.Generator().manual_seed(4))
    leaf = {}

    def replace(tensor, hook):
        leaf["h_tilde"] = tensor.detach().clone().requires_grad_(True)
        return leaf["h_tilde"]

    def keep(tensor, hook):
        leaf["h"] = tensor
        return tensor

    with model.hooks(fwd_hooks=[("blocks.0.mixer.hook_h_tilde", replace), ("blocks.0.mixer.hook_h", keep)]):
        model(tokens, path="reference")
    h, h_tilde = leaf["h"][0], leaf["h_tilde"]  # [L, d], [1, L, d]
    rows = [torch.autograd.grad(h[t].sum(), h_tilde, retain_graph=True)[0][0].T for t in range(16)]
    jac = torch.stack(rows, dim=1)  # [d, t, j]
    att = implicit_attention(model, tokens, layer=0)
    assert (jac - att.maps[0]).abs().max() < 1e-12


@pytest.mark.parametrize("family, mode", CASES)
def test_upper_triangle_is_exactly_zero(family, mode):
    model = make_model(family)
    att = implicit_attention(model, torch.randint(0, 13, (1, 70)), layer=0, mode=mode)
    assert torch.equal(att.maps.triu(1), torch.zeros_like(att.maps))


@pytest.mark.parametrize("family, mode", CASES)
def test_prefix_map_is_the_top_left_block(family, mode):
    model = make_model(family, torch.float64)
    tokens = torch.randint(0, 13, (1, 100), generator=torch.Generator().manual_seed(5))
    full = implicit_attention(model, tokens, layer=1, mode=mode).maps
    for prefix in (1, 37, 64):
        head = implicit_attention(model, tokens[:, :prefix], layer=1, mode=mode).maps
        assert (head - full[..., :prefix, :prefix]).abs().max() < 1e-12


def test_paper_mode_drops_skip_conv_and_gate():
    """Paper mode (Ali et al. 2024) is the S6 core on u; it does not reproduce y ⊙ gate."""
    model = make_model("s6", torch.float64)
    tokens = torch.randint(0, 13, (1, 40))
    exact = implicit_attention(model, tokens, mode="exact")
    paper = implicit_attention(model, tokens, mode="paper")
    assert paper.value_name.endswith("hook_conv") and exact.value_name.endswith("hook_x")
    assert paper.max_error() < 1e-12  # it reproduces what it claims: y − D u
    assert (paper.output - exact.output).abs().max() > 1e-3  # ... which is not the layer's output


def test_layer_forms_returns_one_form_per_layer():
    model = make_model("minlstm")
    forms = layer_forms(model, torch.randint(0, 13, (1, 9)))
    assert sorted(forms) == [0, 1] and forms[1].value.shape == (1, 12, 9)
