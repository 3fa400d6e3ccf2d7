"""`FullPrecisionRMSNorm`: a `transformers` RMSNorm (Llama/T5 style, w ⊙ x / rms(x)) that keeps float64.

Jamba's, Zamba's and LFM2's RMSNorms cast to float32 whatever the input dtype; this module computes
in the input dtype or float32, whichever is wider, so float32 models get the library's numbers and
float64 models float64 ones. It shares the library's weight.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FullPrecisionRMSNorm", "rms_norm"]


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """weight ⊙ x / sqrt(mean(x²) + eps) over the last axis, normalised in at least float32, as the
    library does (the product with the weight in the input's dtype)."""
    wide = x.to(torch.promote_types(x.dtype, torch.float32))
    normed = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


class FullPrecisionRMSNorm(nn.Module):
    """The library's RMSNorm module, called through `rms_norm` (`weight`, `variance_epsilon` are its own)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    @property
    def weight(self) -> Tensor:
        return self.norm.weight  # [d], the library's parameter

    @property
    def variance_epsilon(self) -> float:
        return float(getattr(self.norm, "variance_epsilon", getattr(self.norm, "eps", 1e-6)))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.norm.weight, self.variance_epsilon)
