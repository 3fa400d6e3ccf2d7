"""The logit lens (nostalgebraist 2020; Belrose et al. 2023 eq. 1): decode every residual stream
through the model's own final norm and unembedding, as if the network stopped at that layer.

Read-outs are named like layers: `"embed"` is the token embedding (`hook_embed`) and an integer `l`
is `blocks.{l}.hook_resid_post`, the residual stream leaving block `l`. The last block's read-out
through the logit lens *is* the model's output, exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from workbench.errors import UnknownHookError
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.edits import Edit
    from workbench.models.protocol import HookedModel

__all__ = [
    "EMBED",
    "Lens",
    "LogitLens",
    "Unembedding",
    "collect_hooks",
    "collect_residuals",
    "layer_label",
    "model_name",
    "readout_hook",
    "readout_layers",
    "resolve_readout",
]

EMBED = "embed"
Layer = int | str  # "embed" or a block index


def readout_layers(model: HookedModel) -> list[Layer]:
    """The read-outs of a model in depth order: `["embed", 0, 1, ..., n_layers - 1]`."""
    return [EMBED, *range(len(model.blocks))]


def readout_hook(layer: Layer) -> str:
    """The hook a read-out decodes: `hook_embed` or `blocks.{l}.hook_resid_post`."""
    return get_act_name(EMBED) if layer == EMBED else get_act_name("resid_post", layer)


def layer_label(layer: Layer) -> str:
    """Axis label of a read-out: `embed`, `0`, `1`, ..."""
    return str(layer)


def resolve_readout(model: HookedModel, layer: Layer) -> int:
    """Index of a read-out in `readout_layers(model)`; negative blocks count from the end.

    An unknown layer raises `UnknownHookError` saying which layers exist.
    """
    n = len(model.blocks)
    if layer == EMBED:
        return 0
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) and -n <= layer < n:
        return int(layer) % n + 1
    raise UnknownHookError(
        get_act_name("resid_post", layer),
        message=f"unknown layer {layer!r}: the model has {n} layer(s), 0..{n - 1}, and {EMBED!r} "
        "(the token embedding)",
    )


def model_name(model: HookedModel) -> str:
    """The name a lens records for its model: the checkpoint directory's name, else a description."""
    checkpoint = getattr(model, "checkpoint", None)
    if checkpoint is not None and getattr(checkpoint, "directory", None) is not None:
        return checkpoint.directory.name
    named = getattr(model.cfg, "metadata", {}).get("name")
    if named:
        return str(named)
    cfg = model.cfg
    return f"unnamed-{cfg.family}-{cfg.n_layers}x{cfg.d_hidden}"


class Unembedding:
    """The model's decoder from the residual stream: logits = W_U · norm_final(h) + b_U.

    Uses the model's own `ln_final` and `unembed` modules, so the last read-out equals the model's
    logits bit for bit. `fingerprint()` hashes their weights: a lens trained on one unembedding
    refuses another.
    """

    def __init__(self, model: HookedModel):
        for part in ("ln_final", "unembed"):
            if not hasattr(model, part):
                raise TypeError(
                    f"a lens needs a language model with a final norm and an unembedding; "
                    f"{type(model).__name__} has no {part!r}"
                )
        self.model = model

    def __call__(self, resid: Tensor) -> Tensor:
        """resid [..., d_model] -> logits [..., d_vocab]."""
        return self.model.unembed(self.model.ln_final(resid))

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the final norm's and the unembedding's float32 weights."""
        digest = hashlib.sha256()
        tensors = {**_named(self.model.ln_final, "ln_final"), **_named(self.model.unembed, "unembed")}
        for name in sorted(tensors):
            array = tensors[name].detach().to("cpu", torch.float32).contiguous().numpy()
            digest.update(name.encode())
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
        digest.update(str(getattr(self.model.ln_final, "kind", "")).encode())
        return digest.hexdigest()[:16]


def _named(module: torch.nn.Module, prefix: str) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


@runtime_checkable
class Lens(Protocol):
    """What every lens offers: a name, a model, its read-outs, the hook each reads, read-out -> logits."""

    name: str
    model: HookedModel

    @property
    def layers(self) -> list[Layer]: ...

    def hooks(self) -> dict[Layer, str]: ...

    def __call__(self, activation: Tensor, layer: Layer) -> Tensor: ...


class LogitLens:
    """Decode any read-out with the model's final norm and unembedding (Belrose et al. 2023 eq. 1).

    >>> from workbench.models import HookedRecurrentLM, RecurrentConfig
    >>> model = HookedRecurrentLM(RecurrentConfig(family="gru", n_layers=2, d_model=8,
    ...                                           d_hidden=8, d_vocab=5))
    >>> lens = LogitLens(model)
    >>> lens.layers
    ['embed', 0, 1]
    """

    name = "logit lens"

    def __init__(self, model: HookedModel):
        self.model = model
        self.unembedding = Unembedding(model)

    @property
    def layers(self) -> list[Layer]:
        return readout_layers(self.model)

    def hooks(self) -> dict[Layer, str]:
        """Read-out -> the hook it decodes."""
        return {layer: readout_hook(layer) for layer in self.layers}

    def __call__(self, resid: Tensor, layer: Layer) -> Tensor:
        """resid [..., d_model] read out at `layer` -> logits [..., d_vocab]."""
        resolve_readout(self.model, layer)
        return self.unembedding(resid)

    def __repr__(self) -> str:
        return f"LogitLens({model_name(self.model)!r}, {len(self.layers)} read-outs)"


@torch.no_grad()
def collect_residuals(
    model: HookedModel,
    tokens: Tensor,
    initial_state: Any = None,
    *,
    memory_budget_bytes: int | None = None,
) -> tuple[Tensor, Tensor, Any]:
    """Run tokens [batch, pos] once; return every read-out stacked [n_readouts, batch, pos, d_model],
    the model's logits [batch, pos, d_vocab] and the final recurrent state (to carry to the next window).
    """
    names = [readout_hook(layer) for layer in readout_layers(model)]
    cache, logits, state = collect_hooks(
        model, tokens, names, initial_state, memory_budget_bytes=memory_budget_bytes
    )
    resid = torch.stack([cache[n] for n in names])  # [n_readouts, batch, pos, d_model]
    return resid, logits, state


@torch.no_grad()
def collect_hooks(
    model: HookedModel,
    tokens: Tensor,
    names: Sequence[str],
    initial_state: Any = None,
    *,
    fwd_hooks: Sequence[tuple[Any, Callable[..., Any]]] = (),
    edits: Sequence[Edit] = (),
    memory_budget_bytes: int | None = None,
) -> tuple[dict[str, Tensor], Tensor, Any]:
    """Run tokens [batch, pos] once recording `names`; return hook -> [batch, pos, ...], the logits
    [batch, pos, d_vocab] and the final recurrent state (to carry to the next window).

    Hooks already attached to the model (`model.hooks(...)`, `add_hook`) stay active, and `fwd_hooks`
    and `edits` are added for this run: every recorded value and the logits are the edited run's, so a
    steered or patched run is lensed as modified.
    """
    with model.hooks(fwd_hooks=list(fwd_hooks)):
        (logits, state), cache = model.run_with_cache(
            tokens,
            names_filter=list(dict.fromkeys(names)),
            initial_state=initial_state,
            return_state=True,
            memory_budget_bytes=memory_budget_bytes,
            edits=edits,
        )
    return dict(cache), logits, state


def check_layers(model: HookedModel, layers: Layer | Sequence[Layer] | None) -> list[Layer]:
    """Read-outs to use (None: all); each unknown one raises `UnknownHookError`."""
    if layers is None:
        return readout_layers(model)
    chosen = [layers] if isinstance(layers, (int, str)) else list(layers)
    if not chosen:
        raise ValueError("no layers given")
    everything = readout_layers(model)
    return [everything[resolve_readout(model, layer)] for layer in chosen]
