"""Lens directories of the `tuned-lens` package (AlignmentResearch, formerly EleutherAI; Belrose et
al. 2023's reference code), read and written beside the workbench's own format.

Their directory is `config.json` (a `TunedLensConfig`: `base_model_name_or_path`, `d_model`,
`num_hidden_layers`, `bias`, `base_model_revision`, `unembed_hash`, `lens_type`) and `params.pt`
(`torch.save` of the translators' state dict, keys `{i}.weight` [d_model, d_model] and `{i}.bias`
[d_model]). Translator `i` reads hidden state `i` (0 the embedding, `l + 1` block `l`'s output) and is
added residually, h + W h + b: the same parametrisation and indexing as ours, so the tensors carry over
unchanged. We add `workbench.json` (our config and history), which their loader ignores.

`params.pt` is read with `torch.load(weights_only=True)` only: a file holding pickled code, or
anything but a mapping of names to tensors, is refused (docs/tuned_lens_format.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from workbench.errors import CheckpointError
from workbench.files import atomic_directory

if TYPE_CHECKING:
    from workbench.analysis.lens.tuned_lens import TunedLens
    from workbench.models.protocol import HookedModel

__all__ = [
    "LENS_TYPE",
    "PACKAGE_CONFIG_FILENAME",
    "PACKAGE_WEIGHTS_FILENAME",
    "SIDECAR_FILENAME",
    "is_package_lens",
    "load_package_lens",
    "package_unembed_hash",
    "read_params",
    "save_package_lens",
]

PACKAGE_CONFIG_FILENAME = "config.json"
PACKAGE_WEIGHTS_FILENAME = "params.pt"
SIDECAR_FILENAME = "workbench.json"
LENS_TYPE = "linear_tuned_lens"
PACKAGE_FIELDS = (
    "base_model_name_or_path", "d_model", "num_hidden_layers", "bias", "base_model_revision",
    "unembed_hash", "lens_type",
)  # fmt: skip


def package_unembed_hash(model: HookedModel) -> str:
    """The `unembed_hash` the tuned-lens package records: sha256 (hex) of numpy's text of the float32
    unembedding matrix [d_vocab, d_model] at one decimal, so their loader recognises our model."""
    weight = model.unembed.weight.detach().to("cpu", torch.float32).numpy()  # [d_vocab, d_model]
    return hashlib.sha256(np.array_str(weight, precision=1).encode()).hexdigest()


def is_package_lens(directory: str | os.PathLike[str]) -> bool:
    """Whether `directory` holds a tuned-lens package lens (`params.pt` and a config with `num_hidden_layers`)."""
    directory = Path(directory)
    config = directory / PACKAGE_CONFIG_FILENAME
    if not (directory / PACKAGE_WEIGHTS_FILENAME).is_file() or not config.is_file():
        return False
    try:
        document = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "num_hidden_layers" in document and "format" not in document


def save_package_lens(lens: TunedLens, directory: str | os.PathLike[str]) -> Path:
    """Write `lens` as the tuned-lens package writes one (`config.json`, `params.pt`), plus our
    `workbench.json`; atomically. Their `TunedLens.from_model_and_pretrained` loads it."""
    state = {
        f"{i}.{part}": getattr(t, part).detach().to("cpu", torch.float32).contiguous().clone()
        for i, t in enumerate(lens.translators)
        for part in ("weight", "bias")
    }  # {i}.weight [d_model, d_model], {i}.bias [d_model]
    config = {
        "base_model_name_or_path": lens.model_name,
        "d_model": lens.d_model,
        "num_hidden_layers": lens.n_layers,
        "bias": True,
        "base_model_revision": None,
        "unembed_hash": package_unembed_hash(lens.model),
        "lens_type": LENS_TYPE,
    }
    sidecar = {**lens.config(), "history": lens.history_}
    target = Path(directory)
    with atomic_directory(target, marker=PACKAGE_CONFIG_FILENAME) as staging:
        torch.save(state, staging / PACKAGE_WEIGHTS_FILENAME)
        (staging / PACKAGE_CONFIG_FILENAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        (staging / SIDECAR_FILENAME).write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
    return target


def read_params(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A `params.pt` as name -> tensor, read with `torch.load(weights_only=True)` and nothing else.

    A file holding pickled code (or any object but tensors and plain containers) raises
    `CheckpointError`: it is never unpickled. So does a file that is not a name -> tensor mapping.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} cannot be read with torch.load(weights_only=True), the only way the workbench reads "
            f"a .pt file (pickled code is never unpickled): {_unpickling_reason(error)}. Re-save the "
            "translators' state dict (name -> tensor) with torch.save from a trusted environment"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable torch file: {error}") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()
    ):
        found = type(state).__name__ if not isinstance(state, dict) else "a dict with non-tensor entries"
        raise CheckpointError(
            f"{path} should hold the translators' state dict (name -> tensor, keys '0.weight', "
            f"'0.bias', ...); found {found}"
        )
    return state


def _unpickling_reason(error: Exception) -> str:
    """The lines of torch's weights-only refusal that say what was refused, without its boilerplate."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines()]
    reason = [line for line in lines if line and not line.startswith(boilerplate)]
    return " ".join(reason) or type(error).__name__


def load_package_lens(directory: str | os.PathLike[str], model: HookedModel) -> TunedLens:
    """Read a tuned-lens package lens for `model`; a lens for another model raises `LensMismatchError`.

    Checked: `lens_type`, `num_hidden_layers` and `d_model` against the model, `unembed_hash` (their
    hash) when present, and our `workbench.json`'s stricter hash when present.
    """
    from workbench.analysis.lens.tuned_lens import LensMismatchError, TunedLens

    directory = Path(directory)
    config_path, weights_path = directory / PACKAGE_CONFIG_FILENAME, directory / PACKAGE_WEIGHTS_FILENAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"no tuned-lens package lens at {directory}: {path.name} is missing")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    missing = [key for key in ("d_model", "num_hidden_layers") if key not in config]
    if missing:
        raise CheckpointError(f"{config_path} is not a tuned-lens config: it lacks {', '.join(missing)}")
    lens_type = config.get("lens_type", LENS_TYPE)
    if lens_type != LENS_TYPE:
        raise CheckpointError(f"{config_path} has lens_type {lens_type!r}; only {LENS_TYPE!r} is supported")
    sidecar_path = directory / SIDECAR_FILENAME
    sidecar = json.loads(sidecar_path.read_text(encoding="utf-8")) if sidecar_path.is_file() else {}
    lens = TunedLens(model, name=sidecar.get("model_name") or config.get("base_model_name_or_path") or None)
    found = {"num_hidden_layers": lens.n_layers, "d_model": lens.d_model}
    expected_hash = config.get("unembed_hash")
    if expected_hash:
        found["unembed_hash"] = package_unembed_hash(model)
    wrong = {key: (config[key], value) for key, value in found.items() if config[key] != value}
    if wrong:
        listed = "; ".join(f"{key} {want!r} in the lens, {got!r} in the model" for key, (want, got) in wrong.items())
        raise LensMismatchError(
            f"the tuned-lens lens at {directory} was trained for {config.get('base_model_name_or_path')!r}, "
            f"not for this model: {listed}. Train a lens for it: TunedLens.from_model(model).fit(text)"
        )
    if sidecar:
        lens.unembedding_hash = sidecar.get("unembedding_sha256", lens.unembedding_hash)
        lens.check_model(model)
    state = read_params(weights_path)
    with_bias = bool(config.get("bias", True))
    param = next(model.parameters())
    loaded: dict[str, Tensor] = {}
    for i in range(lens.n_layers):
        weight_key = f"{i}.weight"
        if weight_key not in state:
            raise CheckpointError(f"{weights_path} lacks tensor {weight_key!r}")
        if with_bias and f"{i}.bias" not in state:
            raise CheckpointError(f"{weights_path} lacks tensor '{i}.bias' (the config says bias: true)")
        parts = {"weight": state[weight_key]}
        parts["bias"] = state[f"{i}.bias"] if with_bias else torch.zeros(lens.d_model)
        for part, tensor in parts.items():
            shape = (lens.d_model, lens.d_model) if part == "weight" else (lens.d_model,)
            if tuple(tensor.shape) != shape:
                raise CheckpointError(f"{weights_path}", tensor=f"{i}.{part}", expected=shape,
                                      actual=tuple(tensor.shape))
            loaded[f"translators.{i}.{part}"] = tensor.to(param.device, param.dtype)
    extra = sorted(set(state) - {f"{i}.{part}" for i in range(lens.n_layers) for part in ("weight", "bias")})
    if extra:
        raise CheckpointError(f"{weights_path} holds tensors this lens does not have: {', '.join(extra)}")
    lens.load_state_dict(loaded, strict=True)
    lens.history_ = sidecar.get("history", [])
    lens.training_ = sidecar.get("training", {})
    return lens

