"""Steering vectors by contrastive activation addition (Rimsky et al. 2024, *Steering Llama 2 via
Contrastive Activation Addition*), at any per-position hook: the residual stream of any layer, or
the recurrent state of any family (Paulo, Marshall & Belrose 2024, *Does Transformer
Interpretability Transfer to RNNs?*, section 4: state steering).

A vector is the mean activation over texts that show a behaviour minus the mean over texts that do
not (for pairs: the mean of per-pair differences, the paper's eq. 1), read at a chosen position.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from workbench.analysis.tokens import group_by_length, tokenize_texts
from workbench.errors import EmptyInputError, UnknownHookError
from workbench.utils import BLOCK_HOOKS, block_name, get_act_name, hook_layer

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = [
    "BLOCK_HOOKS",
    "NORMALIZATIONS",
    "POSITIONS",
    "ModelMismatchError",
    "SteeringVector",
    "activation_samples",
    "contrastive_vector",
    "hook_shape",
    "model_name",
    "resolve_hook",
    "weights_hash",
]

# Where in each text the activation is read.
POSITIONS: tuple[str, ...] = ("last", "mean", "all")
# `None`: the raw mean difference; "unit": norm 1; "relative": norm = the hook's typical norm.
NORMALIZATIONS: tuple[str | None, ...] = (None, "unit", "relative")

Position = Literal["last", "mean", "all"] | int
Normalization = Literal["unit", "relative"] | None


class ModelMismatchError(ValueError):
    """A saved steering vector applied to a model other than the one it was computed on."""


# ----------------------------------------------------------------------------------- hooks
def resolve_hook(model: HookedModel, hook: str, layer: int | None = None) -> str:
    """The full hook name for `hook`: a full name, or a short one (`resid_post`, `c`, `state`, ...)
    in `layer` (default: the middle layer, where Rimsky et al. 2024 find steering works best).
    """
    if not isinstance(hook, str) or not hook:
        raise UnknownHookError(str(hook), message=f"hook must be a non-empty name, got {hook!r}")
    if hook in model.hook_dict:
        name = hook
    else:
        n = len(model.blocks)
        chosen = n // 2 if layer is None else layer
        if not isinstance(chosen, int) or not -n <= chosen < n:
            raise UnknownHookError(
                block_name(chosen),
                message=f"unknown layer {chosen!r}: the model has {n} layer(s), 0..{n - 1}",
            )
        chosen %= n
        quantities = tuple(model.blocks[chosen].mixer.quantities)
        if hook in BLOCK_HOOKS:
            name = get_act_name(hook, chosen)
        elif hook in quantities:
            name = get_act_name(hook, chosen, "mixer")
        else:
            short = (*BLOCK_HOOKS, *quantities)
            close = difflib.get_close_matches(hook, [*short, *model.hook_dict], n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownHookError(
                hook,
                message=(
                    f"unknown hook {hook!r}: give a full hook name (see model.hook_table()) or a "
                    f"short one: {', '.join(BLOCK_HOOKS)}, or a {model.cfg.family} mixer quantity "
                    f"({', '.join(quantities)}){hint}"
                ),
            )
    if name not in model.hook_dict:
        raise UnknownHookError(name, list(model.hook_dict))
    dims = model.hook_specs()[name][0]
    if len(dims) < 2 or dims[1] != "pos":
        raise UnknownHookError(
            name,
            message=(
                f"hook {name!r} has no position axis (dims {list(dims)}); steer a per-position "
                "hook such as hook_resid_post or a mixer state (hook_c, hook_h, hook_state)"
            ),
        )
    return name


def hook_shape(model: HookedModel, name: str) -> tuple[int, ...]:
    """Per-position shape of hook `name`: [d_model], [d_hidden] or S6's [d_inner, d_state].

    A `transformers` adapter names its own dimensions (`model.dimension_sizes`); native models' come
    from their config."""
    from workbench.models.mixers.base import dimension_sizes

    own_sizes = getattr(model, "dimension_sizes", None)
    sizes = own_sizes(1, 1) if callable(own_sizes) else dimension_sizes(model.cfg, batch=1, pos=1)
    return tuple(sizes[d] for d in model.hook_specs()[name][0][2:])


def hook_kind(model: HookedModel, name: str) -> str:
    """"state" for a family's carried recurrent state, "resid" for block-level hooks, else "quantity"."""
    layer = hook_layer(name)
    if layer is None or ".mixer." not in name:
        return "resid"
    quantity = name.rsplit("hook_", 1)[1]
    return "state" if quantity in model.state_quantities(layer) else "quantity"


# ----------------------------------------------------------------------------- identity
def weights_hash(model: HookedModel) -> str:
    """A short SHA-256 of every parameter and buffer, in name order: which weights a vector fits."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def model_name(model: HookedModel) -> str | None:
    """The model's registry name when it has one (`model.name` or `cfg.metadata["name"]`)."""
    name = getattr(model, "name", None) or model.cfg.metadata.get("name")
    return str(name) if name else None


# ---------------------------------------------------------------------------- recording
@torch.no_grad()
def activation_samples(
    model: HookedModel, texts: Sequence[str], hook: str, position: Position = "last", *, what: str = "input",
    path: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Activations of `hook` over `texts` at `position`: (samples [n, *shape], text index [n]).

    "last" and an int give one sample per text, "mean" the text's mean over positions, "all" one
    sample per position. Texts of equal length run as one batch.
    """
    if not (position in POSITIONS or isinstance(position, int)) or isinstance(position, bool):
        raise ValueError(f"unknown position {position!r}; use one of {POSITIONS} or an int index")
    encoded = tokenize_texts(model, texts, what)
    per_text: list[Tensor | None] = [None] * len(encoded)
    for length, members in group_by_length(encoded).items():
        tokens = torch.stack([encoded[i] for i in members]).to(model.device)  # [b, pos]
        _, cache = model.run_with_cache(tokens, names_filter=[hook], path=path)
        acts = cache[hook].float()  # [b, pos, *shape]
        for row, i in enumerate(members):
            a = acts[row]  # [pos, *shape]
            if position == "last":
                per_text[i] = a[-1:]
            elif position == "mean":
                per_text[i] = a.mean(0, keepdim=True)
            elif position == "all":
                per_text[i] = a
            else:
                if not -length <= position < length:
                    raise IndexError(
                        f"position {position} is outside {what} text {i} ({length} characters: "
                        f"{texts[i]!r})"
                    )
                per_text[i] = a[position : position + 1 if position != -1 else None]
    samples = torch.cat(per_text)  # [n, *shape]
    index = torch.cat([torch.full((len(p),), i) for i, p in enumerate(per_text)])  # [n]
    return samples.cpu(), index


# ------------------------------------------------------------------------------- vector
@dataclass
class SteeringVector:
    """A contrastive steering direction at one hook (Rimsky et al. 2024; Paulo et al. 2024).

    `vector` has the hook's per-position shape; `reference_norm` is the mean L2 norm of the
    activations it was computed from, so multipliers can be relative (`Steer(relative=True)`).
    """

    hook: str
    vector: Tensor  # [*shape]: [d_model], [d_hidden] or [d_inner, d_state]
    reference_norm: float
    position: str | int = "last"
    normalize: str | None = None
    whiten: bool = False
    n_positive: int = 0
    n_negative: int = 0
    paired: bool = True
    family: str = ""
    model_name: str | None = None
    weights_hash: str = ""
    label: str = ""
    separation: float = float("nan")  # gap of the class means along the vector, in pooled stds
    pair_cosines: Tensor | None = field(default=None, repr=False)  # [pairs] cos(pair diff, vector)

    @property
    def layer(self) -> int | None:
        return hook_layer(self.hook)

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.vector.shape)

    def at(self, hook: str) -> SteeringVector:
        """The same vector retargeted to another hook of the same shape (e.g. another layer)."""
        return replace(self, hook=hook)

    def scaled_to(self, norm: float) -> SteeringVector:
        """The same direction with L2 norm `norm`."""
        return replace(self, vector=self.vector * (norm / max(self.norm, 1e-30)))

    def check_model(self, model: HookedModel, allow_other_model: bool = False) -> None:
        """Refuse a model whose weights differ from the ones the vector was computed on."""
        if allow_other_model or not self.weights_hash:
            return
        found = weights_hash(model)
        if found != self.weights_hash:
            made = f"{self.model_name!r}" if self.model_name else "another model"
            raise ModelMismatchError(
                f"this steering vector was computed on {made} (weights {self.weights_hash}), but "
                f"the model given has weights {found} ({model_name(model) or 'unnamed'}); pass "
                "allow_other_model=True to apply it anyway"
            )

    def summary(self) -> dict[str, Any]:
        """One row for a table: hook, norm, sizes, diagnostics."""
        cos = self.pair_cosines
        return {
            "label": self.label, "hook": self.hook, "shape": self.shape, "norm": self.norm,
            "reference_norm": self.reference_norm, "position": self.position,
            "normalize": self.normalize, "whiten": self.whiten, "n_positive": self.n_positive,
            "n_negative": self.n_negative, "separation": self.separation,
            "mean_pair_cosine": float(cos.mean()) if cos is not None and len(cos) else float("nan"),
        }

    # -------------------------------------------------------------------------- saving
    def save(self, path: str | Path) -> Path:
        """Write a `.safetensors` file: the tensors, and everything else as JSON metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {"vector": self.vector.detach().cpu().contiguous()}
        if self.pair_cosines is not None:
            tensors["pair_cosines"] = self.pair_cosines.detach().cpu().contiguous()
        meta = {k: getattr(self, k) for k in _SCALARS}
        meta["separation"] = None if math.isnan(self.separation) else self.separation
        save_file(tensors, str(path), metadata={"workbench.steering": json.dumps(meta)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        """Read a vector written by `save` (safetensors: no code is unpickled)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("workbench.steering")
            if raw is None:
                raise ValueError(f"{path} is not a saved steering vector (no workbench.steering metadata)")
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        meta = json.loads(raw)
        meta["separation"] = float("nan") if meta.get("separation") is None else meta["separation"]
        return cls(vector=tensors["vector"], pair_cosines=tensors.get("pair_cosines"), **meta)


_SCALARS = ("hook", "reference_norm", "position", "normalize", "whiten", "n_positive", "n_negative",
            "paired", "family", "model_name", "weights_hash", "label", "separation")


def _whitened(pos: Tensor, neg: Tensor, diff: Tensor, shrinkage: float) -> Tensor:
    """LDA direction Σ⁻¹ Δμ with Σ the pooled within-class covariance shrunk towards a scaled
    identity (Ledoit-Wolf style), rescaled so its projection on Δμ equals |Δμ|²."""
    centred = torch.cat([pos - pos.mean(0), neg - neg.mean(0)]).double()  # [n, d]
    d = centred.shape[1]
    cov = centred.T @ centred / max(1, centred.shape[0] - 2)  # [d, d]
    target = torch.trace(cov) / d
    cov = (1 - shrinkage) * cov + shrinkage * target * torch.eye(d, dtype=cov.dtype)
    w = torch.linalg.solve(cov, diff.double())  # [d]
    scale = float(diff.double() @ diff.double()) / float(w @ diff.double())
    return (w * scale).float()


def contrastive_vector(
    model: HookedModel,
    positive: Sequence[str],
    negative: Sequence[str],
    hook: str = "resid_post",
    *,
    layer: int | None = None,
    position: Position = "last",
    paired: bool = True,
    normalize: Normalization = None,
    whiten: bool = False,
    shrinkage: float = 0.1,
    label: str = "",
    path: str | None = None,
) -> SteeringVector:
    """Contrastive activation addition's vector (Rimsky et al. 2024, eq. 1): mean over pairs of
    a(positive) − a(negative) at `hook` (in `layer`), read at `position` of each text.

    `paired=True` pairs positive[i] with negative[i] (counts must match) and records each pair's
    cosine with the result; `paired=False` takes two sets of any sizes. `whiten` applies the LDA
    correction Σ⁻¹Δμ (shrinkage towards the identity). `normalize` is None, "unit" or "relative"
    (norm = the hook's typical activation norm).
    """
    name = resolve_hook(model, hook, layer)
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; use one of {NORMALIZATIONS}")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}")
    if isinstance(positive, str) or isinstance(negative, str):
        raise TypeError("positive and negative must be lists of texts, not single strings")
    for what, texts in (("positive", positive), ("negative", negative)):
        if not texts:
            raise EmptyInputError(f"no {what} texts given: give at least one")
    if paired and len(positive) != len(negative):
        raise ValueError(
            f"paired=True needs as many positive as negative texts, got {len(positive)} positive "
            f"and {len(negative)} negative; pass paired=False to use them as two sets"
        )
    pos, pos_index = activation_samples(model, positive, name, position, what="positive", path=path)
    neg, neg_index = activation_samples(model, negative, name, position, what="negative", path=path)
    shape = pos.shape[1:]
    pos, neg = pos.flatten(1), neg.flatten(1)  # [n, d]
    diff = pos.mean(0) - neg.mean(0)  # [d]
    cosines = None
    if paired and position != "all":
        per_pair = pos - neg  # [pairs, d]: one sample per text, aligned by index
        cosines = torch.nn.functional.cosine_similarity(per_pair, diff[None], dim=-1)
    elif paired:
        cosines = torch.stack([
            torch.nn.functional.cosine_similarity(
                pos[pos_index == i].mean(0) - neg[neg_index == i].mean(0), diff, dim=0)
            for i in range(len(positive))
        ])
    if float(diff.norm()) == 0.0:
        raise ValueError(
            f"positive and negative activations at {name} are identical (the texts may not differ "
            f"where {position!r} reads them), so there is no direction to steer along"
        )
    vector = _whitened(pos, neg, diff, shrinkage) if whiten else diff
    reference = float(torch.cat([pos, neg]).norm(dim=-1).mean())
    unit = vector / vector.norm()
    projections = (pos @ unit, neg @ unit)
    pooled = math.sqrt(0.5 * (float(projections[0].var()) if len(pos) > 1 else 0.0)
                       + 0.5 * (float(projections[1].var()) if len(neg) > 1 else 0.0))
    gap = float(projections[0].mean() - projections[1].mean())
    separation = gap / pooled if pooled > 0 else float("inf")
    if normalize == "unit":
        vector = unit
    elif normalize == "relative":
        vector = unit * reference
    return SteeringVector(
        hook=name, vector=vector.reshape(shape).contiguous(), reference_norm=reference,
        position=position, normalize=normalize, whiten=whiten, n_positive=len(positive),
        n_negative=len(negative), paired=paired, family=model.cfg.family,
        model_name=model_name(model), weights_hash=weights_hash(model), label=label,
        separation=separation, pair_cosines=cosines,
    )
