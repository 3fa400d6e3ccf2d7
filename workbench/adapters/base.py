"""The frame every `transformers` adapter shares: hooked mixers and blocks around the library's own modules.

An adapter registers the `transformers` model's submodules (embedding, norms, projections) inside
our hooked structure, so parameters are shared, never copied; it recomputes each block's math with
our hook names (DESIGN: the hook contract) on a readable reference path and a fused path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from workbench.errors import EmptyInputError
from workbench.models.generation import generate as generate_tokens
from workbench.models.hooked import HookedRecurrentBase
from workbench.models.paths import ExecutionPath
from workbench.models.recurrence import State

HookSpec = tuple[tuple[str, ...], str]
RESID = ("batch", "pos", "d_model")


class AdapterMixer(nn.Module):
    """A hooked sequence mixer over `transformers` parameters: one HookPoint per quantity and state.

    Subclasses set `quantities` (hooked `[batch, pos, ...]`), `state_names` (hooked as
    `hook_initial_{name}`, `[batch, ...]`) and implement `hook_specs`, `state_specs` and `run`.
    """

    quantities: tuple[str, ...] = ()
    state_names: tuple[str, ...] = ()

    def __init__(self, sizes: Mapping[str, int]):
        super().__init__()
        self.sizes = dict(sizes)
        for name in self.quantities:
            setattr(self, f"hook_{name}", HookPoint())
        for name in self.state_names:
            setattr(self, f"hook_initial_{name}", HookPoint())
        self.last_kernel = "none"

    def hook_point(self, name: str) -> HookPoint:
        return getattr(self, f"hook_{name}")

    def hook_points(self, names: Sequence[str]) -> dict[str, HookPoint]:
        return {name: self.hook_point(name) for name in names}

    def hook_specs(self) -> dict[str, HookSpec]:
        raise NotImplementedError

    def state_specs(self) -> dict[str, HookSpec]:
        raise NotImplementedError

    def zero_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        sizes = {**self.sizes, "batch": batch}
        return {
            name: torch.zeros([sizes[d] for d in dims], device=device, dtype=dtype)
            for name, (dims, _) in self.state_specs().items()
        }

    def prepare_state(self, state: Mapping[str, Tensor] | None, x: Tensor) -> State:
        """Zeros where no state is given; check shapes; fire the initial-state hooks."""
        zeros = self.zero_state(x.shape[0], x.device, x.dtype)
        state = zeros if state is None else state
        prepared: State = {}
        for name in self.state_names:
            if name not in state:
                raise ValueError(f"initial state lacks {name!r}; expected {self.state_names}")
            if state[name].shape != zeros[name].shape:
                raise ValueError(f"initial state {name!r} has shape {tuple(state[name].shape)}, "
                                 f"expected {tuple(zeros[name].shape)}")
            prepared[name] = getattr(self, f"hook_initial_{name}")(state[name].to(x.dtype))
        return prepared

    def forward(self, x: Tensor, state: Mapping[str, Tensor] | None, path: ExecutionPath,
                mask: Tensor | None) -> tuple[Tensor, State]:
        """x: [batch, pos, d_model], mask: [batch, pos] (1 = token) or None -> (out, final state)."""
        initial = self.prepare_state(state, x)
        if path == "reference":
            self.last_kernel = "reference loop"
        return self.run(x, initial, fused=path == "fused", mask=mask)

    def run(self, x: Tensor, state: State, fused: bool, mask: Tensor | None) -> tuple[Tensor, State]:
        raise NotImplementedError


class HookedNorm(nn.Module):
    """A `transformers` norm module, called as is, with its output hooked."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        return self.hook_normalized(self.norm(x))


class AdapterBlock(nn.Module):
    """resid_post = resid_pre + mixer(ln1(resid_pre)) [+ mlp(ln2(...))]; family blocks override forward."""

    def __init__(self, ln1: nn.Module, mixer: AdapterMixer):
        super().__init__()
        self.ln1 = HookedNorm(ln1)
        self.mixer = mixer
        self.hook_resid_pre = HookPoint()
        self.hook_mixer_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def hook_specs(self) -> dict[str, HookSpec]:
        """Names relative to the block -> (dims, meaning), in firing order."""
        specs: dict[str, HookSpec] = {
            "hook_resid_pre": (RESID, "residual stream entering the block"),
            "ln1.hook_normalized": (RESID, "normalised input to the mixer"),
        }
        for name, spec in self.mixer.state_specs().items():
            specs[f"mixer.hook_initial_{name}"] = spec
        for name, spec in self.mixer.hook_specs().items():
            specs[f"mixer.hook_{name}"] = spec
        specs["hook_mixer_out"] = (RESID, "mixer output added to the residual")
        specs.update(self.extra_hook_specs())
        specs["hook_resid_post"] = (RESID, "residual stream leaving the block")
        return specs

    def extra_hook_specs(self) -> dict[str, HookSpec]:
        return {}

    def zero_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> State:
        return self.mixer.zero_state(batch, device, dtype)

    def forward(self, resid: Tensor, state: Mapping[str, Tensor] | None, path: ExecutionPath,
                mask: Tensor | None) -> tuple[Tensor, State]:
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
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()

    def forward(self, resid: Tensor, state: Mapping[str, Tensor] | None, path: ExecutionPath,
                mask: Tensor | None) -> tuple[Tensor, State]:
        resid = self.hook_resid_pre(resid)  # [batch, pos, d_model]
        mixed, new_state = self.mixer(self.ln1(resid), state, path, mask)
        resid = self.hook_resid_mid(resid + self.hook_mixer_out(mixed))
        resid = resid + self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid), new_state


class HookedTransformersLM(HookedRecurrentBase):
    """A `transformers` causal LM under the workbench hook contract, sharing its parameters.

    Subclasses build `self.embed`, `self.blocks`, `self.ln_final` (a `HookedNorm`) and
    `self.unembed` from the wrapped model's own modules and set `self.sizes`.
    """

    family = "transformers"
    # whether a left-padded prompt batch generates each row exactly as that row alone would (the mask
    # zeroes padded inputs, so they leave the state at zero); families whose recurrence reads padding refuse
    generate_with_padding = False

    def __init__(self, hf_model: nn.Module, path: ExecutionPath = "fused"):
        HookedRootModule.__init__(self)
        self.set_default_path(path)
        object.__setattr__(self, "hf_model", hf_model)  # not a submodule: no duplicate names
        self.hf_config = hf_model.config
        self.tokenizer: Any = None
        self.hook_embed = HookPoint()
        self.hook_logits = HookPoint()
        self.sizes: dict[str, int] = {}

    @property
    def cfg(self) -> SimpleNamespace:
        """The shape summary analyses read from every hooked model (family, layers, widths, name)."""
        d_model = self.sizes["d_model"]
        return SimpleNamespace(
            family=self.family, n_layers=len(self.blocks), d_model=d_model,
            d_hidden=self.sizes.get("d_inner", d_model), d_vocab=self.sizes["d_vocab"],
            metadata={"name": getattr(self.hf_config, "_name_or_path", "") or None},
        )

    # ----- shapes and hooks ------------------------------------------------------------------
    def dimension_sizes(self, batch: int = 1, pos: int = 1) -> dict[str, int]:
        return {**self.sizes, "batch": batch, "pos": pos}

    def hook_specs(self) -> dict[str, HookSpec]:
        """Every hook name -> (dimension names, meaning), in the order they fire."""
        specs: dict[str, HookSpec] = {"hook_embed": (RESID, "token embedding")}
        for layer, block in enumerate(self.blocks):
            for name, spec in block.hook_specs().items():
                specs[f"blocks.{layer}.{name}"] = spec
        specs["ln_final.hook_normalized"] = (RESID, "final normalised residual stream")
        specs["hook_logits"] = (("batch", "pos", "d_vocab"), "next-token logits")
        missing = set(self.hook_dict) - set(specs)
        if missing:
            raise AssertionError(f"hooks without a spec: {sorted(missing)}")
        return specs

    def hook_table(self, batch: int = 1, pos: int = 1) -> list[dict[str, Any]]:
        """One row per hook: name, dims, shape for `batch` x `pos`, meaning."""
        sizes = self.dimension_sizes(batch, pos)
        return [
            {"name": name, "dims": "[" + ", ".join(dims) + "]",
             "shape": tuple(sizes[d] for d in dims), "meaning": meaning}
            for name, (dims, meaning) in self.hook_specs().items()
        ]

    def recording_bytes(self, batch: int, pos: int, names: Sequence[str]) -> int:
        """Bytes a cache of `names` holds for `batch` x `pos`, computed before anything runs."""
        sizes = self.dimension_sizes(batch, pos)
        specs = self.hook_specs()
        element = next(self.parameters()).element_size()
        return sum(math.prod(sizes[d] for d in specs[n][0]) * element for n in names)

    def initial_state(self, batch: int = 1) -> list[State]:
        """The zero state, one dict per layer."""
        param = next(self.parameters())
        return [block.zero_state(batch, param.device, param.dtype) for block in self.blocks]

    # ----- tokens ----------------------------------------------------------------------------
    def to_tokens(self, text: str | Sequence[str]) -> Tensor:
        """Text -> token ids [batch, pos] with the checkpoint's tokenizer (equal lengths only)."""
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; load it from a local checkpoint directory "
                             "with workbench.from_transformers('<dir>') or set model.tokenizer")
        return self.tokenizer.to_tokens(text).to(self._device())

    def to_str_tokens(self, text_or_tokens: str | Tensor) -> list[str]:
        """One display string per token, for plots."""
        if isinstance(text_or_tokens, str):
            text_or_tokens = self.to_tokens(text_or_tokens)
        return self.tokenizer.to_str_tokens(text_or_tokens)

    def _as_tokens(self, inputs: Tensor | str | Sequence[str]) -> Tensor:
        if isinstance(inputs, (str, list, tuple)):
            return self.to_tokens(inputs)
        tokens = inputs if inputs.ndim == 2 else inputs[None]  # [batch, pos]
        if tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise EmptyInputError(f"empty input of shape {tuple(tokens.shape)}; give at least one token")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must be integer ids, got {tokens.dtype}")
        return tokens

    def _batch_and_length(self, inputs: Any) -> tuple[int, int]:
        tokens = self._as_tokens(inputs)
        return tokens.shape[0], tokens.shape[1]

    # ----- running ---------------------------------------------------------------------------
    def embed_tokens(self, tokens: Tensor) -> Tensor:
        return self.embed(tokens)

    def forward(
        self,
        inputs: Tensor | str | Sequence[str],
        attention_mask: Tensor | None = None,
        initial_state: list[State] | None = None,
        return_state: bool = False,
        path: ExecutionPath | None = None,
        return_type: str | None = "logits",
    ) -> Any:
        """tokens [batch, pos] -> logits [batch, pos, d_vocab] (and the final state per layer).

        `attention_mask` [batch, pos] (1 = token, 0 = padding) is used as the wrapped model uses it.
        """
        path = self.resolve_path(path)
        tokens = self._as_tokens(inputs)
        if initial_state is not None and len(initial_state) != len(self.blocks):
            raise ValueError(f"initial_state has {len(initial_state)} layers, the model has "
                             f"{len(self.blocks)}")
        resid = self.hook_embed(self.embed_tokens(tokens))  # [batch, pos, d_model]
        states: list[State] = []
        for layer, block in enumerate(self.blocks):
            state = None if initial_state is None else initial_state[layer]
            resid, new_state = block(resid, state, path, attention_mask)
            states.append(new_state)
        resid = self.ln_final(resid)
        logits = self.hook_logits(self.unembed(resid))  # [batch, pos, d_vocab]
        if return_type == "loss":
            out: Any = torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        elif return_type is None:
            out = None
        else:
            out = logits
        return (out, states) if return_state else out

    # ----- generation ------------------------------------------------------------------------
    def generate(
        self,
        prompt: str | Tensor,
        max_new_tokens: int = 100,
        temperature: float = 1.0,
        greedy: bool = False,
        seed: int | None = 0,
        path: ExecutionPath | None = None,
        return_text: bool | None = None,
        attention_mask: Tensor | None = None,
    ) -> str | Tensor:
        """Continue `prompt` (text, or ids [batch, pos]) by `max_new_tokens` tokens, as the native models do.

        The prompt runs once; then each new token steps the carried recurrent state (and Griffin's
        sliding-window keys and values), so the cost is linear in the length and every hook fires once
        per new token with `[batch, 1, ...]` tensors: steering and patching hooks change what is
        generated. `greedy=True` takes the argmax; otherwise tokens are drawn at `temperature` from a
        generator seeded with `seed` (None: the global generator). No stop at an end-of-text token.
        `attention_mask` [batch, pos] (1 = token) allows a left-padded batch where the family ignores
        padding exactly (Mamba, FalconMamba, Mamba2). Returns text for a text prompt, else ids
        [batch, pos + max_new_tokens]. See `workbench.models.generation.generate`.
        """
        prompt_kwargs = {}
        if attention_mask is not None:
            self._check_generation_mask(attention_mask, self._as_tokens(prompt))
            prompt_kwargs["attention_mask"] = attention_mask
        return generate_tokens(self, prompt, max_new_tokens, temperature, greedy, seed, path, return_text,
                               prompt_kwargs=prompt_kwargs)

    def _check_generation_mask(self, mask: Tensor, tokens: Tensor) -> None:
        """A mask for generation must match the prompt, pad on the left only, and suit the family."""
        if tuple(mask.shape) != tuple(tokens.shape):
            raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, the prompt {tuple(tokens.shape)}")
        if bool((mask == 1).all()):
            return
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
        if not bool(self.generate_with_padding):
            raise ValueError(
                f"{type(self).__name__} cannot generate from a padded batch: its recurrence reads the "
                "padding, so padded rows would continue differently from the same prompts alone; "
                "generate each prompt on its own (or group prompts of equal length)")
        if bool((mask[:, 1:] < mask[:, :-1]).any()):
            raise ValueError("generation needs left padding (zeros before the tokens); the attention_mask "
                             "has padding after a token in some row")
        if bool((mask.sum(1) == 0).any()):
            raise EmptyInputError("a row of the attention_mask is all padding; give every row at least one token")


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
