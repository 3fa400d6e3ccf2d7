"""An SAE spliced into the forward pass: exact with its error term, causal under a latent edit, on
both paths; its latents hooked and cached; SAELens's file layout written and read back. Needs no
sae-lens (runs in both environments)."""

from __future__ import annotations

import pytest
import torch

from tests.sae.conftest import STATE_HOOK, random_sae
from workbench.sae import load_sae, remove_sae, splice_sae, spliced

PATHS = ("reference", "fused")
LATENTS = f"{STATE_HOOK}.hook_sae_acts_post"
EDIT_AT = 12


@pytest.fixture(scope="module")
def clean(model, tokens) -> dict[str, torch.Tensor]:
    return {path: model(tokens, path=path) for path in PATHS}


@pytest.fixture(scope="module")
def sae():
    return random_sae(128, 256)


def ablate_at(position: int):
    def ablate(acts: torch.Tensor, hook) -> torch.Tensor:  # [batch, pos, d_sae]
        acts[:, position] = 0.0
        return acts
    return ablate


@pytest.mark.parametrize("path", PATHS)
def test_splicing_with_the_error_term_reproduces_the_logits_exactly(model, tokens, clean, sae, path):
    with spliced(model, sae):
        logits, cache = model.run_with_cache(tokens, path=path, names_filter=lambda n: "hook_sae" in n)
    assert torch.equal(logits, clean[path])
    acts = cache[LATENTS]  # [1, pos, 256]
    assert acts.shape == (1, tokens.shape[1], 256)
    assert 0.05 < float((acts > 0).float().mean()) < 0.95, "the random SAE should have live latents"
    assert torch.allclose(cache[f"{STATE_HOOK}.hook_sae_recons"] + cache[f"{STATE_HOOK}.hook_sae_error"],
                          cache[f"{STATE_HOOK}.hook_sae_input"], atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_a_latent_ablation_changes_only_positions_from_t_on(model, tokens, clean, sae, path):
    hooks = ["blocks.0.mixer.hook_c", LATENTS, f"{STATE_HOOK}.hook_sae_input"]
    with spliced(model, sae), model.hooks(fwd_hooks=[(LATENTS, ablate_at(EDIT_AT))]):
        logits, cache = model.run_with_cache(tokens, path=path, names_filter=hooks)
    change = (logits - clean[path]).abs().amax(-1)[0]  # [pos]
    assert torch.all(change[:EDIT_AT] == 0)
    assert torch.all(change[EDIT_AT:] > 1e-4), "the edit must carry through the recurrence to every later position"
    # the cache holds what the model used: the state is the raw state plus the ablation's change of the
    # reconstruction, and the recorded latents are the SAE's on that raw state, ablated at t
    raw = cache[f"{STATE_HOOK}.hook_sae_input"][0]  # [pos, 128]
    acts = sae.encode(raw)
    acts[EDIT_AT] = 0
    assert torch.allclose(cache[LATENTS][0], acts, atol=1e-6)
    assert torch.allclose(cache[STATE_HOOK][0], raw + sae.decode(acts) - sae.decode(sae.encode(raw)), atol=1e-5)


def test_both_paths_agree_under_a_latent_edit(model, tokens, sae):
    with spliced(model, sae):
        runs = [model.run_with_hooks(tokens, path=p, fwd_hooks=[(LATENTS, ablate_at(EDIT_AT))]) for p in PATHS]
    assert torch.allclose(runs[0], runs[1], atol=1e-4)


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_saelens_file_layout_round_trip(tmp_path, sae, architecture):
    original = sae if architecture == "standard" else random_sae(128, 256, architecture=architecture)
    folder = original.save(tmp_path / architecture)
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    again = load_sae(folder)
    x = torch.randn(3, 5, 128)
    assert torch.equal(again.encode(x), original.encode(x))
    assert again.cfg == original.cfg


def test_spliced_hooks_come_and_go_with_the_sae(model, tokens, clean):
    sae = random_sae(128, 64, seed=1)
    splice_sae(model, sae)
    try:
        assert LATENTS in model.hook_dict and LATENTS in model.hook_specs()
        with pytest.raises(ValueError, match="already spliced"):
            splice_sae(model, random_sae(128, 64), STATE_HOOK)
        with pytest.raises(ValueError, match="edit its hook points instead"):
            model.run_with_hooks(tokens, fwd_hooks=[(STATE_HOOK, lambda c, hook: c * 2)])
    finally:
        remove_sae(model, STATE_HOOK)
    assert not any("hook_sae" in name for name in model.hook_dict)
    assert torch.equal(model(tokens), clean[model.path])


def test_bad_splices_say_what_was_expected(model, tmp_path):
    with pytest.raises(ValueError, match="d_in=64"):
        splice_sae(model, random_sae(64, 32))
    with pytest.raises(ValueError, match=r"\[batch, pos, \.\.\.\]"):
        splice_sae(model, random_sae(128, 32), "blocks.0.mixer.hook_initial_c")
    with pytest.raises(TypeError, match="HookedSAE"):
        splice_sae(model, torch.nn.Linear(2, 2))
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        load_sae(tmp_path)
    assert not any("hook_sae" in name for name in model.hook_dict)


def test_sae_files_we_cannot_compute_are_refused_by_name(tmp_path, sae):
    import json

    from safetensors.torch import load_file, save_file

    folder = sae.save(tmp_path / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, "architecture": "gated"}))
    with pytest.raises(ValueError, match="architecture must be one of standard, jumprelu, topk; got 'gated'"):
        load_sae(folder)
    (folder / "cfg.json").write_text(json.dumps({**cfg, "normalize_activations": "layer_norm"}))
    with pytest.raises(ValueError, match="normalize_activations must be 'none'"):
        load_sae(folder)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    weights = load_file(folder / "sae_weights.safetensors")
    save_file({k: v for k, v in weights.items() if k != "b_dec"}, folder / "sae_weights.safetensors")
    with pytest.raises(ValueError, match=r"missing \['b_dec'\]"):
        load_sae(folder)
