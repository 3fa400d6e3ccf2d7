"""The frame every `transformers` adapter shares: hooked mixers and blocks around the library's own modules.

An adapter registers the `transformers` model's submodules (embedding, norms, projections) inside
our hooked structure, so parameters are shared, never copied; it recomputes each block's math with
our hook names (DESIGN: the hook contract) on a readable reference path and a fused path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from workbench.adapters.config import TransformersConfig
from workbench.adapters.placement import Placement, check_offloaded_weights, is_dispatched, onloaded, state_to
from workbench.models.blocks import ResidualBlock
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.hooked import ModelState
from workbench.models.language_model import HookedLanguageModel
from workbench.models.mixers.base import Mixer
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import State
from workbench.models.state_checks import check_initial_state

__all__ = [
    "AdapterBlock",
    "AdapterMixer",
    "AdapterMlpBlock",
    "HookedNorm",
    "HookedTransformersLM",
    "SoftCappedHead",
    "mask_positions",
]


class AdapterMixer(Mixer):
    """A `Mixer` over `transformers` parameters, sized by the wrapped model's `sizes` (no RecurrentConfig).

    Subclasses set `quantities` and `state_names` as native mixers do, and implement `hook_specs`,
    `state_specs` and `mix`, which gets the padding mask to use it as the library does.
    """

    def __init__(self, sizes: Mapping[str, int]):
        super().__init__(None)
        self.sizes = dict(sizes)

    def dimension_sizes(self, batch: int = 1, pos: int = 1) -> dict[str, int]:
        return {**self.sizes, "batch": batch, "pos": pos}

    def mix(self, x: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        raise NotImplementedError


class HookedNorm(nn.Module):
    """A `transformers` norm module, called as is, with its output hooked."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm
        self.hook_normalized = ScopedHookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_normalized(self.norm(x))


class AdapterBlock(ResidualBlock):
    """resid_post = resid_pre + mixer(ln1(resid_pre)) [+ mlp(ln2(...))]; family blocks override forward."""

    def __init__(self, ln1: nn.Module, mixer: AdapterMixer):
        super().__init__()
        self.ln1 = HookedNorm(ln1)
        self.mixer = mixer
        self.hook_resid_pre = ScopedHookPoint()
        self.hook_mixer_out = ScopedHookPoint()
        self.hook_resid_post = ScopedHookPoint()

    def forward(self, resid: Tensor, state: Mapping[str, Tensor] | None, path: ExecutionPath,
                mask: Tensor | None = None) -> tuple[Tensor, State]:
        resid = self.hook_resid_pre(resid)  # [batch, pos, d_model]
        mixed, new_state = self.mixer(self.ln1(resid), state, path, mask)
        return self.hook_resid_post(resid + self.hook_mixer_out(mixed)), new_state


class AdapterMlpBlock(AdapterBlock):
    """resid_mid = resid_pre + mixer(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid)).

    The pre-norm block with an MLP that Griffin and xLSTM share; `mlp` hooks `hook_pre` and
    `hook_post`, and each family's `extra_hook_specs` says in its own words what they hold.
    """

    def __init__(self, ln1: nn.Module, mixer: AdapterMixer, ln2: nn.Module, mlp: nn.Module):
        super().__init__(ln1, mixer)
        self.ln2 = HookedNorm(ln2)
        self.mlp = mlp
        self.hook_resid_mid = ScopedHookPoint()
        self.hook_mlp_out = ScopedHookPoint()

    def forward(self, resid: Tensor, state: Mapping[str, Tensor] | None, path: ExecutionPath,
                mask: Tensor | None = None) -> tuple[Tensor, State]:
        resid = self.hook_resid_pre(resid)  # [batch, pos, d_model]
        mixed, new_state = self.mixer(self.ln1(resid), state, path, mask)
        resid = self.hook_resid_mid(resid + self.hook_mixer_out(mixed))
        resid = resid + self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid), new_state


class HookedTransformersLM(HookedLanguageModel):
    """A `transformers` causal LM under the workbench hook contract, sharing its parameters.

    Each family builds its blocks from the wrapped model's own modules and passes them, with the
    library's final norm, embedding and unembedding, to `__init__`; then registers anything else
    it needs and calls `setup()`. Everything else (hooks, recording, loss, generation) is
    `HookedLanguageModel`'s, as for the native models.
    """

    family = "transformers"
    padding_refusal = None  # the blocks get the attention mask and use it as the library does
    tokenizer_hint = ("load it from a local checkpoint directory with workbench.from_transformers('<dir>') "
                      "or set model.tokenizer")

    def __init__(self, hf_model: nn.Module, sizes: Mapping[str, int], blocks: Sequence[nn.Module],
                 ln_final: nn.Module, embed: nn.Module, unembed: nn.Module, path: ExecutionPath = "fused",
                 family: str | None = None):
        family = family or self.family
        name = getattr(hf_model.config, "_name_or_path", "") or None
        cfg = TransformersConfig.from_sizes(family, len(blocks), sizes, name)
        super().__init__(cfg, blocks, HookedNorm(ln_final))
        self.set_default_path(path)
        object.__setattr__(self, "hf_model", hf_model)  # not a submodule: no duplicate names
        self.hf_config = hf_model.config
        self.family = family
        self.embed = embed
        self.hook_embed = ScopedHookPoint()
        self.unembed = unembed
        self.hook_logits = ScopedHookPoint()
        # where each part computes when accelerate placed the model (`device_map`); None: one device
        self.placement = None
        if is_dispatched(hf_model):
            check_offloaded_weights(hf_model)
            self.placement = Placement.of(embed, blocks, self.ln_final)

    @property
    def device(self) -> torch.device:
        """Where token ids and recordings go: the embedding's device (under a `device_map`, its
        execution device; offloaded weights sit on `meta`)."""
        return super().device if self.placement is None else self.placement.input

    def initial_state(self, batch: int = 1) -> ModelState:
        """The zero state, one dict per layer, each on its block's device (DESIGN: big checkpoints)."""
        if self.placement is None:
            return super().initial_state(batch)
        dtype = next(self.parameters()).dtype
        placed = zip(self.blocks, self.placement.blocks, strict=True)
        return [block.zero_state(batch, device, dtype) for block, device in placed]

    def run_blocks(self, resid: Tensor, initial_state: ModelState | None, path: ExecutionPath | None,
                   mask: Tensor | None = None, stop_at_layer: int | None = None) -> tuple[Tensor, ModelState]:
        """As `HookedRecurrentBase.run_blocks`; under a `device_map` each block runs on its own device
        with its offloaded weights loaded (`workbench.adapters.placement`), its state left there.
        `block_inputs` adds what a family's blocks read beside the residual (Zamba: the embedding)."""
        if self.placement is None and type(self).block_inputs is HookedTransformersLM.block_inputs:
            return super().run_blocks(resid, initial_state, path, mask, stop_at_layer)
        path = self.resolve_path(path)
        stop = len(self.blocks) if stop_at_layer is None else stop_at_layer
        blocks = list(self.blocks)[:stop]
        devices = [resid.device] * stop if self.placement is None else list(self.placement.blocks[:stop])
        if initial_state is not None:
            dtype = next(self.parameters()).dtype  # shapes from zero states on the meta device: no memory
            like = [b.zero_state(resid.shape[0], torch.device("meta"), dtype) for b in blocks]
            check_initial_state(initial_state, like, resid.device if self.placement is None else devices)
        embedding, states = resid, []
        for layer, (block, device) in enumerate(zip(blocks, devices, strict=True)):
            state = None if initial_state is None else state_to(initial_state[layer], device)
            extra = {name: value.to(device) for name, value in self.block_inputs(block, embedding).items()}
            with onloaded(block), _current_device(device):
                resid, state = block(resid.to(device), state, path, None if mask is None else mask.to(device),
                                     **extra)
            states.append(state)
        if stop_at_layer is not None:
            return resid, states  # TransformerLens's stop_at_layer: no final norm
        with onloaded(self.ln_final):
            final = resid if self.placement is None else resid.to(self.placement.final_norm)
            return self.ln_final(final), states

    def block_inputs(self, block: nn.Module, embedding: Tensor) -> dict[str, Tensor]:
        """Keyword inputs `block` reads besides the residual stream; `embedding` is the stream after
        `hook_embed`. None by default."""
        return {}

    def weights_loaded(self, *modules: nn.Module) -> contextlib.AbstractContextManager:
        """The weights of `modules` readable for the duration: offloaded ones loaded (`onloaded`)."""
        return onloaded(*modules)

    # TransformerLens's weight views, read with offloaded weights loaded (the returned tensors keep them)
    @property
    def W_U(self) -> Tensor:  # noqa: N802
        with onloaded(self.unembed):
            return super().W_U

    @property
    def b_U(self) -> Tensor:  # noqa: N802
        with onloaded(self.unembed, self.ln_final):
            return super().b_U

    @property
    def W_E(self) -> Tensor:  # noqa: N802
        with onloaded(self.embed):
            return super().W_E

    @property
    def sizes(self) -> dict[str, int]:
        """Every dimension name the hook specs use -> its size (`cfg.sizes`)."""
        return self.cfg.sizes

    def dimension_sizes(self, batch: int = 1, pos: int = 1) -> dict[str, int]:
        return {**self.cfg.sizes, "batch": batch, "pos": pos}

    def _encode(self, text: str | Sequence[str], unknown: str | None = None) -> Tensor:
        """Text -> ids [batch, pos] with the checkpoint's tokenizer (equal lengths only); `unknown` changes
        nothing (a subword tokenizer maps any text)."""
        return self.tokenizer.to_tokens(text)


class HookedHybridLM(HookedTransformersLM):
    """A hybrid stack whose config names each layer's kind (`layer_types`): the recurrent layers are those
    of kind `recurrent_kind`, and the attention layers add a key axis, `key_pos` = `pos` with no cache."""

    recurrent_kind = "linear_attention"
    generate_with_padding = False  # cached keys of padded positions would need the mask in the state
    layer_types: list[str]

    def dimension_sizes(self, batch: int = 1, pos: int = 1) -> dict[str, int]:
        """With the attention layers' key axis: no cached keys, so `key_pos` = `pos`."""
        return {**super().dimension_sizes(batch, pos), "past": 0, "key_pos": pos}

    @property
    def recurrent_layers(self) -> list[int]:
        """Indices of the recurrent layers (the others are attention or position-wise)."""
        return [layer for layer, kind in enumerate(self.layer_types) if kind == self.recurrent_kind]


def _current_device(device: torch.device) -> contextlib.AbstractContextManager:
    """CUDA's current device set to `device` (kernels such as Triton's launch there), else nothing."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def mask_positions(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero padded positions: x [batch, pos, ...] times mask [batch, pos], as `transformers` does."""
    if mask is None:
        return x
    return (x * mask.reshape(*mask.shape, *([1] * (x.ndim - 2))).to(x.dtype)).to(x.dtype)


class SoftCappedHead(nn.Module):
    """The library's unembedding followed by its logit soft cap: cap · tanh(W h / cap) (Gemma 2, xLSTM-7b).

    One module, so the logit lens decoding through `model.unembed` gives the model's logits exactly.
    """

    def __init__(self, head: nn.Module, cap: float | None):
        super().__init__()
        self.head = head
        self.cap = cap

    @property
    def weight(self) -> Tensor:
        return self.head.weight  # [d_vocab, d_model], the library's own parameter

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(x.to(self.head.weight.dtype))  # [batch, pos, d_vocab]
        if self.cap is None:
            return logits
        return torch.tanh(logits / self.cap) * self.cap
