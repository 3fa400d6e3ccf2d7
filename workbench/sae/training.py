"""Train a sparse autoencoder on any hook of a workbench model with SAELens's own trainer.

SAELens (the `[sae]` extra) drives the run: its `LanguageModelSAETrainingRunner` takes our model
(a TransformerLens `HookedRootModule`) as `override_model` and a tokenized dataset as
`override_dataset`; its `ActivationsStore` calls `model.run_with_cache(tokens, names_filter=[hook],
stop_at_layer=layer + 1, prepend_bos=False)`, its `SAETrainer` fits the SAE, and the runner writes
SAELens's on-disk format. A recurrent state works like any hook: `blocks.0.mixer.hook_c` [batch, pos,
d_hidden], or an S6 state [batch, pos, d_inner, d_state], which the store flattens to d_inner*d_state.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench.models.hooked import HookedRecurrentBase
from workbench.models.paths import ExecutionPath
from workbench.sae.hooked_sae import HookedSAE

__all__ = ["TrainedSAE", "train_sae"]

ARCHITECTURES = ("standard", "topk", "jumprelu")


@dataclass
class TrainedSAE:
    """What `train_sae` returns: SAELens's trained SAE, our hooked copy of it, and its loss (SAELens's
    training loss on one held-out batch of activations) before and after training."""

    sae_lens_sae: Any  # a sae_lens TrainingSAE
    sae: HookedSAE
    loss_before: float
    loss_after: float
    output_path: Path | None


def _sae_config(architecture: str, d_in: int, d_sae: int, sparsity: float, k: int | None) -> Any:
    """SAELens's training config of one architecture."""
    import sae_lens

    if architecture == "standard":
        return sae_lens.StandardTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l1_coefficient=sparsity)
    if architecture == "topk":
        return sae_lens.TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k or max(1, d_sae // 8))
    return sae_lens.JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l0_coefficient=sparsity)


def _training_loss(sae: Any, batch: Tensor, coefficients: dict[str, float]) -> float:
    """SAELens's training loss of `sae` on activations [n, d_in], without a step."""
    from sae_lens.saes.sae import TrainStepInput

    with torch.no_grad():
        out = sae.training_forward_pass(TrainStepInput(sae_in=batch, coefficients=coefficients,
                                                       dead_neuron_mask=None, n_training_steps=0,
                                                       is_logging_step=False))
    return float(out.loss)


def train_sae(
    model: HookedRecurrentBase, hook_name: str, tokens: Tensor, *, d_sae: int, steps: int,
    batch_tokens: int = 256, architecture: str = "standard", sparsity: float = 1.0, k: int | None = None,
    lr: float = 3e-3, seed: int = 0, output_path: str | Path | None = None, path: ExecutionPath | None = None,
) -> TrainedSAE:
    """Train an SAE with SAELens's runner on `hook_name` over `tokens` [n_sequences, context] for
    `steps` steps of `batch_tokens` activations, and return it (also written to `output_path` in
    SAELens's format when given). `sparsity`: the L1 (standard) or L0 (jumprelu) coefficient (SAELens's
    default, 1.0); `k`: a topk SAE's active latents. The last sequences are held out for the loss."""
    try:
        import datasets
        import sae_lens
    except ImportError as error:
        raise ImportError("train_sae needs SAELens: install the [sae] extra "
                          "(WORKBENCH_ENV=sae bash install.sh, or pip install 'recurrent-workbench[sae]')") from error
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}; got {architecture!r}")
    model.check_hook_name(hook_name)
    hook_name = model.canonical_hook_name(hook_name)
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[0] < 2 or tokens.shape[1] < 1:
        raise ValueError("tokens: expected token ids [n_sequences >= 2, context]; got "
                         f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}")
    for name, value in (("d_sae", d_sae), ("steps", steps), ("batch_tokens", batch_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    dims = model.hook_specs()[hook_name][0]
    if dims[:2] != ("batch", "pos"):
        raise ValueError(f"hook_name: SAELens reads a hook shaped [batch, pos, ...]; {hook_name} is "
                         f"[{', '.join(dims)}]")
    sizes = model.dimension_sizes()
    d_in = math.prod(sizes[d] for d in dims[2:])
    context = tokens.shape[1]
    prompts = max(1, min(tokens.shape[0] // 2, math.ceil(batch_tokens / context)))  # sequences per store batch
    torch.manual_seed(seed)
    cfg = sae_lens.LanguageModelSAERunnerConfig(
        sae=_sae_config(architecture, d_in, d_sae, sparsity, k),
        model_name=type(model).__name__, model_class_name="workbench", hook_name=hook_name,
        dataset_path="", is_dataset_tokenized=True, streaming=False, context_size=context,
        training_tokens=steps * batch_tokens, train_batch_size_tokens=batch_tokens,
        store_batch_size_prompts=prompts, n_batches_in_buffer=max(2, math.ceil(2 * batch_tokens / context)),
        prepend_bos=False,
        device=str(model.device), lr=lr, seed=seed, dead_feature_window=max(steps, 1),
        feature_sampling_window=max(steps, 1), logger=sae_lens.LoggingConfig(log_to_wandb=False),
        checkpoint_path=None, n_checkpoints=0, output_path=None if output_path is None else str(output_path),
        verbose=False, model_kwargs={} if path is None else {"path": path},
    )
    dataset = datasets.Dataset.from_dict({"tokens": tokens[:-prompts].detach().cpu().tolist()})
    sae_cfg = sae_lens.TrainingSAEConfig.from_dict(cfg.get_training_sae_cfg_dict())
    fresh = sae_lens.TrainingSAE.from_dict(sae_cfg.to_dict())
    initial = copy.deepcopy(fresh)
    quiet = logging.getLogger("sae_lens")  # it warns that the overrides make the run not reproducible from
    level, quiet.level = quiet.level, logging.ERROR  # its config alone: here they are the point
    try:
        runner = sae_lens.LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model,
                                                         override_sae=fresh)
    finally:
        quiet.setLevel(level)
    with torch.no_grad():  # the last sequences, not trained on: one held-out batch for the loss
        held_out = runner.activations_store.get_activations(tokens[-prompts:].to(model.device))
    held_out = held_out.reshape(-1, d_in)
    coefficients = {name: (c.value if hasattr(c, "value") else c) for name, c in fresh.get_coefficients().items()}
    before = _training_loss(initial, held_out, coefficients)
    trained = runner.run()
    after = _training_loss(trained, held_out, coefficients)
    hooked = HookedSAE.from_sae_lens(trained)
    return TrainedSAE(trained, hooked, before, after, None if output_path is None else Path(output_path))
