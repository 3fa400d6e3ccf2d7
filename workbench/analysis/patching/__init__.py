"""Activation patching, attribution patching and knockout on hooked recurrent models.

Activation patching (Meng et al. 2022, *Locating and Editing Factual Associations in GPT*;
Heimersheim & Nanda 2024, *How to use and interpret activation patching*) runs one side of a
clean/corrupted pair with an activation taken from the other, at every layer × position × hook:
the residual stream, the mixer's output, any gate or recurrent state, whole or a channel subset.
Attribution patching (Nanda 2023; Kramár et al. 2024, *AtP*) estimates every such effect from one
forward and backward pass. Knockout ablates a quantity at chosen positions; flow knockout blocks
what one position passes to another through a layer (Endy et al. 2025, *Mamba Knockout*), and path
patching splits a position's effect into the paths through each layer's recurrent state.

`inputs` builds pairs (token substitution, embedding noise as in ROME's causal tracing), `metrics`
the usual metrics, `activation` the batched sweep, `attribution` the gradient estimate, `knockout`
the ablations, `flow` the s → t knockout, `paths` path patching, `figures` the heatmap. Every method
returns a tidy `pandas.DataFrame`.

>>> import torch
>>> from workbench.models import HookedRecurrentLM, RecurrentConfig
>>> from workbench.analysis.patching import Pair, activation_patching, logit_difference, substitute_tokens
>>> torch.manual_seed(0) and None
>>> model = HookedRecurrentLM(RecurrentConfig(family="lstm", n_layers=2, d_model=8, d_hidden=8, d_vocab=5))
>>> clean = torch.tensor([[1, 2, 3, 4]])
>>> pair = Pair(clean, substitute_tokens(clean, {1: 0}))
>>> df = activation_patching(model, pair, logit_difference(1, 2), hooks="resid_post")
>>> list(df.columns), len(df)  # 2 layers x 4 positions
(['layer', 'position', 'hook', 'name', 'effect', 'normalized_effect'], 8)
>>> last = df[(df.layer == 1) & (df.position == 3)]  # the last layer at the read-out position
>>> round(float(last.normalized_effect.iloc[0]), 6)
1.0
"""

from workbench.analysis.patching.activation import (
    COLUMNS,
    DIRECTIONS,
    Direction,
    PositionPatch,
    Site,
    activation_patching,
    baseline_metrics,
    patched_logits,
    resolve_sites,
    top_predictions,
)
from workbench.analysis.patching.attribution import attribution_patching, metric_gradients
from workbench.analysis.patching.figures import patching_heatmap
from workbench.analysis.patching.flow import FLOW_MODES, flow_knockout
from workbench.analysis.patching.inputs import EmbeddingNoise, Pair, check_pair, noise_pair, substitute_tokens
from workbench.analysis.patching.knockout import ABLATIONS, Ablation, knockout
from workbench.analysis.patching.metrics import (
    Metric,
    check_metric,
    kl_to_clean,
    logit_difference,
    target_probability,
)
from workbench.analysis.patching.paths import PATHS, path_patching

__all__ = [
    "ABLATIONS",
    "COLUMNS",
    "DIRECTIONS",
    "Ablation",
    "Direction",
    "EmbeddingNoise",
    "FLOW_MODES",
    "Metric",
    "PATHS",
    "Pair",
    "PositionPatch",
    "Site",
    "activation_patching",
    "attribution_patching",
    "baseline_metrics",
    "check_metric",
    "check_pair",
    "flow_knockout",
    "kl_to_clean",
    "knockout",
    "logit_difference",
    "metric_gradients",
    "noise_pair",
    "patched_logits",
    "path_patching",
    "patching_heatmap",
    "resolve_sites",
    "substitute_tokens",
    "target_probability",
    "top_predictions",
]
