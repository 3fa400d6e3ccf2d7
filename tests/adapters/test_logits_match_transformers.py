"""Each adapter reproduces the `transformers` model's own logits, on both paths (DESIGN: adapters)."""

from __future__ import annotations

import pytest
import torch

from workbench.adapters import from_transformers

from .conftest import FAMILIES, tiny, tokens


@pytest.mark.parametrize("path", ["reference", "fused"])
def test_logits_equal_transformers_float32(family, path):
    hf = tiny(family)
    model = from_transformers(hf, path=path)
    ids = tokens(2, 11, seed=1)
    with torch.no_grad():
        expected = hf(ids).logits
        got = model(ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("path", ["reference", "fused"])
def test_logits_equal_transformers_with_left_padding(family, path):
    if not FAMILIES[family].supports_padding:
        pytest.skip(f"{FAMILIES[family].hf_class} takes no attention mask")
    hf = tiny(family)
    model = from_transformers(hf)
    ids = tokens(3, 9, seed=2)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # rows of unequal length, left-padded
    mask[2, :6] = 0
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask).logits
        got = model(ids, attention_mask=mask, path=path)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


def test_logits_equal_transformers_float64(family):
    """In float64 the match is limited only by the float32 casts inside `transformers`' norms."""
    hf = tiny(family, torch.float64)
    model = from_transformers(hf)
    ids = tokens(2, 8, seed=3)
    tolerance = FAMILIES[family].float64_tolerance
    with torch.no_grad():
        if FAMILIES[family].float64_logits is not None:
            expected = FAMILIES[family].float64_logits(hf, ids)
        else:
            hidden = hf(ids, output_hidden_states=True).hidden_states[-1]
            expected = hf.get_output_embeddings()(hidden)  # the head in float64 (the library casts to float32)
        for path in ("reference", "fused"):
            torch.testing.assert_close(model(ids, path=path), expected.to(torch.float64), atol=tolerance,
                                       rtol=tolerance)


def test_paths_agree_on_every_hook_float64(family):
    model = from_transformers(tiny(family, torch.float64))
    ids = tokens(2, 13, seed=4)
    with torch.no_grad():
        caches = {p: model.run_with_cache(ids, path=p)[1] for p in ("reference", "fused")}
    assert caches["reference"].keys() == caches["fused"].keys()
    for name, value in caches["reference"].items():
        torch.testing.assert_close(caches["fused"][name], value, atol=1e-10, rtol=1e-10, msg=name)


def test_paths_agree_on_every_hook_float32(family):
    model = from_transformers(tiny(family))
    ids = tokens(2, 13, seed=5)
    with torch.no_grad():
        caches = {p: model.run_with_cache(ids, path=p)[1] for p in ("reference", "fused")}
    for name, value in caches["reference"].items():
        torch.testing.assert_close(caches["fused"][name], value, atol=1e-5, rtol=1e-5, msg=name)


def test_stepping_one_token_at_a_time_with_the_state_equals_the_full_pass(family):
    """The final state carries everything: step-by-step calls give the full pass's logits."""
    model = from_transformers(tiny(family, torch.float64))
    ids = tokens(2, 7, seed=6)
    with torch.no_grad():
        full = model(ids)
        state, stepped = None, []
        for t in range(ids.shape[1]):
            logits, state = model(ids[:, t:t + 1], initial_state=state, return_state=True)
            stepped.append(logits)
    torch.testing.assert_close(torch.cat(stepped, 1), full, atol=1e-10, rtol=1e-10)


def test_paths_agree_across_many_chunks(family):
    """Long enough that every fused scan carries its state across chunk boundaries."""
    hf = tiny(family, torch.float64)
    model = from_transformers(hf)
    ids = tokens(1, 150, seed=11)
    with torch.no_grad():
        logits = {p: model(ids, path=p) for p in ("reference", "fused")}
    torch.testing.assert_close(logits["fused"], logits["reference"], atol=1e-10, rtol=1e-10)


# family -> (the kernel recording runs on CPU when the compiled kernels are built, the training kernel)
SCAN_DISPATCH = {
    "mamba": ("compiled C++ selective scan (CPU)", "chunked selective scan"),
    "falcon_mamba": ("compiled C++ selective scan (CPU)", "chunked selective scan"),
    "mamba2": ("compiled C++ selective scan (CPU), groups in one call", "chunked selective scan, per group"),
    "recurrent_gemma": ("compiled C++ linear scan (CPU, no grad)", "chunked linear scan"),
}


@pytest.mark.parametrize("family_name", sorted(SCAN_DISPATCH))
def test_fused_path_dispatches_like_the_native_mixers(family_name):
    """Recording (no grad) on CPU runs the compiled C++ scan when it is built; a gradient run keeps the
    differentiable chunked scan; both reproduce transformers' logits."""
    from workbench.kernels.cpu_compiled import compiled_kernels_available

    recording_kernel, training_kernel = SCAN_DISPATCH[family_name]
    hf = tiny(family_name)
    model = from_transformers(hf, path="fused")
    ids = tokens(2, 13, seed=3)

    def scan_kernels() -> set[str]:
        return {block.mixer.last_kernel for block in model.blocks if "scan" in block.mixer.last_kernel}

    with torch.no_grad():
        expected = hf(ids).logits
        recorded, cache = model.run_with_cache(ids)
    if compiled_kernels_available():
        assert scan_kernels() == {recording_kernel}
    torch.testing.assert_close(recorded, expected, atol=1e-5, rtol=1e-5)
    trained = model(ids)
    assert scan_kernels() == {training_kernel} and trained.requires_grad
    torch.testing.assert_close(trained.detach(), expected, atol=1e-5, rtol=1e-5)
