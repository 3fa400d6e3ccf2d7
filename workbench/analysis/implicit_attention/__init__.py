"""Implicit attention of gated-linear recurrent layers (Zimerman, Ali & Wolf 2024; Ali, Zimerman &
Wolf 2024): each layer written as y = Ã v + bias with a causal L×L map per channel, exact, fast and
within a memory budget; attribution from the maps (rollout, gradient-weighted maps) and its
evaluation by perturbation.

Modules: `kernel` (segment-sum kernels and the naive loop), `form` (the unified form), one module
per family (`s6` for our S6 and the Mamba adapters, `mamba2`, `rwkv`, `minimal`, `classic`, `delta_rule`), `api`,
`attribution`, `evaluation`, `figures`.
"""

from workbench.analysis.implicit_attention.api import (
    AGGREGATIONS,
    FAMILIES,
    ImplicitAttention,
    attention_bytes,
    channel_count,
    family_of,
    implicit_attention,
    implicit_attention_layers,
    implicit_attention_row,
    layer_forms,
)
from workbench.analysis.implicit_attention.form import LinearForm
from workbench.analysis.implicit_attention.kernel import (
    decay_attention,
    decay_attention_naive,
    decay_attention_row,
    scalar_decay_attention,
    segsum,
)

__all__ = [
    "AGGREGATIONS",
    "FAMILIES",
    "ImplicitAttention",
    "LinearForm",
    "attention_bytes",
    "channel_count",
    "decay_attention",
    "decay_attention_naive",
    "decay_attention_row",
    "family_of",
    "implicit_attention",
    "implicit_attention_layers",
    "implicit_attention_row",
    "layer_forms",
    "scalar_decay_attention",
    "segsum",
]
