"""SAELens on our hook points (the [sae] environment: sae-lens with transformer-lens 3.x): its own
trainer fits SAEs on a recurrent state and the residual stream, and SAEs in its on-disk format load
and splice back exactly."""

from __future__ import annotations

import inspect

import pytest
import torch

import workbench
from tests.adapters.conftest import tiny
from tests.sae.conftest import STATE_HOOK
from workbench.sae import HookedSAE, load_sae, spliced, train_sae

sae_lens = pytest.importorskip("sae_lens")

PATHS = ("reference", "fused")


def corpus_tokens(model, context: int = 64) -> torch.Tensor:
    """Python source as [n_sequences, context] token ids: the kind of text the model was trained on."""
    ids = model.to_tokens(inspect.getsource(workbench.models.hooked), unknown="map")[0]
    n = ids.numel() // context
    return ids[: n * context].view(n, context)


@pytest.fixture(scope="module")
def trained(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sae") / "hook_c"
    return train_sae(model, STATE_HOOK, corpus_tokens(model), d_sae=256, steps=300, batch_tokens=256,
                     output_path=folder)


def test_saelens_trainer_fits_an_sae_on_the_lstm_cell_state(trained):
    assert trained.loss_after < 0.3 * trained.loss_before, (trained.loss_before, trained.loss_after)
    assert trained.sae.cfg.hook_name == STATE_HOOK and trained.sae.cfg.d_in == 128


@pytest.mark.parametrize("path", PATHS)
def test_the_trained_sae_loads_from_its_files_and_splices_exactly(model, tokens, trained, path):
    sae = load_sae(trained.output_path)
    x = torch.randn(4, 128)
    assert torch.allclose(sae.encode(x), trained.sae.encode(x))
    assert torch.allclose(sae.decode(sae.encode(x)), trained.sae_lens_sae.decode(trained.sae_lens_sae.encode(x)),
                          atol=1e-6)
    clean = model(tokens, path=path)
    with spliced(model, sae):
        assert torch.equal(model(tokens, path=path), clean)
        _, cache = model.run_with_cache(tokens, path=path, names_filter=f"{STATE_HOOK}.hook_sae_acts_post")
    assert 0 < float((cache[f"{STATE_HOOK}.hook_sae_acts_post"] > 0).float().mean()) < 0.5  # sparse


def test_saelens_trainer_on_the_residual_stream(model):
    result = train_sae(model, "blocks.0.hook_resid_post", corpus_tokens(model), d_sae=128, steps=100,
                       batch_tokens=256, architecture="topk", k=16)
    assert result.loss_after < 0.5 * result.loss_before, (result.loss_before, result.loss_after)


def test_saelens_trainer_on_the_s6_state_of_a_mamba_adapter():
    mamba = workbench.from_transformers(tiny("mamba"))
    ids = torch.randint(0, 50, (24, 32), generator=torch.Generator().manual_seed(0))
    hook = "blocks.1.mixer.hook_state"  # [batch, pos, d_inner=32, d_state=4], read as d_in = 128
    result = train_sae(mamba, hook, ids, d_sae=64, steps=100, batch_tokens=128)
    assert result.sae.cfg.d_in == 128
    assert result.loss_after < 0.5 * result.loss_before, (result.loss_before, result.loss_after)
    clean = {p: mamba(ids[:2], path=p) for p in PATHS}
    with spliced(mamba, result.sae):
        for path in PATHS:
            assert torch.equal(mamba(ids[:2], path=path), clean[path])


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_an_sae_saved_by_saelens_loads_with_the_same_numbers(tmp_path, architecture):
    classes = {"standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig, {}),
               "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig, {}),
               "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig, {"k": 8})}
    sae_class, cfg_class, extra = classes[architecture]
    torch.manual_seed(0)
    theirs = sae_class(cfg_class(d_in=24, d_sae=48, **extra))
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.3)
    theirs.save_model(tmp_path)
    ours = load_sae(tmp_path)
    x = torch.randn(2, 7, 24)
    assert torch.allclose(ours.encode(x), theirs.encode(x), atol=1e-6)
    assert torch.allclose(ours.decode(ours.encode(x)), theirs.decode(theirs.encode(x)), atol=1e-5)
    back = sae_lens.SAE.load_from_disk(ours.save(tmp_path / "ours"))  # and SAELens reads what we write
    assert torch.allclose(back.encode(x), theirs.encode(x), atol=1e-6)
    assert isinstance(HookedSAE.from_sae_lens(theirs), HookedSAE)
