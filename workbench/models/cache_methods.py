"""TransformerLens's residual-stream cache methods on a recurrent model's cache.

`accumulated_resid`, `decompose_resid`, `apply_ln_to_stack`, `logit_attrs` and `stack_activation`,
with TransformerLens's signatures and meanings where a recurrent block has one: a block's
"attention" is its mixer (labels `{l}_mixer_out`), and `mode="attn"` is refused with that name.
Components are stacked on a new first axis: `[component, batch, pos, d_model]` (no batch axis after
`remove_batch_dim()`). Direct logit attribution is exact: the components' `logit_attrs` plus the
model's `b_U` difference sum to the logit difference (`workbench.models.residual`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from workbench.models.residual import linear_norm
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["NO_RECURRENT_MEANING", "ResidualStreamMethods"]

# TransformerLens ActivationCache methods with no meaning for a recurrent block, and what to use instead
NO_RECURRENT_MEANING: dict[str, str] = {
    "stack_head_results": "recurrent blocks have no attention heads: decompose_resid() gives each block's "
                          "mixer output, and the implicit-attention maps (workbench.analysis.implicit_attention) "
                          "split a mixer's output by source position",
    "compute_head_results": "recurrent blocks have no attention heads: decompose_resid() gives each block's "
                            "mixer output",
    "get_full_resid_decomposition": "recurrent blocks have no heads or neurons to split into: decompose_resid() "
                                    "gives the embedding and each block's mixer (and MLP) output",
    "stack_neuron_results": "there is no per-neuron output to stack in a recurrent block: decompose_resid() gives "
                            "each block's mixer output; a gate or state per unit is cache[quantity, layer]",
}

Slice = int | slice | Sequence[int] | Tensor | None


def _index(x: Tensor, axis: int, which: Slice) -> Tensor:
    """x with `which` (an int keeps the axis, as TransformerLens's Slice does) taken along `axis`."""
    if which is None:
        return x
    if isinstance(which, int):
        which = [which]
    if isinstance(which, slice):
        return x[(slice(None),) * axis + (which,)]
    index = torch.as_tensor(list(which) if not isinstance(which, Tensor) else which, device=x.device).long()
    return x.index_select(axis, index % x.shape[axis])  # negative positions count from the end


class ResidualStreamMethods:
    """Mixin for `RecurrentCache` (a dict): needs `self.model`, `self.has_batch_dim` and tuple lookups."""

    model: Any
    has_batch_dim: bool

    def __getattr__(self, name: str) -> Any:
        if name in NO_RECURRENT_MEANING:
            raise AttributeError(f"cache.{name}: {NO_RECURRENT_MEANING[name]}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------------------- helpers
    def _model(self) -> HookedModel:
        if self.model is None:
            raise ValueError("this cache has no model attached: residual-stream methods need the model that "
                             "filled it (a cache from model.run_with_cache has one)")
        return self.model

    def _get(self, name: str, what: str) -> Tensor:
        if name not in self:
            raise KeyError(f"{what} needs {name!r} in the cache; run run_with_cache without a names_filter that "
                           "leaves it out")
        return self[name]

    def _layer_count(self, layer: int | None) -> int:
        n = len(self._model().blocks)
        if layer is None or layer == -1:
            return n
        if not 0 <= layer <= n:
            raise ValueError(f"layer {layer} is out of range: the model has {n} blocks (0..{n}, or None for all)")
        return layer

    def _slices(self, stack: Tensor, pos_slice: Slice, batch_slice: Slice = None, has_batch: bool | None = None
                ) -> Tensor:
        """Positions (and batch rows) of a stack [component, (batch,) pos, d]."""
        has_batch = self.has_batch_dim if has_batch is None else has_batch
        if has_batch:
            stack = _index(stack, 1, batch_slice)
        return _index(stack, 2 if has_batch else 1, pos_slice)

    @staticmethod
    def _result(components: list[Tensor], labels: list[str], return_labels: bool) -> Any:
        stack = torch.stack(components)
        return (stack, labels) if return_labels else stack

    # ------------------------------------------------------------------------------- stacks
    def accumulated_resid(self, layer: int | None = None, incl_mid: bool = False, apply_ln: bool = False,
                          pos_slice: Slice = None, return_labels: bool = False) -> Any:
        """The residual stream entering each block before `layer` (all when None), and the final one:
        [component, batch, pos, d_model], labels `{l}_pre`, `{l}_mid`, `final_post`."""
        count = self._layer_count(layer)
        n = len(self._model().blocks)
        components, labels = [], []
        for index in range(count):
            components.append(self._get(get_act_name("resid_pre", index), "accumulated_resid"))
            labels.append(f"{index}_pre")
            mid = get_act_name("resid_mid", index)
            if incl_mid and mid in self:
                components.append(self[mid])
                labels.append(f"{index}_mid")
        if count == n:
            components.append(self._get(get_act_name("resid_post", n - 1), "accumulated_resid"))
            labels.append("final_post")
        stack = self._slices(torch.stack(components), pos_slice)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer if count < n else None, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def decompose_resid(self, layer: int | None = None, mlp_input: bool = False, mode: str = "all",
                        apply_ln: bool = False, pos_slice: Slice = None, incl_embeds: bool = True,
                        return_labels: bool = False) -> Any:
        """The residual stream entering block `layer` (the final one when None) as its summands: the
        embedding, then each earlier block's mixer output and MLP output; `mlp_input` adds block
        `layer`'s own mixer output. mode: "all", "mixer" or "mlp"."""
        if mode == "attn":
            raise ValueError("recurrent blocks have no attention: mode='mixer' selects the mixers' outputs "
                             "(labels '{l}_mixer_out'), mode='mlp' the MLPs'")
        if mode not in ("all", "mixer", "mlp"):
            raise ValueError(f"unknown mode {mode!r}: use 'all', 'mixer' or 'mlp'")
        count = self._layer_count(layer)
        n = len(self._model().blocks)
        components, labels = [], []
        if incl_embeds:
            components.append(self._get(get_act_name("resid_pre", 0), "decompose_resid"))
            labels.append("embed")
        for index in range(min(n, count + (1 if mlp_input and count < n else 0))):
            own = index == count  # block `layer`'s mixer, entering its MLP
            if mode in ("all", "mixer"):
                components.append(self._get(get_act_name("mixer_out", index), "decompose_resid"))
                labels.append(f"{index}_mixer_out")
            mlp = get_act_name("mlp_out", index)
            if mode in ("all", "mlp") and not own and mlp in self:
                components.append(self[mlp])
                labels.append(f"{index}_mlp_out")
        if not components:
            raise ValueError("nothing to decompose: incl_embeds=False and no block before this layer")
        stack = self._slices(torch.stack(components), pos_slice)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer if count < n else None, mlp_input, pos_slice=pos_slice)
        return (stack, labels) if return_labels else stack

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: str | None = None) -> Tensor:
        """One activation of every block before `layer` (all for −1): [layer, batch, pos, ...]."""
        count = self._layer_count(layer)
        return torch.stack([self._get(get_act_name(activation_name, index, sublayer_type), "stack_activation")
                            for index in range(count)])

    # ------------------------------------------------------------------------------- the norm
    def apply_ln_to_stack(self, residual_stack: Tensor, layer: int | None = None, mlp_input: bool = False,
                          pos_slice: Slice = None, batch_slice: Slice = None, has_batch_dim: bool = True) -> Tensor:
        """Each component through the norm that reads it, with the norm's scale fixed at the run's: the
        final norm (layer None or the last), else block `layer`'s input norm (its MLP's with
        `mlp_input`). Linear, so the normalised components sum to the normalised stream minus the
        norm's bias. The norm's weight is applied (TransformerLens folds it into W_U instead)."""
        model = self._model()
        n = len(model.blocks)
        count = self._layer_count(layer)
        if count == n:
            module, source = model.ln_final, get_act_name("resid_post", n - 1)
        else:
            block = model.blocks[count]
            module = getattr(block, "ln2" if mlp_input else "ln1", None)
            source = get_act_name("resid_mid" if mlp_input else "resid_pre", count)
            if module is None:
                raise ValueError(f"block {count} has no {'MLP ' if mlp_input else ''}input norm to apply")
        with model.weights_loaded(module):  # an offloaded norm's weight is loaded for the reading
            norm = linear_norm(module)
            stream = self._get(source, "apply_ln_to_stack")  # [(batch,) pos, d_model]
            norm.check(module, stream)
            has_batch = self.has_batch_dim and has_batch_dim
            scale = norm.scale(self._slices(stream[None], pos_slice, batch_slice, has_batch)[0])
            stack = self._slices(residual_stack, None, batch_slice, has_batch) if batch_slice is not None \
                else residual_stack
            return norm.linear_part(stack, scale)

    def logit_attrs(self, residual_stack: Tensor, tokens: int | str | Tensor,
                    incorrect_tokens: int | str | Tensor | None = None, pos_slice: Slice = None,
                    batch_slice: Slice = None, has_batch_dim: bool = True) -> Tensor:
        """Each component's direct contribution to the logit of `tokens` (minus `incorrect_tokens`'s), through
        the final norm at the run's scale: [component, batch, pos]. With the components of the final
        stream, they sum to the logit (difference) minus the `model.b_U` term."""
        model = self._model()
        normed = self.apply_ln_to_stack(residual_stack, None, pos_slice=pos_slice, batch_slice=batch_slice,
                                        has_batch_dim=has_batch_dim)  # [comp, (batch,) pos, d_model]
        direction = _directions(model, tokens)
        if incorrect_tokens is not None:
            direction = direction - _directions(model, incorrect_tokens)
        if direction.dim() == 1:  # one token for every row
            return normed @ direction.to(normed)
        if not (self.has_batch_dim and has_batch_dim):
            raise ValueError("per-row tokens need a batch axis")
        # one token per batch row: direction [batch, d_model] against [comp, batch, pos, d_model]
        return torch.einsum("cbpd,bd->cbp", normed, direction.to(normed))


def _directions(model: HookedModel, tokens: int | str | Tensor) -> Tensor:
    """The unembedding columns of `tokens`: [d_model] for one token, [batch, d_model] for one per row."""
    if isinstance(tokens, str):
        tokens = model.to_single_token(tokens)  # type: ignore[attr-defined]
    ids = torch.as_tensor(tokens).long()
    if ids.dim() > 1:
        raise ValueError(f"tokens must be one id or one per batch row, got shape {list(ids.shape)}")
    return model.W_U.detach()[:, ids].T if ids.dim() else model.W_U.detach()[:, ids]  # type: ignore[attr-defined]
