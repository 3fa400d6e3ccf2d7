"""The TransformerLens `HookedTransformer` names a recurrent language model can honour.

`W_U`, `b_U`, `W_E`, `to_single_token` and `to_string` mean here what they mean there. The one
difference: TransformerLens folds the final norm into the unembedding (`fold_ln`), we do not, so
`W_U` is the raw unembedding and `b_U` is the logits' constant once the norm's scale is fixed
(norm bias · W_U + unembedding bias), which is what direct logit attribution adds to the
components' `cache.logit_attrs` (workbench.models.cache_methods).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from workbench.models.residual import linear_norm

__all__ = ["NO_RECURRENT_MEANING", "TransformerLensSurface"]

_ATTENTION = ("recurrent blocks have no attention weights: a mixer's parameters are on "
              "model.blocks[l].mixer (see model.hook_table() for what each block computes), and "
              "workbench.analysis.implicit_attention gives each layer's token-to-token map")
# HookedTransformer weights and circuits with no meaning for a recurrent block, and what to use instead
NO_RECURRENT_MEANING: dict[str, str] = {
    **{name: _ATTENTION for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "QK", "OV")},
    "W_pos": "a recurrent model has no positional embedding: position lives in the recurrent state",
}


class TransformerLensSurface:
    """Mixin for `HookedLanguageModel`: needs `embed`, `unembed`, `ln_final`, `tokenizer`, `to_tokens`."""

    embed: nn.Module
    unembed: nn.Module
    ln_final: nn.Module
    tokenizer: Any

    def __getattr__(self, name: str) -> Any:
        if name in NO_RECURRENT_MEANING:
            raise AttributeError(f"model.{name}: {NO_RECURRENT_MEANING[name]}")
        return super().__getattr__(name)  # type: ignore[misc]  (nn.Module's: parameters, buffers, modules)

    @property
    def W_U(self) -> Tensor:  # noqa: N802  (TransformerLens's name)
        """The unembedding, [d_model, d_vocab] (not folded with the final norm)."""
        return self.unembed.weight.T

    @property
    def b_U(self) -> Tensor:  # noqa: N802
        """The logits' constant, [d_vocab]: the final norm's bias through W_U plus the unembedding's bias."""
        bias = getattr(self.unembed, "bias", None)
        total = torch.zeros(self.W_U.shape[1], dtype=self.W_U.dtype, device=self.W_U.device) if bias is None \
            else bias.detach().clone()
        norm_bias = linear_norm(self.ln_final).bias
        if norm_bias is not None:
            total = total + norm_bias.detach().to(total) @ self.W_U.detach()
        return total

    @property
    def W_E(self) -> Tensor:  # noqa: N802
        """The token embedding, [d_vocab, d_model] (before any scaling the family applies)."""
        weight = getattr(self.embed, "weight", None)
        if not isinstance(weight, Tensor):
            raise AttributeError(f"the embedding {type(self.embed).__name__} has no weight matrix")
        return weight

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token; anything else raises a ValueError saying how many."""
        if not isinstance(string, str):
            raise TypeError(f"to_single_token takes a string, got {type(string).__name__}")
        ids = self.to_tokens(string)  # [1, pos]
        if ids.shape[-1] != 1:
            raise ValueError(f"{string!r} is {ids.shape[-1]} tokens, not one")
        return int(ids[0, 0])

    def to_string(self, tokens: Tensor | Sequence[int] | int) -> str | list[str]:
        """Token ids -> text: [pos] or one id gives a string, [batch, pos] a list of strings."""
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer to decode with")
        ids = torch.as_tensor(tokens).long()
        if ids.dim() == 0:
            ids = ids[None]
        if ids.dim() == 2:
            return [self.tokenizer.decode(row.tolist()) for row in ids]
        if ids.dim() != 1:
            raise ValueError(f"tokens must be [pos] or [batch, pos], got shape {list(ids.shape)}")
        return self.tokenizer.decode(ids.tolist())
