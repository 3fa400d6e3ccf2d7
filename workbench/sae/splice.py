"""Splice an SAE into a model's forward pass at one hook point, on both paths, with causal replay.

`splice_sae(model, sae, "blocks.0.mixer.hook_c")` puts the SAE's reconstruction plus its error where
the activation was: the logits stay exactly what they were until a hook edits the SAE (its latents
`blocks.0.mixer.hook_c.hook_sae_acts_post`, its error, ...). The splice is a model-wide hook on that
hook point, so a recurrent state edited through a latent at position t is replayed by the recurrence
machinery (`workbench.models.recurrence`): every position >= t changes, none before.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from workbench.models.hook_point import ScopedHookPoint
from workbench.models.hooked import HookedRecurrentBase
from workbench.models.recurrence import is_read_only
from workbench.models.transformer_lens_compat import LensHandle
from workbench.sae.hooked_sae import HOOK_POINTS, HookedSAE

__all__ = ["SpliceHook", "remove_sae", "spliced", "splice_sae"]

CONTAINER = "saes"  # the model's submodule holding spliced SAEs (HookedRecurrentBase.setup names their hooks)


class _Seen(threading.local):
    """Per thread: the raw input and the output of a splice's last call."""

    def __init__(self) -> None:
        self.raw: Tensor | None = None
        self.out: Tensor | None = None


class SpliceHook:
    """The model-wide hook that replaces an activation [batch, pos, ...] by `sae(activation)`.

    During a causal replay the recurrence calls its hooks again on the whole tensor, whose positions
    other than the one being recomputed hold this hook's own earlier outputs. The SAE must see the raw
    activation there (its latents are recorded from the last call), so a position whose value is this
    hook's own last output keeps the raw value that produced it."""

    def __init__(self, sae: HookedSAE, hook_name: str):
        self.sae, self.hook_name = sae, hook_name
        self._seen = _Seen()

    def raw_input(self, x: Tensor) -> Tensor:
        """x with each position that holds this hook's last output replaced by the raw value behind it."""
        seen = self._seen
        if seen.out is None or seen.raw is None or seen.out.shape != x.shape or seen.out.device != x.device:
            return x
        own = (x == seen.out).reshape(x.shape[0], x.shape[1], -1).all(-1)  # [batch, pos]
        if not bool(own.any()):
            return x
        return torch.where(own.view(*own.shape, *([1] * (x.ndim - 2))), seen.raw, x)

    def __call__(self, x: Tensor, hook: ScopedHookPoint) -> Tensor:
        others = [h.user_hook for h in hook.fwd_hooks if h.user_hook is not self and not is_read_only(h.user_hook)]
        if others:
            raise ValueError(f"{self.hook_name}: an SAE is spliced here, so edit its hook points instead "
                             f"({self.hook_name}.hook_sae_acts_post, ...hook_sae_output); found the editing "
                             f"hooks {others!r} on {self.hook_name} itself")
        raw = self.raw_input(x)
        flat = raw.reshape(*raw.shape[:2], -1)  # [batch, pos, d_in]
        out = self.sae(flat).view_as(raw)
        if torch.equal(out, raw):  # nothing edited: a later call's inputs are raw wherever they match
            self._seen.raw = self._seen.out = None
        else:  # kept (per thread, until the next call) only while an edit is in play
            self._seen.raw, self._seen.out = raw.detach(), out.detach()
        return out

    def __repr__(self) -> str:
        return f"SpliceHook({self.hook_name})"


def _container(model: HookedRecurrentBase) -> nn.ModuleDict:
    saes = model._modules.get(CONTAINER)
    if saes is None:
        saes = nn.ModuleDict()
        model.add_module(CONTAINER, saes)
    return saes  # type: ignore[return-value]


def _key(hook_name: str) -> str:
    return hook_name.replace(".", "__")  # a ModuleDict key cannot hold a dot


def splice_sae(model: HookedRecurrentBase, sae: HookedSAE, hook_name: str | None = None) -> HookedSAE:
    """Splice `sae` into `model` at `hook_name` (default: the hook SAELens trained it on) and return it.

    Its hook points become model hooks `{hook_name}.hook_sae_acts_post` etc. The hook must have a
    position axis and trailing dimensions of d_in elements in all (an S6 state [batch, pos, d_inner,
    d_state] is read flattened, d_in = d_inner * d_state). The SAE moves to the model's device and dtype."""
    if not isinstance(sae, HookedSAE):
        raise TypeError(f"sae: expected a HookedSAE (workbench.sae.load_sae, HookedSAE.from_sae_lens); "
                        f"got {type(sae).__name__}")
    if sae.spliced_at is not None:
        raise ValueError(f"sae: already spliced at {sae.spliced_at!r}; remove_sae it first or load another copy")
    name = hook_name if hook_name is not None else sae.cfg.hook_name
    if name is None:
        raise ValueError("hook_name: this SAE's config names no hook; give the hook to splice it into")
    model.check_hook_name(name)
    name = model.canonical_hook_name(name)
    specs = model.hook_specs()
    dims = specs[name][0]
    if any(name == other.spliced_at for other in _container(model).values()):
        raise ValueError(f"hook_name: an SAE is already spliced at {name!r}; remove_sae(model, {name!r}) first")
    if name.split(".")[-1].startswith("hook_sae_") or len(dims) < 3 or dims[:2] != ("batch", "pos"):
        raise ValueError(f"hook_name: an SAE splices into a hook shaped [batch, pos, ...]; {name} is "
                         f"[{', '.join(dims)}]")
    sizes = model.dimension_sizes()
    d_in = math.prod(sizes[d] for d in dims[2:])
    if d_in != sae.cfg.d_in:
        raise ValueError(f"sae: {name} has {d_in} elements per position ([{', '.join(dims)}]), the SAE reads "
                         f"d_in={sae.cfg.d_in}")
    param = next(model.parameters())
    sae.to(device=param.device, dtype=param.dtype)
    sae.spliced_at = name
    _container(model)[_key(name)] = sae
    point: ScopedHookPoint = model.hook_dict[name]
    sae.splice_handle = point.add_hook(SpliceHook(sae, name), prepend=True, is_permanent=True)
    model.setup()  # names the SAE's hook points {name}.hook_sae_* (HookedRecurrentBase.setup)
    return sae


def remove_sae(model: HookedRecurrentBase, hook_name: str) -> HookedSAE:
    """Take the SAE spliced at `hook_name` out of the model (its hooks go with it) and return it."""
    saes = _container(model)
    name = model.canonical_hook_name(hook_name)
    if _key(name) not in saes:
        raise ValueError(f"hook_name: no SAE is spliced at {hook_name!r}; spliced: "
                         f"{[s.spliced_at for s in saes.values()]}")
    sae: HookedSAE = saes[_key(name)]  # type: ignore[assignment]
    point: ScopedHookPoint = model.hook_dict[name]
    handle: LensHandle | None = sae.splice_handle
    point._model_fwd = [h for h in point._model_fwd if h is not handle]
    del saes[_key(name)]
    sae.spliced_at, sae.splice_handle = None, None
    for local in HOOK_POINTS:
        getattr(sae, local).name = None
    model.setup()
    return sae


@contextlib.contextmanager
def spliced(model: HookedRecurrentBase, sae: HookedSAE, hook_name: str | None = None) -> Iterator[HookedSAE]:
    """`with spliced(model, sae):` the SAE is in the forward pass inside the block only."""
    name = splice_sae(model, sae, hook_name).spliced_at or ""
    try:
        yield sae
    finally:
        remove_sae(model, name)
