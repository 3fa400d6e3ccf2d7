"""Mamba-2 hybrids (Bamba, GraniteMoeHybrid, NemotronH, Falcon-H1, Zamba2) as implicit attention, layer by
layer and stack-wide.

Mamba-2 layers: the Mamba2 form (`implicit_attention.mamba2`, its modes exact / normed / paper) on the
same hooks. Attention layers: their own softmax pattern, exactly (values per query head, output z before
W_o, the KV cache of an earlier call to the bias), whatever the mode. A Falcon-H1 block runs both on one
input and sums them: its map is `ParallelForm`, the Mamba-2 channels then the attention channels, each
exact, with `projection` = [m_ssm_out · out_proj, m_attn_out · o_proj] summing them into the block's
output (exactly in "normed" mode, whose output is out_proj's input). `attribute(..., "rollout")`
composes the layers' channel-aggregated maps through the residual stream (Abnar & Zuidema 2020): an
approximation, since it treats the MLPs and norms between layers as identity on positions and the
aggregated per-channel maps as one map per layer; each layer's own map is exact.

Zamba2: every layer's map is its Mamba-2 mixer's; a hybrid layer's shared attention (this depth's use,
`blocks.{l}.shared_attn.hook_pattern`) is its own exact map (`shared_attention_form`), and the rollout
applies it as a stage before that layer's Mamba-2 map (`pre_layer_forms`). That is a further
approximation: the attention's output reaches the Mamba-2 input through the shared MLP and the layer's
linear, not the residual, and the embedding half of its input is treated as the residual stream. The
gradient-weighted rollout (`attr`) weights it by the gradient at `blocks.{l}.shared_attn.hook_out`
(`pre_layer_outputs`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from workbench.analysis.implicit_attention.delta_rule import FullAttentionForm
from workbench.analysis.implicit_attention.form import LinearForm
from workbench.analysis.implicit_attention.kernel import DEFAULT_CHUNK
from workbench.analysis.implicit_attention.mamba2 import HOOKS as MAMBA2_HOOKS
from workbench.analysis.implicit_attention.mamba2 import Mamba2, gated_norm_factor
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["Mamba2Hybrid", "ParallelForm", "attention_layer_form", "parallel_block_form", "position_wise_form",
           "shared_attention_form"]

ATTENTION_HOOKS = ("v", "pattern", "z", "initial_v")


def attention_layer_form(model: HookedModel, cache: dict, layer: int, module: str = "mixer") -> FullAttentionForm:
    """A `HookedRopeAttention` layer (`module`: its path in the block, Zamba2's `shared_attn`, Falcon-H1's
    `mixer.attention`): pattern per head, values per key/value head, output z (before W_o). The KV cache's
    hook (`initial_v`) is the attention's own, or its mixer's where the mixer holds the state (Falcon-H1)."""
    mixer = model.blocks[layer].get_submodule(module)
    sz = mixer.sizes
    owner = module if hasattr(mixer, "hook_initial_v") else module.rsplit(".", 1)[0]

    def hook(name: str) -> str:
        return f"blocks.{layer}.{owner if name == 'initial_v' else module}.hook_{name}"

    pattern = cache[hook("pattern")].permute(0, 2, 1, 3)  # [b, H, L, past + L]
    v, z = cache[hook("v")], cache[hook("z")]  # [b, L, H_kv, P], [b, L, H, P]
    H, P = sz["n_attn_heads"], sz["d_attn_head"]
    kv_of_head = torch.arange(H, device=v.device) // (H // sz["n_kv_heads"])
    value = v.index_select(2, kv_of_head).flatten(2).transpose(1, 2)  # [b, H·P, L]
    cached_v = cache[hook("initial_v")].index_select(1, kv_of_head).to(v.dtype)  # [b, H, past, P]
    state_part = pattern[..., :cached_v.shape[2]] @ cached_v  # [b, H, L, P]
    b, L = v.shape[0], v.shape[1]
    return FullAttentionForm(
        pattern=pattern, value=value, output=z.flatten(2).transpose(1, 2),
        state_part=state_part.permute(0, 1, 3, 2).reshape(b, H * P, L),
        head_index=torch.arange(H * P, device=v.device) // P, value_name=hook("v") + " (per query head)",
        output_name=hook("z"), projection=mixer.hf.o_proj.weight.detach().to(v.dtype),
    )


def shared_attention_form(model: HookedModel, cache: dict, layer: int) -> FullAttentionForm:
    """Zamba2: the shared attention as hybrid `layer` runs it (its LoRA, its KV cache to the bias), exactly."""
    return attention_layer_form(model, cache, layer, module="shared_attn")


def position_wise_form(model: HookedModel, cache: dict, layer: int) -> FullAttentionForm:
    """An MLP or mixture-of-experts block (NemotronH): it mixes no positions, so its map is the identity,
    exactly, with value = output = its hook_out."""
    out = cache[get_act_name("out", layer)].flatten(2).transpose(1, 2)  # [b, d_model, L]
    b, d, L = out.shape
    eye = torch.eye(L, dtype=out.dtype, device=out.device).expand(b, 1, L, L)  # [b, 1, L, L]
    return FullAttentionForm(pattern=eye, value=out, output=out, state_part=torch.zeros_like(out),
                             head_index=torch.zeros(d, dtype=torch.long, device=out.device),
                             value_name=get_act_name("out", layer), output_name=get_act_name("out", layer))


@dataclass
class ParallelForm:
    """Two branches reading one input, side by side (b batch, d = d_first + d_second channels, L pos).

    Channels [0, d_first) are `first`'s, the rest `second`'s; each keeps its own exact map, bias and
    Jacobian check. `projection` [d_model, d] maps both to the block's output, their sum.
    """

    first: LinearForm
    second: FullAttentionForm
    value_name: str
    output_name: str
    projection: Tensor | None = None
    n = 1

    def __post_init__(self) -> None:
        self.value = torch.cat([self.first.value, self.second.value], dim=1)  # [b, d, L]
        self.output = torch.cat([self.first.output, self.second.output], dim=1)  # [b, d, L]

    @property
    def shape(self) -> tuple[int, int, int]:
        b, d, L = self.value.shape
        return b, d, L

    @property
    def split(self) -> int:
        return self.first.shape[1]

    def work_bytes(self, lead: int, queries: int, chunk: int | None = DEFAULT_CHUNK) -> int:
        """The larger branch's peak for the whole chunk: an upper bound."""
        return max(self.first.work_bytes(lead, queries, chunk), self.second.work_bytes(lead, queries, chunk))

    def compose_bytes(self, lead: int, queries: int) -> int:
        return max(self.first.compose_bytes(lead, queries), self.second.compose_bytes(lead, queries))

    def channels(self, index: Tensor) -> LinearForm | FullAttentionForm | ParallelForm:
        """The channels `index`: one branch's form, or both when it lists first's channels, then second's."""
        in_second = index >= self.split
        if not bool(in_second.any()):
            return self.first.channels(index)
        if bool(in_second.all()):
            return self.second.channels(index - self.split)
        if bool((in_second[1:].int() < in_second[:-1].int()).any()):
            raise ValueError(f"channels of a parallel block must list the first branch's channels "
                             f"(0..{self.split - 1}) before the second's ({self.split}..{self.shape[1] - 1}); "
                             "got a mixed order")
        picked = self.projection.index_select(1, index) if self.projection is not None else None
        return ParallelForm(self.first.channels(index[~in_second]), self.second.channels(index[in_second] - self.split),
                            self.value_name, self.output_name, picked)

    def core(self, queries: Tensor | None = None, chunk: int | None = DEFAULT_CHUNK) -> Tensor:
        """Both branches' maps, rows `queries`: [b, d, q, L]."""
        return torch.cat([self.first.core(queries, chunk), self.second.core(queries, chunk)], dim=1)

    def compose(self, alpha: Tensor, queries: Tensor) -> tuple[Tensor, Tensor]:
        maps_1, bias_1 = self.first.compose(alpha[:, :self.split], queries)
        maps_2, bias_2 = self.second.compose(alpha[:, self.split:], queries)
        return torch.cat([maps_1, maps_2], dim=1), torch.cat([bias_1, bias_2], dim=1)

    def recur(self, value: Tensor) -> Tensor:
        """Each branch step by step from its own channels of v (the Jacobian check)."""
        return torch.cat([self.first.recur(value[:, :self.split]), self.second.recur(value[:, self.split:])], dim=1)


def is_parallel(model: HookedModel, layer: int) -> bool:
    """A Falcon-H1 block: Mamba-2 and attention in parallel in one mixer."""
    return isinstance(getattr(model.blocks[layer].mixer, "attention", None), torch.nn.Module)


def _falcon_norm_factor(model: HookedModel, cache: dict, layer: int, dtype: torch.dtype) -> Tensor | None:
    """w_c / rms_t[g](y) per channel, [b, d, L], of a Falcon-H1 norm applied before the gate (normed =
    factor ⊙ y ⊙ gate); None for the other placements (no norm: factor 1; after the gate: Mamba2's)."""
    mixer = model.blocks[layer].mixer
    if not mixer.hf.mamba_rms_norm or not mixer.hf.norm.norm_before_gate:
        return None
    y = cache[get_act_name("y", layer)].flatten(2)  # [b, L, d]
    return gated_norm_factor(mixer, y).to(dtype).transpose(1, 2)


def parallel_block_form(model: HookedModel, cache: dict, layer: int, mode: str) -> ParallelForm:
    """A Falcon-H1 block: the Mamba-2 branch's form (`mode`) beside its attention's pattern, summed into the
    block's output through [m_ssm_out · out_proj, m_attn_out · o_proj].

    "normed" holds the Mamba-2 norm's factor at its recorded value whichever placement the config picks (before
    the gate, after it, or none: factor 1), so its output is out_proj's input and `projection @ output` is
    the block's output exactly.
    """
    mixer = model.blocks[layer].mixer
    own_norm = not mixer.hf.mamba_rms_norm or mixer.hf.norm.norm_before_gate  # not Mamba2's placement
    mamba = Mamba2.form(model, cache, layer, "exact" if mode == "normed" and own_norm else mode)
    if mode == "normed" and own_norm:  # normed = factor ⊙ y ⊙ gate (factor 1 without a norm)
        factor = _falcon_norm_factor(model, cache, layer, mamba.value.dtype)
        gate = cache[get_act_name("gate", layer)].transpose(1, 2)  # [b, d, L]
        mamba = replace(mamba, row_scale=gate if factor is None else gate * factor,
                        output=cache[get_act_name("normed", layer)].transpose(1, 2),
                        output_name=get_act_name("normed", layer) + " (input of out_proj; the norm's 1/rms held "
                                                                    "at its recorded value)")
    attention = attention_layer_form(model, cache, layer, module="mixer.attention")
    _, ssm_out, _, attn_out = mixer.multipliers
    projection = None
    if mamba.projection is not None and attention.projection is not None:
        projection = torch.cat([ssm_out * mamba.projection, attn_out * attention.projection], dim=1)
    return ParallelForm(mamba, attention, f"{mamba.value_name} | {attention.value_name}",
                        f"{mamba.output_name} | {attention.output_name}", projection)


class Mamba2Hybrid:
    """The Mamba-2 hybrid adapters (`HookedMamba2Hybrid`): Mamba2 forms, attention patterns, and both side by
    side for Falcon-H1's parallel blocks (`ParallelForm`)."""

    families = ("bamba", "granitemoehybrid", "nemotron_h", "falcon_h1", "zamba2")
    modes = Mamba2.modes
    channel_name = "d_inner"

    @staticmethod
    def is_recurrent(model: HookedModel, layer: int) -> bool:
        return model.layer_types[layer] in ("mamba", "hybrid")  # Zamba2's hybrid layers end in Mamba-2

    @staticmethod
    def pre_layer_forms(model: HookedModel, cache: dict, layer: int) -> list[FullAttentionForm]:
        """Maps that run inside `layer` before its own (Zamba2's shared attention), for the rollout."""
        if model.layer_types[layer] != "hybrid":
            return []
        return [shared_attention_form(model, cache, layer)]

    @staticmethod
    def pre_layer_outputs(model: HookedModel, layer: int) -> list[str]:
        """The hooks at the outputs (W_o z) of `pre_layer_forms`: their gradient times W_o weighs those maps."""
        return [f"blocks.{layer}.shared_attn.hook_out"] if model.layer_types[layer] == "hybrid" else []

    @staticmethod
    def channel_count(model: HookedModel) -> int:
        """d_inner, or d_inner + n_attn_heads · d_attn_head where the blocks are parallel (Falcon-H1)."""
        sz = model.sizes
        return sz["d_inner"] + (sz["n_attn_heads"] * sz["d_attn_head"] if is_parallel(model, 0) else 0)

    @staticmethod
    def hook_names(layer: int, mode: str, model: HookedModel | None = None) -> list[str]:
        if model is not None and is_parallel(model, layer):
            attention = [f"blocks.{layer}.mixer.attention.hook_{q}" for q in ATTENTION_HOOKS if q != "initial_v"]
            return [get_act_name(q, layer) for q in (*MAMBA2_HOOKS, "initial_v")] + attention
        if model is not None and model.layer_types[layer] == "hybrid":
            shared = [f"blocks.{layer}.shared_attn.hook_{q}" for q in ATTENTION_HOOKS]
            return Mamba2.hook_names(layer, mode, model) + shared
        if model is None or Mamba2Hybrid.is_recurrent(model, layer):
            return Mamba2.hook_names(layer, mode, model)
        if model.layer_types[layer] != "attention":
            return [get_act_name("out", layer)]
        return [get_act_name(q, layer) for q in ATTENTION_HOOKS]

    @staticmethod
    def form(model: HookedModel, cache: dict, layer: int,
             mode: str) -> LinearForm | FullAttentionForm | ParallelForm:
        if is_parallel(model, layer):
            return parallel_block_form(model, cache, layer, mode)
        if Mamba2Hybrid.is_recurrent(model, layer):
            return Mamba2.form(model, cache, layer, mode)
        if model.layer_types[layer] != "attention":
            return position_wise_form(model, cache, layer)
        return attention_layer_form(model, cache, layer)

    @staticmethod
    def output_grad(model: HookedModel, layer: int, mode: str, grad_out: Tensor, cache: dict) -> Tensor:
        """∂target/∂(output of the form), [b, d, L]: the Mamba2 form's, or through W_o for attention."""
        if is_parallel(model, layer):
            return _parallel_output_grad(model, layer, mode, grad_out, cache)
        if Mamba2Hybrid.is_recurrent(model, layer):
            return Mamba2.output_grad(model, layer, mode, grad_out, cache)
        if model.layer_types[layer] != "attention":
            return grad_out.transpose(1, 2)  # the form's output is hook_out itself
        weight = model.blocks[layer].mixer.hf.o_proj.weight.detach().to(grad_out.dtype)
        return (grad_out @ weight).transpose(1, 2)  # [b, H·P, L]


def _parallel_output_grad(model: HookedModel, layer: int, mode: str, grad_out: Tensor, cache: dict) -> Tensor:
    """A Falcon-H1 block's ∂target/∂(form output), [b, d_inner + H·P, L], from the gradient at the Mamba-2
    branch's hook_out (out_proj's output, which reaches the block's output times m_ssm_out): the attention
    branch's z gets that gradient divided by m_ssm_out, times m_attn_out, through o_proj. The Mamba-2 part
    is Mamba2's where the norm follows the gate; with Falcon-H1's norm before the gate (or none) it is the
    gradient at out_proj's input times the norm's factor, held at its recorded value (its 1/rms held fixed)."""
    mixer = model.blocks[layer].mixer
    _, ssm_out, _, attn_out = mixer.multipliers
    if ssm_out == 0:
        raise ValueError(f"block {layer}'s ssm_out_multiplier is 0: the gradient at its Mamba-2 output is zero "
                         "and carries nothing to the attention branch")
    o_proj = mixer.attention.hf.o_proj.weight.detach().to(grad_out.dtype)
    attention = (grad_out * (attn_out / ssm_out)) @ o_proj  # [b, L, H·P]: ∂/∂z
    factor = _falcon_norm_factor(model, cache, layer, grad_out.dtype) if mixer.hf.mamba_rms_norm else None
    if mixer.hf.mamba_rms_norm and factor is None:  # the norm after the gate: Mamba2's own chain
        mamba = Mamba2.output_grad(model, layer, mode, grad_out, cache)
    else:
        g = (grad_out @ mixer.hf.out_proj.weight.detach().to(grad_out.dtype)).transpose(1, 2)  # ∂/∂normed
        if mode != "normed":
            g = g if factor is None else g * factor  # ∂/∂(y ⊙ gate), the norm's factor held
        if mode == "paper":
            g = g * cache[get_act_name("gate", layer)].transpose(1, 2).to(g.dtype)  # ∂/∂y
        mamba = g
    return torch.cat([mamba, attention.transpose(1, 2)], dim=1)
