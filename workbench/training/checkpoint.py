"""Checkpoints: a directory of safetensors weights, a JSON config with provenance, the vocabulary.

```
<checkpoint>/
    model.safetensors            weights (float32, or float16 storage by option; loads as float32)
    config.json                  RecurrentConfig, provenance (corpus, steps, seed, command), metrics
    vocab.json                   the character vocabulary
    training_state.safetensors   optional, for resuming: optimizer tensors, RNG, carried state
    training_state.json          optional: step and the non-tensor parts of the above
```

Loading never unpickles: every tensor comes from safetensors, every other value from JSON. Writes
are atomic: the checkpoint is written into a hidden sibling directory and renamed into place, so a
run killed mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from workbench.data.tokenizer import VOCAB_FILENAME, CharTokenizer
from workbench.errors import CheckpointError
from workbench.files import atomic_directory, fsync_path, recover_interrupted_swap

if TYPE_CHECKING:
    from workbench.models import HookedRecurrentLM, RecurrentConfig
    from workbench.models.paths import ExecutionPath

__all__ = [
    "CONFIG_FILENAME",
    "TRAINING_STATE_FILENAME",
    "WEIGHTS_FILENAME",
    "Checkpoint",
    "TrainingState",
    "is_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

WEIGHTS_FILENAME = "model.safetensors"
CONFIG_FILENAME = "config.json"
TRAINING_STATE_FILENAME = "training_state.safetensors"
TRAINING_STATE_JSON = "training_state.json"
_FORMAT = "workbench-checkpoint"
_VERSION = 1
_ALIASES_KEY = "workbench_aliases"  # safetensors metadata: tied name -> stored name
_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------------------------------- trees
def flatten_tensors(tree: Any, tensors: dict[str, Tensor], prefix: str = "") -> Any:
    """Split a nest of dicts/lists/tensors into named tensors and a JSON spec that rebuilds it.

    Used for the optimizer's state_dict and the carried recurrent state, so that neither needs
    pickle. Dict keys keep their type (optimizer state is keyed by int).
    """
    if isinstance(tree, Tensor):
        name = prefix or "tensor"
        tensors[name] = tree.detach().cpu().contiguous().clone()
        return {"tensor": name}
    if isinstance(tree, Mapping):
        items = []
        for key, value in tree.items():
            if not isinstance(key, str | int):
                raise TypeError(f"cannot store a dict key of type {type(key).__name__} ({key!r})")
            kind = "int" if isinstance(key, int) else "str"
            items.append([kind, key, flatten_tensors(value, tensors, f"{prefix}/{key}")])
        return {"dict": items}
    if isinstance(tree, list | tuple):
        values = [flatten_tensors(v, tensors, f"{prefix}/{i}") for i, v in enumerate(tree)]
        return {"tuple" if isinstance(tree, tuple) else "list": values}
    if isinstance(tree, float) and not math.isfinite(tree):
        return {"float": repr(tree)}
    if tree is None or isinstance(tree, bool | int | float | str):
        return {"value": tree}
    raise TypeError(f"cannot store a value of type {type(tree).__name__} at {prefix or '/'}")


def unflatten_tensors(spec: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of `flatten_tensors`."""
    if "tensor" in spec:
        return tensors[spec["tensor"]]
    if "dict" in spec:
        return {
            (int(key) if kind == "int" else key): unflatten_tensors(value, tensors)
            for kind, key, value in spec["dict"]
        }
    if "list" in spec:
        return [unflatten_tensors(v, tensors) for v in spec["list"]]
    if "tuple" in spec:
        return tuple(unflatten_tensors(v, tensors) for v in spec["tuple"])
    if "float" in spec:
        return float(spec["float"])
    return spec["value"]


@dataclass
class TrainingState:
    """Everything beyond the weights that resuming needs for bit-identical continuation."""

    step: int
    optimizer: dict[str, Any]  # optimizer.state_dict()
    rng: dict[str, Any]  # torch (and CUDA) generator states
    carried_state: Any = None  # the recurrent state carried into the next window (TBPTT)
    master_weights: dict[str, Tensor] | None = None  # float32 weights when model.safetensors is not
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able loop state (metrics history)

    def save(self, directory: Path) -> None:
        tensors: dict[str, Tensor] = {}
        spec = {
            "optimizer": flatten_tensors(self.optimizer, tensors, "optimizer"),
            "rng": flatten_tensors(self.rng, tensors, "rng"),
            "carried_state": flatten_tensors(self.carried_state, tensors, "carried_state"),
            "master_weights": flatten_tensors(self.master_weights, tensors, "master_weights"),
        }
        _write_safetensors(tensors, directory / TRAINING_STATE_FILENAME)
        document = {"format": _FORMAT + "-training-state", "version": _VERSION, "step": self.step}
        document.update(spec=spec, extra=self.extra)
        _write_text(directory / TRAINING_STATE_JSON, json.dumps(document, indent=1))

    @classmethod
    def load(cls, directory: Path) -> TrainingState | None:
        json_path, tensor_path = (
            directory / TRAINING_STATE_JSON,
            directory / TRAINING_STATE_FILENAME,
        )
        if not json_path.exists() or not tensor_path.exists():
            return None
        document = json.loads(json_path.read_text(encoding="utf-8"))
        tensors = _read_safetensors(tensor_path)
        spec = document["spec"]
        return cls(
            step=int(document["step"]),
            optimizer=unflatten_tensors(spec["optimizer"], tensors),
            rng=unflatten_tensors(spec["rng"], tensors),
            carried_state=unflatten_tensors(spec["carried_state"], tensors),
            master_weights=unflatten_tensors(spec["master_weights"], tensors),
            extra=document.get("extra", {}),
        )


# --------------------------------------------------------------------------------------- files
def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _write_safetensors(
    tensors: dict[str, Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    save_file(tensors, str(path), metadata=metadata)
    fsync_path(path)


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def is_checkpoint(directory: str | Path) -> bool:
    """True when `directory` holds a workbench checkpoint's config and weights."""
    directory = Path(directory)
    return (directory / CONFIG_FILENAME).is_file() and (directory / WEIGHTS_FILENAME).is_file()


# --------------------------------------------------------------------------------------- weights
def _dedupe_tied(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Store tied weights once: returns (tensors to store, alias name -> stored name)."""
    stored: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], tuple[int, ...], torch.dtype], str] = {}
    for name, tensor in state.items():
        key = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tuple(tensor.shape),
            tuple(tensor.stride()),
            tensor.dtype,
        )
        if tensor.numel() > 0 and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        stored[name] = tensor
    return stored, aliases


def _storage_tensors(model: nn.Module, dtype: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    if dtype not in _STORAGE_DTYPES:
        raise ValueError(f"dtype={dtype!r}; choose one of {', '.join(_STORAGE_DTYPES)}")
    stored, aliases = _dedupe_tied(model.state_dict())
    target = _STORAGE_DTYPES[dtype]
    tensors = {
        name: (t.to(target) if t.is_floating_point() else t).detach().cpu().contiguous().clone()
        for name, t in stored.items()
    }
    return tensors, aliases


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    tokenizer: CharTokenizer,
    *,
    provenance: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    dtype: str = "float32",
    training_state: TrainingState | None = None,
) -> Path:
    """Write `model` (its `cfg`, weights) and `tokenizer` as a checkpoint directory, atomically.

    `dtype="float16"` halves the file; loading casts back to float32. When a training state is
    given with half storage, it carries the float32 weights too, so resuming loses nothing.
    """
    cfg = model.cfg
    if getattr(cfg, "d_vocab", len(tokenizer)) != len(tokenizer):
        raise CheckpointError(
            f"the model's d_vocab={cfg.d_vocab} differs from the tokenizer's {len(tokenizer)} characters"
        )
    tensors, aliases = _storage_tensors(model, dtype)
    if training_state is not None and dtype != "float32" and training_state.master_weights is None:
        training_state.master_weights = _storage_tensors(model, "float32")[0]
    document = {
        "format": _FORMAT,
        "version": _VERSION,
        "config": cfg.to_dict(),
        "weights_dtype": dtype,
        "provenance": dict(provenance or {}),
        "metrics": dict(metrics or {}),
    }
    target = Path(directory)
    with atomic_directory(target, marker=CONFIG_FILENAME) as staging:
        metadata = {"format": "pt", _ALIASES_KEY: json.dumps(aliases, sort_keys=True)}
        _write_safetensors(tensors, staging / WEIGHTS_FILENAME, metadata)
        _write_text(staging / CONFIG_FILENAME, json.dumps(document, indent=2, sort_keys=False))
        tokenizer.save(staging / VOCAB_FILENAME)
        fsync_path(staging / VOCAB_FILENAME)
        if training_state is not None:
            training_state.save(staging)
    return target


# --------------------------------------------------------------------------------------- reading
@dataclass
class Checkpoint:
    """A checkpoint's description, read from its JSON files without touching the weights."""

    directory: Path
    config: RecurrentConfig
    tokenizer: CharTokenizer
    provenance: dict[str, Any]
    metrics: dict[str, Any]
    weights_dtype: str = "float32"

    @property
    def has_training_state(self) -> bool:
        return (self.directory / TRAINING_STATE_FILENAME).is_file()

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Stored tensor names and shapes, read from the safetensors header (no data loaded)."""
        with safe_open(str(self.directory / WEIGHTS_FILENAME), framework="pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}

    def n_parameters(self) -> int:
        """Parameters stored in the checkpoint (tied weights counted once)."""
        return sum(math.prod(shape) for shape in self.tensor_shapes().values())

    def load_model(self, device: str | torch.device = "cpu", path: ExecutionPath = "fused") -> HookedRecurrentLM:
        """Build the model from the config, check every tensor against it, load the weights; `path`
        becomes the model's default execution path."""
        return _load_model(self, device=device, path=path)

    def load_training_state(self) -> TrainingState | None:
        return TrainingState.load(self.directory)


def read_checkpoint(directory: str | Path) -> Checkpoint:
    """Read a checkpoint's config, provenance, metrics and vocabulary (not its weights)."""
    from workbench.models import RecurrentConfig

    path = Path(directory)
    recover_interrupted_swap(path.absolute())
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint directory at {path}")
    for name in (CONFIG_FILENAME, WEIGHTS_FILENAME, VOCAB_FILENAME):
        if not (path / name).is_file():
            raise CheckpointError(f"{path} is not a complete checkpoint: {name} is missing")
    try:
        document = json.loads((path / CONFIG_FILENAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path / CONFIG_FILENAME} is not valid JSON: {error}") from error
    if document.get("format") != _FORMAT:
        raise CheckpointError(f"{path / CONFIG_FILENAME} is not a workbench checkpoint config")
    if document.get("version", 0) > _VERSION:
        raise CheckpointError(f"checkpoint format {document['version']} is newer than this code")
    try:
        config = RecurrentConfig.from_dict(document["config"])
        tokenizer = CharTokenizer.load(path / VOCAB_FILENAME)
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"cannot read the checkpoint at {path}: {error}") from error
    if config.d_vocab != len(tokenizer):
        raise CheckpointError(
            f"checkpoint {path}: config d_vocab={config.d_vocab} but vocab.json has "
            f"{len(tokenizer)} characters"
        )
    weights_dtype = document.get("weights_dtype", "float32")
    if weights_dtype not in _STORAGE_DTYPES:
        raise CheckpointError(
            f"{path / CONFIG_FILENAME}: weights_dtype is {weights_dtype!r}; expected one of "
            f"{', '.join(map(repr, _STORAGE_DTYPES))}"
        )
    return Checkpoint(
        directory=path,
        config=config,
        tokenizer=tokenizer,
        provenance=document.get("provenance", {}),
        metrics=document.get("metrics", {}),
        weights_dtype=weights_dtype,
    )


def _check_names_and_shapes(
    checkpoint: Checkpoint,
    expected: Mapping[str, Tensor],
    found: Mapping[str, tuple[int, ...]],
    aliases: Mapping[str, str],
) -> None:
    """Raise CheckpointError naming the first tensor that is missing, extra, or misshapen."""
    where = f"checkpoint {checkpoint.directory} does not match its config"
    present = set(found) | set(aliases)
    missing = [name for name in expected if name not in present]
    if missing:
        raise CheckpointError(f"{where}: tensors {missing[:5]} are missing from {WEIGHTS_FILENAME}")
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CheckpointError(f"{where}: {WEIGHTS_FILENAME} has unexpected tensors {unexpected[:5]}")
    for name, tensor in expected.items():
        shape = found[aliases.get(name, name)]
        if tuple(tensor.shape) != shape:
            raise CheckpointError(where, tensor=name, expected=tensor.shape, actual=shape)


def _check_dtypes(
    checkpoint: Checkpoint, expected: Mapping[str, Tensor], tensors: Mapping[str, Tensor],
    aliases: Mapping[str, str],
) -> None:
    """Raise CheckpointError for the first stored tensor whose dtype contradicts the config's
    `weights_dtype` (floating tensors) or the model's (a float parameter stored as integers)."""
    stored_as = _STORAGE_DTYPES[checkpoint.weights_dtype]
    for name, reference in expected.items():
        tensor = tensors[aliases.get(name, name)]
        if reference.is_floating_point() and not tensor.is_floating_point():
            raise CheckpointError(
                f"checkpoint {checkpoint.directory}: tensor {name!r} is stored as {tensor.dtype}, but the "
                f"model's parameter is {reference.dtype}; the weights file does not belong to this config"
            )
        if tensor.is_floating_point() and tensor.dtype != stored_as:
            raise CheckpointError(
                f"checkpoint {checkpoint.directory}: config.json says weights_dtype={checkpoint.weights_dtype!r} "
                f"({stored_as}), but tensor {name!r} is stored as {tensor.dtype}; the config and "
                f"{WEIGHTS_FILENAME} do not belong together"
            )


def _load_model(
    checkpoint: Checkpoint, device: str | torch.device = "cpu", path: ExecutionPath = "fused"
) -> HookedRecurrentLM:
    from workbench.models import HookedRecurrentLM

    model = HookedRecurrentLM(checkpoint.config)
    expected = model.state_dict()  # name -> tensor [shape the config implies]
    weights_path = checkpoint.directory / WEIGHTS_FILENAME
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            found = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
            aliases = json.loads(metadata.get(_ALIASES_KEY, "{}"))
            _check_names_and_shapes(checkpoint, expected, found, aliases)
            tensors = {key: handle.get_tensor(key) for key in found}
    except CheckpointError:
        raise
    except Exception as error:  # a truncated or corrupt file
        raise CheckpointError(f"cannot read {weights_path}: {error}") from error
    _check_dtypes(checkpoint, expected, tensors, aliases)
    state = {}
    for name, reference in expected.items():
        tensor = tensors[aliases.get(name, name)]
        state[name] = tensor.to(reference.dtype) if tensor.is_floating_point() else tensor
    model.load_state_dict(state, strict=True)
    model.to(device)
    model.set_default_path(path)
    model.tokenizer = checkpoint.tokenizer
    model.checkpoint = checkpoint
    model.eval()
    return model


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu", path: ExecutionPath = "fused"
) -> HookedRecurrentLM:
    """Load a checkpoint directory as a model in eval mode, with `model.tokenizer` attached and
    `path` as its default execution path."""
    return read_checkpoint(directory).load_model(device=device, path=path)
