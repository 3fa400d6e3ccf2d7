"""`HookedModel`: what an analysis or a widget may ask of a model, native or adapted.

Every analysis in `workbench.analysis`, every widget and the report is typed against this Protocol,
never against a concrete class, so a native `HookedRecurrentLM` and a `transformers` adapter
(`HookedTransformersLM`) serve alike. Both are `HookedRootModule`s (so also `nn.Module`s:
`parameters()`, `state_dict()`, `eval()` are there too); the Protocol names only what analyses
read beyond that.

| member | what it gives |
| --- | --- |
| `cfg` | family, `n_layers`, `d_model`, `d_hidden`, `d_vocab`, `metadata` |
| `device` | where the parameters live (inputs go there) |
| `tokenizer` | `encode(text) -> ids [pos]`, or None |
| `blocks` | one block per layer, each with a `mixer` (`quantities`, `state_names`) |
| `hook_dict`, `hook_specs()` | hook name -> HookPoint; hook name -> (dimension names, meaning) |
| `state_quantities(layer)` | the carried state of `layer` that is hooked per position |
| `initial_state(batch)` | the zero state, one dict per layer |
| `to_tokens`, `to_str_tokens` | text -> ids [batch, pos]; ids -> display strings |
| `recording_bytes(batch, pos, names)` | bytes a cache of `names` would hold, before running |
| `run_with_cache`, `run_with_hooks`, `__call__` | TransformerLens's ways to run |
| `hooks(fwd_hooks, bwd_hooks)` | TransformerLens's context: hooks held until it exits (backward inside) |
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from workbench.models.specs import HookSpec

HookSpecs = dict[str, HookSpec]  # hook name -> (dimension names, meaning)

__all__ = ["HookSpecs", "HookedModel", "carried_state"]


@runtime_checkable
class HookedModel(Protocol):
    """A hooked recurrent model as analyses see it (see the module's table)."""

    cfg: Any
    tokenizer: Any
    blocks: Any  # nn.ModuleList of blocks; blocks[l].mixer declares quantities and state_names
    hook_dict: dict[str, Any]

    @property
    def device(self) -> torch.device:
        """The device of the parameters, where inputs must go."""
        ...

    def hook_specs(self) -> HookSpecs:
        """Every hook name -> (dimension names, meaning), in the order they fire."""
        ...

    def state_quantities(self, layer: int) -> tuple[str, ...]:
        """The state names of `layer`'s mixer that are also hooked per position, in declared order."""
        ...

    def initial_state(self, batch: int = 1) -> list[dict[str, Tensor]]:
        """The zero state, one dict per layer."""
        ...

    def to_tokens(self, text: str | Sequence[str]) -> Tensor:
        """Text (or equal-length texts) -> ids [batch, pos] on `device`."""
        ...

    def to_str_tokens(self, text_or_tokens: str | Tensor) -> list[str]:
        """One display string per token."""
        ...

    def recording_bytes(self, batch: int, pos: int, names: Sequence[str]) -> int:
        """Bytes a cache of `names` holds for `batch` x `pos`, computed before anything runs."""
        ...

    def run_with_cache(self, *model_args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """Run and record the hooks a names filter selects: (output, cache)."""
        ...

    def run_with_hooks(self, *model_args: Any, **kwargs: Any) -> Any:
        """Run with forward (and backward) hooks added for this call only (this thread's, not the model's)."""
        ...

    def hooks(self, fwd_hooks: Any = (), bwd_hooks: Any = (), reset_hooks_end: bool = True,
              clear_contexts: bool = False) -> AbstractContextManager[Any]:
        """Hooks added until the context exits, for this thread only; a backward pass of a forward run
        inside it reaches `bwd_hooks`."""
        ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """tokens [batch, pos] -> logits [batch, pos, d_vocab] (options as `forward`)."""
        ...


def carried_state(model: HookedModel, layer: int = 0) -> str:
    """The state quantity analyses read by default as `layer`'s memory: the last one the mixer declares
    (LSTM's c after h, S6's state, else h); a layer with no hooked state raises."""
    names = model.state_quantities(layer)
    if not names:
        raise ValueError(f"layer {layer} of a {model.cfg.family} model hooks no carried state per position")
    return names[-1]
