"""Mixture-of-experts routing under hooks, shared by the hybrid families.

The router's logits, the chosen experts and their weights are hook points, so an edit to the logits
re-routes and a patch of the weights re-mixes; the experts themselves are always the library's. The
two routing rules the families use are here once: softmax top-k (Qwen3-Next, Jamba) and DeepSeek-V3's
group-limited sigmoid routing (Kimi-Linear, NemotronH).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from workbench.adapters.base import AdapterMlpBlock
from workbench.models.hook_point import ScopedHookPoint
from workbench.models.specs import RESID, HookSpec

__all__ = ["HookedRouting", "RoutedMlpBlock", "group_limited_top_k", "softmax_top_k"]


def softmax_top_k(logits: Tensor, top_k: int, normalize: bool) -> tuple[Tensor, Tensor]:
    """logits [..., E] -> (weights, index) [..., top_k]: the k most probable experts under the softmax
    (computed in at least float32, as the libraries do), renormalised over those k where asked."""
    probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    weights, index = torch.topk(probs, top_k, dim=-1)
    if normalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, index


def group_limited_top_k(logits: Tensor, router: nn.Module, sort_choice: bool = True) -> tuple[Tensor, Tensor]:
    """logits [n, E] -> (weights, index) [n, top_k] by DeepSeek-V3's rule, as the library's `router` holds it.

    Scores are σ(logits); experts are chosen by score + correction bias, only within the `topk_group`
    groups whose two best biased scores sum highest; the weights are the chosen unbiased scores,
    renormalised where the config says so, times `routed_scaling_factor`. `sort_choice`: list the chosen
    experts best first (Kimi-Linear) or in the order `topk(sorted=False)` gives (NemotronH).
    """
    experts, groups = router.num_experts, router.num_group
    scores = torch.sigmoid(logits.to(torch.promote_types(logits.dtype, torch.float32)))  # [n, E]
    biased = scores + router.e_score_correction_bias.to(scores.dtype)
    group_score = biased.view(-1, groups, experts // groups).topk(2, dim=-1).values.sum(-1)  # [n, G]
    best_groups = group_score.topk(router.topk_group, dim=-1, sorted=False).indices
    allowed = torch.zeros_like(group_score).scatter(1, best_groups, 1.0).bool()
    allowed = allowed[:, :, None].expand(-1, groups, experts // groups).reshape(biased.shape)
    index = biased.masked_fill(~allowed, float("-inf")).topk(router.top_k, dim=-1, sorted=sort_choice).indices
    weights = scores.gather(1, index)
    if router.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return weights * router.routed_scaling_factor, index


class HookedRouting(nn.Module):
    """A library mixture of experts (`hf`) whose routing is hooked; subclasses route and run the experts.

    `hook_specs` names the hooks under `mlp.` as the block lists them.
    """

    def __init__(self, hf_moe: nn.Module):
        super().__init__()
        self.hf = hf_moe  # shares the router and the experts
        self.hook_router_logits = ScopedHookPoint()
        self.hook_expert_index = ScopedHookPoint()
        self.hook_expert_weights = ScopedHookPoint()

    def hook_specs(self) -> dict[str, HookSpec]:
        raise NotImplementedError

    def hooked_choice(self, index: Tensor, weights: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """index and weights [batch, pos, top_k] through their hooks -> (index as long, weights in `dtype`).

        The index is hooked as floats holding whole numbers (as Griffin's position), so gradient probes
        can pass through; a patched index is rounded back to an expert number.
        """
        index = self.hook_expert_index(index.to(dtype)).round().long()
        return index, self.hook_expert_weights(weights.to(dtype))


class RoutedMlpBlock(AdapterMlpBlock):
    """resid_mid = resid_pre + mixer(ln1(resid_pre)); resid_post = resid_mid + mlp(ln2(resid_mid)), where the
    MLP is the library's dense one or a `HookedRouting` mixture of experts whose hooks the block lists."""

    def extra_hook_specs(self) -> dict[str, HookSpec]:
        specs = {
            "hook_resid_mid": (RESID, "residual after the token mixer"),
            "ln2.hook_normalized": (RESID, "normalised input to the MLP / mixture of experts"),
        }
        if isinstance(self.mlp, HookedRouting):
            specs.update(self.mlp.hook_specs())
        specs["hook_mlp_out"] = (RESID, "MLP or mixture-of-experts output added to the residual")
        return specs
