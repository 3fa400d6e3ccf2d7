"""The embedded models: checkpoints shipped inside the package, loadable by name, offline, in seconds.

Each lives in `workbench/checkpoints/<name>/` as a checkpoint directory (see
`workbench.training.checkpoint`) and records the `workbench train ...` command that reproduces it.
`load` also takes the path of any checkpoint directory, so a model you trained loads the same way.

>>> rows = list_models()          # one dict per embedded model; print(rows) shows a table
>>> isinstance(rows, list)
True
"""

from __future__ import annotations

import html
import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import CheckpointError, EmptyInputError, ShadowedModelWarning, UnknownModelError

if TYPE_CHECKING:
    import torch

    from workbench.models import HookedRecurrentLM
    from workbench.models.paths import ExecutionPath

__all__ = ["CHECKPOINTS_DIR", "ModelTable", "UnknownModelError", "list_models", "load", "resolve"]

CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"
_COLUMNS = ("name", "family", "n_layers", "d_hidden", "corpus", "parameters", "test_bpc", "command")


def _is_checkpoint_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def _names(directory: Path) -> list[str]:
    """Names of the checkpoint directories in `directory` (not `__pycache__`, not hidden ones)."""
    if not directory.is_dir():
        return []
    return sorted(
        p.name for p in directory.iterdir() if not p.name.startswith((".", "_")) and _is_checkpoint_dir(p)
    )


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith((".", "~"))


def resolve(name_or_dir: str | os.PathLike[str], directory: Path | None = None) -> Path:
    """The checkpoint directory for an embedded model's name or a directory.

    A bare name is looked up among the embedded models first; anything that looks like a file path
    (has a slash, starts with `.` or `~`) is used as a directory.
    """
    directory = CHECKPOINTS_DIR if directory is None else Path(directory)
    if not isinstance(name_or_dir, (str, os.PathLike)):
        raise TypeError(f"name_or_dir must be an embedded model's name or a checkpoint directory (str or "
                        f"path), got {type(name_or_dir).__name__} {name_or_dir!r}")
    text = os.fspath(name_or_dir)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    if not text.strip():
        raise EmptyInputError(
            f"name_or_dir is {text!r}; expected an embedded model's name (one of "
            f"{', '.join(_names(directory)) or 'none installed'}) or a checkpoint directory such as './my-model'"
        )
    if "\x00" in text:
        raise ValueError(f"name_or_dir contains a NUL character, which no name or path can hold: {text!r}")
    if not _looks_like_path(text) and text in _names(directory):
        local = Path(text)
        if _is_dir(local) and local.resolve() != (directory / text).resolve():
            warnings.warn(
                f"{text!r} names an embedded model and also the directory {str(local.resolve())!r}; loading "
                f"the embedded model. To load the directory, pass './{text}'",
                ShadowedModelWarning, stacklevel=3,
            )
        return directory / text
    try:
        candidate = Path(text).expanduser()
    except RuntimeError:  # "~someone" for a user this machine does not know
        candidate = Path(text)
    if _is_dir(candidate):
        return candidate
    raise UnknownModelError(text, _names(directory))


def _is_dir(path: Path) -> bool:
    """`path.is_dir()`, False where the name cannot be a path here (too long, say)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def load(
    name_or_dir: str | os.PathLike[str],
    path: ExecutionPath = "fused",
    device: str | torch.device = "cpu",
) -> HookedRecurrentLM:
    """Load an embedded model by name, or a checkpoint directory (ours, or a `transformers` one opened with
    `workbench.from_transformers`), with `model.tokenizer` attached.

    `name_or_dir`: an embedded model's name or a checkpoint directory. `path`: the model's default
    execution path ("fused" fast kernels, or the step-by-step "reference").
    """
    from workbench.training.checkpoint import load_checkpoint

    directory = resolve(name_or_dir)
    if is_transformers_directory(directory):
        from workbench.adapters import from_transformers

        return from_transformers(directory, path=path).to(device)
    return load_checkpoint(directory, device=device, path=path)


def is_transformers_directory(directory: Path) -> bool:
    """Whether `directory` holds a `transformers` checkpoint (its config.json names a `model_type`) rather
    than a workbench one (whose config.json nests the model's under "config")."""
    try:
        document = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "model_type" in document and "config" not in document


def _row(name: str, checkpoint: Path) -> dict[str, Any]:
    """One table row from a checkpoint's JSON and safetensors header (weights are not loaded)."""
    from safetensors import safe_open

    document = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    config = document.get("config", {})
    provenance = document.get("provenance", {})
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as handle:
        parameters = sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys())
    return {
        "name": name,
        "family": config.get("family"),
        "n_layers": config.get("n_layers"),
        "d_hidden": config.get("d_hidden"),
        "corpus": provenance.get("corpus"),
        "parameters": parameters,
        "test_bpc": document.get("metrics", {}).get("test_bpc"),
        "command": provenance.get("command"),
        "directory": str(checkpoint),
    }


class ModelTable(list):
    """A list of model rows (dicts) that prints as a table, in a terminal and in a notebook."""

    @staticmethod
    def _cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if key == "test_bpc":
            return f"{value:.3f}"
        if key == "parameters":
            return f"{value:,}"
        return str(value)

    def __str__(self) -> str:
        if not self:
            return f"no embedded models (none in {CHECKPOINTS_DIR})"
        cells = [[self._cell(key, row.get(key)) for key in _COLUMNS] for row in self]
        widths = [max(len(key), *(len(row[i]) for row in cells)) for i, key in enumerate(_COLUMNS)]
        lines = ["  ".join(key.ljust(w) for key, w in zip(_COLUMNS, widths, strict=True)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        if not self:
            return f"<p>{html.escape(str(self))}</p>"
        head = "".join(f"<th>{html.escape(key)}</th>" for key in _COLUMNS)
        body = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape(self._cell(key, row.get(key)))}</td>" for key in _COLUMNS)
            + "</tr>"
            for row in self
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def list_models(directory: Path | None = None) -> ModelTable:
    """Every embedded model: name, family, corpus, parameters, test bpc, reproduce command."""
    directory = CHECKPOINTS_DIR if directory is None else Path(directory)
    rows = ModelTable()
    for name in _names(directory):
        checkpoint = directory / name
        try:
            rows.append(_row(name, checkpoint))
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(
                f"embedded model {name!r} at {checkpoint} is unreadable: {error}"
            ) from error
    return rows
