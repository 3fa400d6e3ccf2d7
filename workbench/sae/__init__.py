"""Sparse autoencoders on a workbench model's hooks: load SAELens's format, splice, train with SAELens.

`load_sae` and `splice_sae` need nothing beyond the workbench; `train_sae` needs the `[sae]` extra
(sae-lens, which brings transformer-lens 3.x). See docs/sae.md.
"""

from workbench.sae.hooked_sae import HookedSAE, SAEConfig, load_sae
from workbench.sae.splice import remove_sae, splice_sae, spliced
from workbench.sae.training import TrainedSAE, train_sae

__all__ = ["HookedSAE", "SAEConfig", "TrainedSAE", "load_sae", "remove_sae", "splice_sae", "spliced", "train_sae"]
