"""Logit lens and tuned lens for recurrent models (Belrose et al. 2023, *Eliciting Latent
Predictions from Transformers with the Tuned Lens*; Paulo, Marshall & Belrose 2024, *Does
Transformer Interpretability Transfer to RNNs?*).

Read-outs are `"embed"` (the token embedding) and each block's output `0 .. n_layers - 1`. The
logit lens decodes them with the model's own final norm and unembedding; the tuned lens first maps
each through a learned affine translator; the state lens decodes a layer's recurrent state
through a learned affine map. `evaluation` scores lenses per layer on held-out text,
`trajectory` reads out one text at every layer and position, `figures` draws them with plotly.

>>> from workbench.analysis.cells import planted_lstm
>>> model = planted_lstm(n_layers=2)
>>> trajectory = prediction_trajectory(LogitLens(model), "f(a, (b))")
>>> trajectory.log_probs.shape == (3, 9, model.cfg.d_vocab)
True
"""

from workbench.analysis.lens.evaluation import METRICS, LensEvaluation, evaluate_lenses
from workbench.analysis.lens.logit_lens import (
    EMBED,
    Lens,
    LogitLens,
    Unembedding,
    collect_residuals,
    model_name,
    readout_hook,
    readout_layers,
    resolve_readout,
)
from workbench.analysis.lens.state_lens import StateLens, vector_states
from workbench.analysis.lens.trajectory import STATISTICS, PredictionTrajectory, prediction_trajectory
from workbench.analysis.lens.tuned_lens import LensMismatchError, Translator, TunedLens, kl_divergence

__all__ = [
    "EMBED",
    "METRICS",
    "STATISTICS",
    "Lens",
    "LensEvaluation",
    "LensMismatchError",
    "LogitLens",
    "PredictionTrajectory",
    "StateLens",
    "Translator",
    "TunedLens",
    "Unembedding",
    "collect_residuals",
    "evaluate_lenses",
    "kl_divergence",
    "model_name",
    "prediction_trajectory",
    "readout_hook",
    "readout_layers",
    "resolve_readout",
    "vector_states",
]
