"""Attribution from implicit-attention maps: rollout, gradient-weighted maps, and baselines.

- `rollout`: attention rollout (Abnar & Zuidema 2020) across layers: R = Π_l (½ Â_l + ½ I), with
  Â_l the layer's map, absolute and row-normalised; as Ali et al. 2024 (section 4.3) roll out the
  hidden attention of Mamba.
- `gradient_rollout`: the attribution of Ali et al. 2024 ("Mamba-Attr", eq. 16–17), after Chefer et
  al. 2021: Ā_l = E_c[(∇Ã ⊙ Ã)^+] and R ← R + Ā_l R. Because y_t = Σ_j Ã_tj v_j, the gradient of
  the target with respect to Ã_tj is g_t v_j, with g the gradient at the layer's output: no
  autograd through the map is needed.
- `gradient_x_input` on the token embeddings (Shrikumar et al. 2016) and two baselines: `random`,
  and `recency`, which ranks the nearest characters first. A recurrent model's loss depends most on
  its last few characters, so an attribution method must beat locality, not only chance.

`attribute(model, tokens, method)` returns one relevance per position [batch, pos] for the
prediction at a query position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from workbench.analysis.implicit_attention.api import (
    attend,
    family_of,
    record,
    to_tokens,
)
from workbench.utils import get_act_name

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = [
    "METHODS",
    "attribute",
    "gradient_rollout",
    "layer_maps",
    "output_gradients",
    "rollout",
]

METHODS: dict[str, str] = {
    "attr": "gradient-weighted exact maps, rolled out (Ali et al. 2024 Mamba-Attr on our maps)",
    "attr_paper": "gradient-weighted paper-mode maps, rolled out (Ali et al. 2024 as published)",
    "rollout": "rollout of the exact maps, value-weighted norm over channels",
    "rollout_paper": "rollout of the paper-mode maps, mean over channels (Ali et al. 2024)",
    "grad_x_input": "gradient × input on the token embeddings (signed)",
    "grad_x_input_abs": "|gradient × input| on the token embeddings",
    "random": "uniform random relevance",
    "recency": "locality baseline: the nearer a position to the query, the more relevant",
}


def _normalise_rows(A: Tensor) -> Tensor:
    return A / A.sum(-1, keepdim=True).clamp_min(1e-30)


def rollout(maps: Sequence[Tensor]) -> Tensor:
    """Attention rollout over layers (first layer first), each map [b, L, L] -> [b, L, L]."""
    eye = torch.eye(maps[0].shape[-1], dtype=maps[0].dtype, device=maps[0].device)
    R = eye.expand_as(maps[0])
    for A in maps:
        R = (0.5 * _normalise_rows(A.abs()) + 0.5 * eye) @ R
    return R


def gradient_rollout(weighted: Sequence[Tensor]) -> Tensor:
    """Chefer et al. 2021 rule, R ← R + Ā_l R over layers (first first), Ā_l [b, L, L] ≥ 0."""
    eye = torch.eye(weighted[0].shape[-1], dtype=weighted[0].dtype, device=weighted[0].device)
    R = eye.expand_as(weighted[0])
    for A in weighted:
        R = R + A @ R
    return R


def default_targets(model: HookedModel, tokens: Tensor, query: int) -> Tensor:
    """The next token after `query` where the text has one, else the model's prediction: [b]."""
    if query + 1 < tokens.shape[1]:
        return tokens[:, query + 1]
    with torch.no_grad():
        return model(tokens)[:, query].argmax(-1)


def output_gradients(model: HookedModel, tokens: Tensor, query: int, target: Tensor, layers: Sequence[int],
                     extra_hooks: Sequence[str] = ()) -> tuple[dict[int | str, Tensor], Tensor, Tensor]:
    """∂ log p(target | query) w.r.t. each layer's hook_out [b, L, d_model], the `extra_hooks` (by name:
    Zamba2's shared attention outputs) and the embeddings.

    Returns (grads by layer and extra hook name, gradient × input [b, L], log-probabilities [b]).
    """
    store: dict[str, Tensor] = {}

    def keep(tensor: Tensor, hook: Any) -> Tensor:
        store[hook.name] = tensor
        return tensor

    names = ["hook_embed"] + [get_act_name("out", layer) for layer in layers] + list(extra_hooks)
    with torch.enable_grad(), model.hooks(fwd_hooks=[(n, keep) for n in names]):
        logits = model(tokens)  # [b, L, d_vocab]
        logp = torch.log_softmax(logits[:, query].float(), -1).gather(-1, target[:, None])[:, 0]
        grads = torch.autograd.grad(logp.sum(), [store[n] for n in names])
    embed_grad, layer_grads = grads[0], grads[1:]
    gxi = (embed_grad * store["hook_embed"]).sum(-1).detach()  # [b, L]
    keys: list[int | str] = [*layers, *extra_hooks]
    return dict(zip(keys, (g.detach() for g in layer_grads), strict=True)), gxi, logp.detach()


def layer_maps(model: HookedModel, tokens: Tensor | str, mode: str = "exact", aggregate: str = "norm",
               gradients: dict[int, Tensor] | None = None, layers: Sequence[int] | None = None,
               memory_budget_bytes: int | None = None) -> list[Tensor]:
    """Channel-aggregated maps [b, L, L] of every layer from one forward pass.

    With `gradients` (per layer, ∂target/∂hook_out), the gradient-weighted maps E_c[(∇Ã ⊙ Ã)^+]. A family's
    `pre_layer_forms` (maps inside a layer before its own) come first, weighted by the gradients at their
    `pre_layer_outputs` through their output projection.
    """
    family = family_of(model)
    tokens = to_tokens(model, tokens)
    layers = list(range(len(model.blocks))) if layers is None else list(layers)
    cache = record(model, tokens, layers, mode, memory_budget_bytes)
    out = []
    for layer in layers:
        stages = getattr(family, "pre_layer_forms", lambda *_: [])(model, cache, layer)
        outputs = getattr(family, "pre_layer_outputs", lambda *_: [])(model, layer)
        for stage, output in zip(stages, outputs, strict=True):  # inside the layer, before its own map
            if gradients is None:
                out.append(attend(stage, aggregate=aggregate, memory_budget_bytes=memory_budget_bytes)[0])
                continue
            g = (gradients[output].to(stage.value.dtype) @ stage.projection).transpose(1, 2)  # [b, H·P, L]
            out.append(attend(stage, aggregate="gradient", query_weight=g, memory_budget_bytes=memory_budget_bytes)[0])
        form = family.form(model, cache, layer, mode)
        if gradients is None:
            maps, _ = attend(form, aggregate=aggregate, memory_budget_bytes=memory_budget_bytes)
        else:
            g = family.output_grad(model, layer, mode, gradients[layer].to(form.value.dtype), cache)
            maps, _ = attend(form, aggregate="gradient", query_weight=g,
                             memory_budget_bytes=memory_budget_bytes)
        out.append(maps)
    return out


def attribute(model: HookedModel, tokens: Tensor | str, method: str = "attr", query: int = -1,
              target: Tensor | None = None, seed: int = 0,
              memory_budget_bytes: int | None = None) -> Tensor:
    """Relevance of each position [b, L] for the prediction at `query` (see `METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    tokens = to_tokens(model, tokens)
    L = tokens.shape[1]
    if not -L <= query < L:
        raise IndexError(f"query position {query} out of range for {L} positions")
    query %= L
    if method == "random":
        generator = torch.Generator().manual_seed(seed)
        scores = torch.rand(tokens.shape, generator=generator)
        scores[:, query + 1:] = 0
        return scores
    if method == "recency":
        positions = torch.arange(L, dtype=torch.float32) + 1.0  # [L]: 1 .. L, nearest highest
        scores = positions.expand(tokens.shape[0], L).clone()  # [b, L]
        scores[:, query + 1:] = float("-inf")
        return scores
    mode = "paper" if method.endswith("_paper") else "exact"
    if mode == "paper" and "paper" not in family_of(model).modes:
        raise ValueError(f"a {model.cfg.family} model has no paper mode")
    if method.startswith("rollout"):
        maps = layer_maps(model, tokens, mode, "norm" if mode == "exact" else "mean",
                          memory_budget_bytes=memory_budget_bytes)
        return rollout(maps)[:, query].float().cpu()
    target = default_targets(model, tokens, query) if target is None else target.to(tokens.device)
    layers = list(range(len(model.blocks)))
    stage_outputs = getattr(family_of(model), "pre_layer_outputs", lambda *_: [])
    extra = [name for layer in layers for name in stage_outputs(model, layer)]
    grads, gxi, _ = output_gradients(model, tokens, query, target, layers, extra)
    if method.startswith("grad_x_input"):
        scores = gxi.float().cpu()
        scores = scores.abs() if method.endswith("_abs") else scores
        scores[:, query + 1:] = float("-inf")
        return scores
    weighted = layer_maps(model, tokens, mode, gradients=grads, memory_budget_bytes=memory_budget_bytes)
    return gradient_rollout(weighted)[:, query].float().cpu()
