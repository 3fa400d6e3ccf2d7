"""Adapters under `transformers`' `device_map`: blocks on the CPU and offloaded to disk compute exactly
what the unsplit model computes (DESIGN: big checkpoints across devices; workbench/adapters/placement.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from workbench.adapters import from_transformers
from workbench.adapters.placement import execution_device
from workbench.errors import DeviceMapError
from workbench.models import Edit

from .conftest import FAMILIES, tiny, tokens

LENGTH = 9


def split_map(hf: nn.Module) -> dict[str, str]:
    """Even blocks on "cpu", odd blocks on "disk"; the embedding, final norm and head on "disk" too."""
    device_map = {}
    for top, child in hf.named_children():
        layers = [name for name, sub in child.named_children() if isinstance(sub, nn.ModuleList)]
        if not layers:  # the output head
            device_map[top] = "disk"
            continue
        for name, sub in child.named_children():
            if name == layers[0]:
                device_map.update({f"{top}.{name}.{i}": "disk" if i % 2 else "cpu" for i in range(len(sub))})
            else:
                device_map[f"{top}.{name}"] = "disk"
    return _keep_tied_blocks_together(hf, device_map)


def _keep_tied_blocks_together(hf: nn.Module, device_map: dict[str, str]) -> dict[str, str]:
    """Blocks sharing a module (Zamba's one attention block in every hybrid layer) go where the first
    of them goes: accelerate keeps one copy of a tied weight, so splitting them is refused."""
    from accelerate.utils import find_tied_parameters

    for group in find_tied_parameters(hf):
        keys = [next((k for k in device_map if name == k or name.startswith(k + ".")), None) for name in group]
        keys = [k for k in keys if k is not None]
        for key in keys[1:]:
            device_map[key] = device_map[keys[0]]
    return device_map


@dataclass
class Pair:
    """One family's checkpoint loaded whole and under a device_map with disk offload."""

    family: str
    whole: nn.Module
    split: nn.Module
    ids: torch.Tensor


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request, tmp_path_factory) -> Pair:
    family = request.param
    directory = tmp_path_factory.mktemp(family)
    tiny(family).save_pretrained(directory)
    whole = from_transformers(directory)
    split = from_transformers(directory, device_map=split_map(whole.hf_model),
                              offload_folder=directory / "offload")
    for model in (whole, split):  # as `tiny` sets it: the grouped-matmul experts need 16-byte strides
        model.hf_model.config._experts_implementation = "eager"
    return Pair(family, whole, split, tokens(2, LENGTH, seed=1))


def test_part_of_the_model_is_offloaded(pair: Pair):
    devices = {p.device.type for p in pair.split.hf_model.parameters()}
    assert devices == {"cpu", "meta"}  # offloaded weights wait on `meta` until their block runs
    assert pair.split.placement is not None and pair.whole.placement is None
    assert pair.split.device == torch.device("cpu")
    # TransformerLens's weight views read the offloaded weights (b_U needs a final norm with a linear
    # reading, which Qwen3-Next's offset RMSNorm has not)
    names = ("W_U", "W_E") if pair.family == "qwen3_next" else ("W_U", "b_U", "W_E")
    for name in names:
        assert torch.equal(getattr(pair.split, name), getattr(pair.whole, name)), name


@pytest.mark.parametrize("path", ["reference", "fused"])
def test_logits_and_every_cached_tensor_equal_the_whole_model(pair: Pair, path: str):
    logits, cache = pair.whole.run_with_cache(pair.ids, path=path)
    split_logits, split_cache = pair.split.run_with_cache(pair.ids, path=path)
    assert torch.equal(split_logits, logits)
    assert set(split_cache) == set(cache)
    differing = [name for name in cache if not torch.equal(split_cache[name], cache[name])]
    assert differing == []
    # the final states too, and they feed a continuation as the whole model's do
    _, states = pair.whole(pair.ids, return_state=True, path=path)
    _, split_states = pair.split(pair.ids, return_state=True, path=path)
    for layer, (state, split_state) in enumerate(zip(states, split_states, strict=True)):
        assert all(torch.equal(split_state[k], v) for k, v in state.items()), layer
    if pair.family != "qwen3_next":  # the residual decomposition through the (offloaded) final norm
        assert torch.equal(split_cache.apply_ln_to_stack(split_cache.accumulated_resid()),
                           cache.apply_ln_to_stack(cache.accumulated_resid()))
    more = tokens(2, 3, seed=2)
    assert torch.equal(pair.split(more, initial_state=split_states, path=path),
                       pair.whole(more, initial_state=states, path=path))


def test_edits_on_an_offloaded_block_propagate_as_in_the_whole_model(pair: Pair):
    family = FAMILIES[pair.family]
    layer = 1  # on disk in `split_map`, and recurrent in every family
    assert layer in family.layers_with_state(len(pair.whole.blocks))
    hook = f"blocks.{layer}.mixer.hook_{family.state_hook}"
    edits = [Edit(hook, positions=3, op="scale", value=0.5)]
    # the same segmented route with an edit that changes nothing: equal up to the edited position
    plain = pair.split.run_with_edits(pair.ids, edits=[Edit(hook, positions=3, op="scale", value=1.0)],
                                      path="fused")
    edited = pair.split.run_with_edits(pair.ids, edits=edits, path="fused")
    assert torch.equal(edited, pair.whole.run_with_edits(pair.ids, edits=edits, path="fused"))
    first_changed = 3 + family.state_lag
    assert torch.equal(edited[:, :first_changed], plain[:, :first_changed])
    assert not torch.equal(edited[:, first_changed + 1:], plain[:, first_changed + 1:])

    def zero_at_five(state: torch.Tensor, hook) -> torch.Tensor:  # unmarked: the general replay
        state = state.clone()
        state[:, 5] = 0
        return state

    hooks = [(hook, zero_at_five)]
    assert torch.equal(pair.split.run_with_hooks(pair.ids, fwd_hooks=hooks, path="reference"),
                       pair.whole.run_with_hooks(pair.ids, fwd_hooks=hooks, path="reference"))


def test_generate_matches_the_whole_model(pair: Pair):
    prompt = pair.ids[:1, :4]
    assert torch.equal(pair.split.generate(prompt, max_new_tokens=3, greedy=True),
                       pair.whole.generate(prompt, max_new_tokens=3, greedy=True))
    states = pair.split.initial_state(1)  # one dict per block; NemotronH's MLP blocks carry none
    assert len(states) == len(pair.split.blocks)
    assert {t.device.type for s in states for t in s.values()} == {"cpu"}


# ----- device maps the workbench cannot honour ----------------------------------------------------

@pytest.fixture(scope="module")
def mamba_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("mamba_refusals")
    tiny("mamba").save_pretrained(directory)
    return directory


@pytest.mark.parametrize(("device_map", "offload", "says"), [
    ({"backbone": "cuda:7", "lm_head": "cpu"}, False, "cuda:7"),
    ({"backbone": "disk", "lm_head": "cpu"}, False, "offload_folder"),
    ({"backbone": "meta", "lm_head": "cpu"}, True, "meta"),
    ({"backbone": "gpu", "lm_head": "cpu"}, True, "not a device"),
    ({"backbone": None, "lm_head": "cpu"}, True, "expected 'cpu', 'disk'"),
    ({}, True, "non-empty dict"),
    ("everywhere", True, "not a device"),
    # Mamba ties its head to the embedding: one offloaded without the other has no weights to load
    ({"backbone.embeddings": "cpu", "backbone.layers": "cpu", "backbone.norm_f": "cpu", "lm_head": "disk"},
     True, "tied"),
])
def test_device_maps_that_cannot_be_honoured_are_refused(mamba_dir: Path, device_map, offload: bool, says: str):
    with pytest.raises(DeviceMapError, match=says):
        from_transformers(mamba_dir, device_map=device_map,
                          offload_folder=mamba_dir / "offload" if offload else None)


def test_device_map_with_a_model_object_is_refused():
    with pytest.raises(DeviceMapError, match="dispatch_model"):
        from_transformers(tiny("mamba"), device_map={"": "cpu"})


def test_a_block_split_over_two_devices_is_refused():
    from accelerate.hooks import AlignDevicesHook, add_hook_to_module

    block = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    add_hook_to_module(block[0], AlignDevicesHook(execution_device="cpu"))
    add_hook_to_module(block[1], AlignDevicesHook(execution_device="meta"))
    with pytest.raises(DeviceMapError, match="block 3 computes on several devices"):
        execution_device(block, "block 3")


def test_a_model_object_placed_by_accelerate_is_followed(tmp_path: Path):
    from accelerate import dispatch_model

    whole = from_transformers(tiny("mamba2"))
    placed = dispatch_model(tiny("mamba2"), device_map=split_map(whole.hf_model), offload_dir=str(tmp_path))
    split = from_transformers(placed)
    assert split.placement is not None
    ids = tokens(1, 6, seed=3)
    assert torch.equal(split(ids), whole(ids))


@pytest.mark.parametrize("pair", ["mamba"], indirect=True)
def test_concurrent_calls_share_one_load_of_the_offloaded_weights(pair: Pair):
    from concurrent.futures import ThreadPoolExecutor

    expected = pair.whole(pair.ids, path="fused")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: pair.split(pair.ids, path="fused"), range(8)))
    assert all(torch.equal(r, expected) for r in results)
    # every offloaded weight is back on `meta`, every hook offloading again
    assert {p.device.type for p in pair.split.hf_model.backbone.layers[1].parameters()} == {"meta"}
