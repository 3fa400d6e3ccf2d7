"""The residual stream read as a sum, for direct logit attribution (TransformerLens's cache methods).

A recurrent model's residual stream is a sum like a transformer's: the embedding plus each block's
mixer output (and MLP output, where the block has one). Its final norm is affine once its scale is
fixed at the value the run used, so each component's share of a logit is exact:

    logits = norm(Σ_c x_c) W_U + b_U = Σ_c [(x_c − centre) / scale ⊙ w] W_U + (b W_U + b_U).

`LinearNorm` is that reading of a norm module (ours, `torch.nn.LayerNorm`, and the RMSNorms of the
`transformers` families we adapt), checked against the module on the run's own residual before use.
TransformerLens folds the norm's weight into W_U; here `apply_ln_to_stack` applies it, so
`apply_ln_to_stack(stack) @ model.W_U` is each component's logits, as there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["LinearNorm", "NormKind", "linear_norm"]

NormKind = Literal["layernorm", "rmsnorm", "identity"]


@dataclass(frozen=True)
class LinearNorm:
    """A norm as (x − mean(x) if centred) / scale ⊙ weight + bias, scale = sqrt(var or mean square + eps)."""

    kind: NormKind
    weight: Tensor | None  # [d_model], the effective per-channel gain (Gemma's 1 + w included)
    bias: Tensor | None  # [d_model]
    eps: float
    module: str  # the module's class name, for messages

    def scale(self, x: Tensor) -> Tensor:
        """The norm's divisor for residuals x [..., d_model]: [..., 1]."""
        if self.kind == "identity":
            return torch.ones_like(x[..., :1])
        x = x.double()
        if self.kind == "layernorm":
            spread = x.var(-1, unbiased=False, keepdim=True)
        else:
            spread = x.pow(2).mean(-1, keepdim=True)
        return (spread + self.eps).sqrt()

    def linear_part(self, x: Tensor, scale: Tensor) -> Tensor:
        """The norm's linear part of a component x [..., d_model] under a fixed `scale` [..., 1]."""
        out = x.double()
        if self.kind == "layernorm":
            out = out - out.mean(-1, keepdim=True)
        out = out / scale.double()
        if self.weight is not None:
            out = out * self.weight.detach().double()
        return out.to(x.dtype)

    def check(self, module: nn.Module, x: Tensor, atol: float = 1e-4) -> None:
        """Raise if this reading does not reproduce `module(x)`: a norm read wrongly would attribute wrongly."""
        with torch.no_grad():
            expected = module(x).double()
            got = self.linear_part(x, self.scale(x)).double()
            if self.bias is not None:
                got = got + self.bias.detach().double()
        error = float((got - expected).abs().max()) if x.numel() else 0.0
        if error > atol * max(1.0, float(expected.abs().max())):
            raise NotImplementedError(
                f"the {self.module} norm does not behave as a {self.kind} (max error {error:.2e}): its "
                "residual components cannot be normalised exactly"
            )


def linear_norm(module: nn.Module) -> LinearNorm:
    """The `LinearNorm` reading of a norm module; an unknown kind raises NotImplementedError naming it."""
    inner = getattr(module, "norm", None)
    if isinstance(inner, nn.Module) and not hasattr(module, "kind"):  # an adapter's HookedNorm wrapper
        module = inner
    name = type(module).__name__
    reading = getattr(module, "linear_reading", None)
    if callable(reading):  # an adapter's own norm (e.g. one recomputed in float64) says how it reads
        return reading()
    kind = getattr(module, "kind", None)
    if kind is not None:  # workbench.models.blocks.Norm
        mapped = {"layernorm": "layernorm", "rmsnorm": "rmsnorm", "none": "identity"}[kind]
        return LinearNorm(mapped, getattr(module, "weight", None), getattr(module, "bias", None),
                          float(getattr(module, "eps", 0.0)), name)
    if isinstance(module, nn.LayerNorm):
        return LinearNorm("layernorm", module.weight, module.bias, float(module.eps), name)
    if isinstance(module, nn.Identity):
        return LinearNorm("identity", None, None, 0.0, name)
    if "RMSNorm" in name and isinstance(getattr(module, "weight", None), Tensor):
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        if eps is None:
            raise NotImplementedError(f"the {name} norm has no eps attribute to read")
        weight = module.weight
        if "Gemma" in name:  # Gemma's RMSNorms scale by 1 + w
            weight = 1.0 + weight
        return LinearNorm("rmsnorm", weight, None, float(eps), name)
    raise NotImplementedError(
        f"no linear reading of a {name} norm: residual components cannot be normalised through it "
        "(supported: the workbench's Norm, torch.nn.LayerNorm, RMSNorm variants with weight and eps)"
    )
