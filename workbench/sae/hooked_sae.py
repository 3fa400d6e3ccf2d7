"""`HookedSAE`: a sparse autoencoder in SAELens's inference form, with a hook point at every stage.

Reads SAELens's on-disk format (`cfg.json` + `sae_weights.safetensors`, never a pickle) or an SAE
object SAELens just trained, without needing sae-lens itself. Its hook points carry SAELens's names
(`hook_sae_input`, `hook_sae_acts_pre`, `hook_sae_acts_post`, `hook_sae_recons`, `hook_sae_error`,
`hook_sae_output`); once spliced into a model (`workbench.sae.splice_sae`) they are model hooks named
`{spliced hook}.{hook point}`, so `run_with_hooks` / `run_with_cache` reach the latents.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from workbench.models.hook_point import ScopedHookPoint
from workbench.models.recurrence import is_read_only
from workbench.models.specs import HookSpec
from workbench.models.transformer_lens_compat import LensHandle

__all__ = ["ARCHITECTURES", "SAE_CFG_FILENAME", "SAE_WEIGHTS_FILENAME", "HookedSAE", "SAEConfig", "load_sae"]

SAE_CFG_FILENAME, SAE_WEIGHTS_FILENAME = "cfg.json", "sae_weights.safetensors"  # SAELens's names
ARCHITECTURES = ("standard", "jumprelu", "topk")
HOOK_POINTS = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons",
               "hook_sae_error", "hook_sae_output")


@dataclass(frozen=True)
class SAEConfig:
    """The fields of SAELens's inference `cfg.json` that decide what the SAE computes."""

    architecture: str
    d_in: int
    d_sae: int
    hook_name: str | None = None  # metadata.hook_name: where SAELens trained it
    apply_b_dec_to_input: bool = True
    k: int | None = None  # topk
    rescale_acts_by_decoder_norm: bool = False  # topk
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any], source: str = "cfg") -> SAEConfig:
        """SAELens's config dict -> ours; an architecture or normalisation we do not compute raises."""
        architecture = cfg.get("architecture", "standard")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"{source}: architecture must be one of {', '.join(ARCHITECTURES)}; got {architecture!r}")
        for key in ("d_in", "d_sae"):
            if not isinstance(cfg.get(key), int) or cfg[key] <= 0:
                raise ValueError(f"{source}: {key} must be a positive int; got {cfg.get(key)!r}")
        normalize = cfg.get("normalize_activations", "none")
        if normalize not in ("none", None):
            raise ValueError(f"{source}: normalize_activations must be 'none' (SAELens folds "
                             f"'expected_average_only_in' into the weights when training ends); got {normalize!r}")
        if cfg.get("reshape_activations", "none") not in ("none", None):
            raise ValueError(f"{source}: reshape_activations must be 'none'; got {cfg['reshape_activations']!r}")
        if architecture == "topk" and (not isinstance(cfg.get("k"), int) or not 0 < cfg["k"] <= cfg["d_sae"]):
            raise ValueError(f"{source}: a topk SAE needs k in 1..d_sae; got {cfg.get('k')!r}")
        metadata = cfg.get("metadata") or {}
        return cls(
            architecture=architecture, d_in=cfg["d_in"], d_sae=cfg["d_sae"],
            hook_name=metadata.get("hook_name", cfg.get("hook_name")),
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
            k=cfg.get("k") if architecture == "topk" else None,
            rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
            dtype=str(cfg.get("dtype", "float32")),
        )

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the weights file must hold, with its shape."""
        shapes = {"W_enc": (self.d_in, self.d_sae), "b_enc": (self.d_sae,), "W_dec": (self.d_sae, self.d_in),
                  "b_dec": (self.d_in,)}
        if self.architecture == "jumprelu":
            shapes["threshold"] = (self.d_sae,)
        return shapes


class HookedSAE(nn.Module):
    """x [..., d_in] -> latents [..., d_sae] -> reconstruction [..., d_in], as SAELens computes it."""

    def __init__(self, cfg: SAEConfig, weights: Mapping[str, Tensor], source: str = "weights"):
        super().__init__()
        shapes = cfg.weight_shapes()
        missing, extra = sorted(set(shapes) - set(weights)), sorted(set(weights) - set(shapes))
        if missing or extra:
            raise ValueError(f"{source}: a {cfg.architecture} SAE holds exactly {sorted(shapes)}; "
                             f"missing {missing}, unexpected {extra}")
        wrong = {n: tuple(weights[n].shape) for n, s in shapes.items() if tuple(weights[n].shape) != s}
        if wrong:
            raise ValueError(f"{source}: expected shapes {shapes}; got {wrong}")
        self.cfg = cfg
        for name in shapes:
            self.register_parameter(name, nn.Parameter(weights[name].detach().clone(), requires_grad=False))
        for name in HOOK_POINTS:
            setattr(self, name, ScopedHookPoint())
        self.spliced_at: str | None = None  # the model hook this SAE is spliced into, if any
        self.splice_handle: LensHandle | None = None  # the splice's model-wide hook there

    # ----- computing ------------------------------------------------------------------------
    def pre_activation(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> hidden pre-activations [..., d_sae]."""
        sae_in = x - self.b_dec * self.cfg.apply_b_dec_to_input
        pre = sae_in @ self.W_enc + self.b_enc
        if self.cfg.architecture == "topk" and self.cfg.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        return pre

    def activate(self, pre: Tensor) -> Tensor:
        """Pre-activations [..., d_sae] -> latents [..., d_sae] (ReLU, JumpReLU or TopK)."""
        if self.cfg.architecture == "jumprelu":
            return pre.relu() * (pre > self.threshold).to(pre.dtype)
        if self.cfg.architecture == "topk":
            values, indices = torch.topk(pre, k=self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter(-1, indices, values.relu())
        return pre.relu()

    def encode(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> latents [..., d_sae], no hooks."""
        return self.activate(self.pre_activation(x))

    def decode(self, acts: Tensor) -> Tensor:
        """latents [..., d_sae] -> reconstruction [..., d_in], no hooks."""
        return acts @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> Tensor:
        """x [..., d_in] -> x spliced: reconstruction plus error, through every hook point.

        Computed as x + (recons - clean recons) + (error - clean error), which is recons + error and
        is x itself, bit for bit, while no hook edits. An edit of the latents (or of the input,
        reconstruction or error) moves the output by exactly its effect on recons + error."""
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"x: the SAE reads [..., d_in={self.cfg.d_in}]; got shape {tuple(x.shape)}")
        points = [getattr(self, name) for name in HOOK_POINTS]
        editing = any(not is_read_only(h.user_hook) for p in points for h in p.fwd_hooks)
        sae_in = self.hook_sae_input(x.clone() if editing else x)
        acts = self.hook_sae_acts_post(self.activate(self.hook_sae_acts_pre(self.pre_activation(sae_in))))
        recons = self.hook_sae_recons(self.decode(acts))
        clean = self.decode(self.encode(x)) if editing else recons
        error_clean = x - clean
        error = self.hook_sae_error(error_clean.clone() if editing else error_clean)
        return self.hook_sae_output(x + (recons - clean) + (error - error_clean))

    # ----- hooks -----------------------------------------------------------------------------
    def hook_specs(self, dims: tuple[str, str, str]) -> dict[str, HookSpec]:
        """Local hook name -> (dims, meaning); `dims` names batch, pos and d_in of the spliced hook."""
        batch, pos, d_in = dims
        latents = (batch, pos, f"{d_in}->d_sae")
        return {
            "hook_sae_input": ((batch, pos, d_in), "SAE input: the spliced activation, flattened to d_in"),
            "hook_sae_acts_pre": (latents, "SAE latents before the activation function"),
            "hook_sae_acts_post": (latents, "SAE latents (edit these to ablate or steer a latent)"),
            "hook_sae_recons": ((batch, pos, d_in), "SAE reconstruction"),
            "hook_sae_error": ((batch, pos, d_in), "SAE error: input minus the clean reconstruction"),
            "hook_sae_output": ((batch, pos, d_in), "reconstruction plus error, what the model uses"),
        }

    # ----- files -------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write SAELens's on-disk format: cfg.json and sae_weights.safetensors."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg
        record: dict[str, Any] = {
            "architecture": cfg.architecture, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": cfg.dtype,
            "device": "cpu", "apply_b_dec_to_input": cfg.apply_b_dec_to_input,
            "normalize_activations": "none", "reshape_activations": "none",
            "metadata": {"hook_name": self.spliced_at or cfg.hook_name},
        }
        if cfg.architecture == "topk":
            record.update(k=cfg.k, rescale_acts_by_decoder_norm=cfg.rescale_acts_by_decoder_norm)
        save_file({n: p.detach().contiguous().cpu() for n, p in self.named_parameters()},
                  directory / SAE_WEIGHTS_FILENAME)
        (directory / SAE_CFG_FILENAME).write_text(json.dumps(record, indent=2))
        return directory

    @classmethod
    def from_sae_lens(cls, sae: nn.Module) -> HookedSAE:
        """An SAE object of SAELens's (trained in memory, or loaded by it) -> a HookedSAE."""
        cfg = getattr(sae, "cfg", None)
        if cfg is None or not hasattr(cfg, "to_dict"):
            raise TypeError(f"sae: expected a sae_lens SAE (with .cfg.to_dict()); got {type(sae).__name__}")
        state = dict(sae.state_dict())
        if hasattr(cfg, "get_inference_sae_cfg_dict"):  # a TrainingSAE: its inference form, as SAELens saves it
            record = cfg.get_inference_sae_cfg_dict()
            sae.process_state_dict_for_saving_inference(state)
        else:
            record = cfg.to_dict()
        state = {n: t.detach() for n, t in state.items()}
        return cls(SAEConfig.from_dict(record, source="sae.cfg"), state, source="sae.state_dict()")


def load_sae(directory: str | Path, device: torch.device | str = "cpu") -> HookedSAE:
    """Read an SAE in SAELens's on-disk format (a folder with cfg.json and sae_weights.safetensors)."""
    directory = Path(directory)
    cfg_path, weights_path = directory / SAE_CFG_FILENAME, directory / SAE_WEIGHTS_FILENAME
    for needed in (cfg_path, weights_path):
        if not needed.is_file():
            raise FileNotFoundError(f"directory: an SAE folder holds {SAE_CFG_FILENAME} and {SAE_WEIGHTS_FILENAME}; "
                                    f"{needed} is missing")
    try:
        record = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{cfg_path}: not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object; got {type(record).__name__}")
    cfg = SAEConfig.from_dict(record, source=str(cfg_path))
    weights = load_file(weights_path, device=str(device))  # safetensors: tensors only, nothing unpickled
    return HookedSAE(cfg, weights, source=str(weights_path))
