"""`from_transformers`: open a `transformers` recurrent LM (object, local directory or cached hub id).

Never reaches the network: loading runs with HF_HUB_OFFLINE=1 and `local_files_only=True`; a
checkpoint that is not on this machine gives an error saying how to download it and point at it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from workbench.adapters.placement import DeviceMap, check_device_map
from workbench.errors import DeviceMapError, EmptyInputError, SequenceTooLongError

if TYPE_CHECKING:
    from workbench.models.paths import ExecutionPath

# transformers class name -> (adapter module, adapter class)
ADAPTERS: dict[str, tuple[str, str]] = {
    "MambaForCausalLM": ("workbench.adapters.mamba", "HookedMamba"),
    "FalconMambaForCausalLM": ("workbench.adapters.mamba", "HookedMamba"),
    "RwkvForCausalLM": ("workbench.adapters.rwkv", "HookedRwkv"),
    "Mamba2ForCausalLM": ("workbench.adapters.mamba2", "HookedMamba2"),
    "RecurrentGemmaForCausalLM": ("workbench.adapters.recurrent_gemma", "HookedRecurrentGemma"),
    "xLSTMForCausalLM": ("workbench.adapters.xlstm", "HookedXlstm"),
    "Qwen3NextForCausalLM": ("workbench.adapters.qwen3_next", "HookedQwen3Next"),
    "KimiLinearForCausalLM": ("workbench.adapters.kimi_linear", "HookedKimiLinear"),
    "OlmoHybridForCausalLM": ("workbench.adapters.olmo_hybrid", "HookedOlmoHybrid"),
    "BambaForCausalLM": ("workbench.adapters.bamba", "HookedBamba"),
    "GraniteMoeHybridForCausalLM": ("workbench.adapters.granitemoehybrid", "HookedGraniteMoeHybrid"),
    "NemotronHForCausalLM": ("workbench.adapters.nemotron_h", "HookedNemotronH"),
    "FalconH1ForCausalLM": ("workbench.adapters.falcon_h1", "HookedFalconH1"),
    "JambaForCausalLM": ("workbench.adapters.jamba", "HookedJamba"),
    "ZambaForCausalLM": ("workbench.adapters.zamba", "HookedZamba"),
    "Zamba2ForCausalLM": ("workbench.adapters.zamba2", "HookedZamba2"),
    "Lfm2ForCausalLM": ("workbench.adapters.lfm2", "HookedLfm2"),
}
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
# Files a saved tokenizer leaves (one is enough). Without any, `AutoTokenizer` may still build the
# config's tokenizer class with an empty vocabulary, which turns every text into no tokens.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt",
                   "spiece.model", "sentencepiece.bpe.model")


class UnsupportedModelError(TypeError):
    """A `transformers` class the workbench has no adapter for."""

    def __init__(self, name: str):
        super().__init__(f"no workbench adapter for {name}; supported classes: {', '.join(sorted(ADAPTERS))}")


class CheckpointNotFoundError(FileNotFoundError):
    """Checkpoint files that are not on this machine; the message says how to get them."""


def _download_hint(repo_id: str) -> str:
    local = repo_id.split("/")[-1]
    return (f"download the files first, e.g. `huggingface-cli download {repo_id} --local-dir ./{local}`, "
            f"then open the directory with workbench.from_transformers('./{local}')")


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 (and TRANSFORMERS_OFFLINE=1) for the duration of a load."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({k: "1" for k in saved})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class TransformersTokenizer:
    """A `transformers` tokenizer with the workbench's `to_tokens` / `to_str_tokens` surface."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    @property
    def bos_token_id(self) -> int | None:
        """The wrapped tokenizer's special-token ids, which SAELens's activation store reads."""
        return self.tokenizer.bos_token_id

    @property
    def eos_token_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    @property
    def sep_token_id(self) -> int | None:
        return getattr(self.tokenizer, "sep_token_id", None)

    def to_tokens(self, text: str | Sequence[str]) -> Tensor:
        """Text (or equal-length texts) -> ids [batch, pos]."""
        texts = [text] if isinstance(text, str) else list(text)
        rows = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        if not rows or not all(rows):
            raise EmptyInputError("empty text gives no tokens; give at least one token of text")
        if len({len(r) for r in rows}) != 1:
            raise ValueError("texts in one batch must have the same length in tokens; tokenize them "
                             "with model.tokenizer.tokenizer(..., padding=True) and pass attention_mask")
        return torch.tensor(rows, dtype=torch.long)

    def encode(self, text: str, unknown: str | None = None, max_length: int | None = None) -> Tensor:
        """text -> ids [pos]: the native tokenizers' surface, which the steering and lens code call.
        `unknown` is accepted for that surface and changes nothing (a subword tokenizer maps any
        text, unknown pieces to its own unk token); `max_length` counts tokens."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        ids = self.to_tokens(text)[0]  # [pos]
        if max_length is not None and len(ids) > max_length:
            raise SequenceTooLongError(len(ids), max_length, unit="tokens")
        return ids

    def to_strings(self, ids: Tensor) -> list[str]:
        """ids [pos] -> one display string per token: the native tokenizers' surface for plot labels."""
        return [self.tokenizer.decode([int(t)]) for t in ids.reshape(-1)]

    def to_str_tokens(self, tokens: Tensor) -> list[str]:
        """One display string per token of the first row."""
        if tokens.ndim == 2:
            tokens = tokens[0]
        return self.to_strings(tokens)

    def decode(self, ids: Tensor) -> str:
        """Token ids [pos] -> text, as the library's tokenizer writes it (special tokens kept)."""
        return self.tokenizer.decode([int(t) for t in ids.reshape(-1)])


def _adapter_for(name: str) -> type:
    if name not in ADAPTERS:
        raise UnsupportedModelError(name)
    module, cls = ADAPTERS[name]
    return getattr(importlib.import_module(module), cls)


def _resolve_directory(name_or_dir: str | os.PathLike[str]) -> Path:
    """A local checkpoint directory, or the cached snapshot of a hub id; never downloads."""
    candidate = Path(name_or_dir).expanduser()
    if candidate.is_dir():
        return candidate
    text = str(name_or_dir)
    if candidate.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise CheckpointNotFoundError(f"{text} is not a checkpoint directory; point at the directory "
                                      "that holds config.json and the weights")
    from huggingface_hub import snapshot_download

    try:
        with offline():
            return Path(snapshot_download(text, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, HFValidationError, offline errors
        raise CheckpointNotFoundError(f"{text!r} is neither a local directory nor in the local Hugging "
                                      f"Face cache, and the workbench never downloads; "
                                      f"{_download_hint(text)}") from exc


def missing_tokenizer_hint(directory: Path) -> str:
    """What to do when `directory` gave no usable tokenizer: the files looked for, how to add one."""
    return (f"the directory {str(directory)!r} has no tokenizer files (looked for {', '.join(TOKENIZER_FILES)}); "
            "save one there (tokenizer.save_pretrained(directory)) or set model.tokenizer = "
            "workbench.adapters.TransformersTokenizer(AutoTokenizer.from_pretrained(...))")


def _usable_tokenizer(directory: Path) -> Any:
    """The directory's tokenizer, or None when it has no tokenizer files or they encode text to nothing."""
    from transformers import AutoTokenizer

    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        return None
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError):
        return None
    if not tokenizer.encode("a b 1", add_special_tokens=False):  # a vocabulary of special tokens only
        return None
    return tokenizer


def load_directory(directory: Path, dtype: torch.dtype | None = None, device_map: DeviceMap | None = None,
                   offload_folder: str | os.PathLike[str] | None = None) -> tuple[nn.Module, Any]:
    """(model, tokenizer or None) from a local checkpoint directory, offline; placed by `device_map`."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (directory / "config.json").is_file():
        raise CheckpointNotFoundError(f"{directory} has no config.json; download the checkpoint files "
                                      "first (e.g. `huggingface-cli download <id> --local-dir <dir>`)")
    if not any(next(directory.glob(p), None) for p in WEIGHT_FILES):
        raise CheckpointNotFoundError(f"{directory} has config.json but no weights (*.safetensors or "
                                      "pytorch_model.bin); download the checkpoint files first")
    with offline():
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        names = list(getattr(config, "architectures", None) or [])
        if not any(n in ADAPTERS for n in names):
            raise UnsupportedModelError(names[0] if names else type(config).__name__)
        placed = {} if device_map is None else {"device_map": device_map, "offload_folder": offload_folder}
        model = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=dtype, **placed)
        tokenizer = _usable_tokenizer(directory)
    return model, tokenizer


def from_transformers(model_or_dir: nn.Module | str | os.PathLike[str], path: ExecutionPath = "fused",
                      dtype: torch.dtype | None = None, device_map: DeviceMap | None = None,
                      offload_folder: str | os.PathLike[str] | None = None) -> Any:
    """A hooked workbench model over a `transformers` recurrent LM, sharing its parameters.

    `model_or_dir`: a model object (MambaForCausalLM, ...), a local checkpoint directory, or a hub
    id already in the local cache. `path`: "fused" or "reference", the model's default execution path.
    `device_map` (loading from a directory or hub id): as `transformers`' `from_pretrained` takes it,
    "auto" or {module name: "cpu" | "disk" | device}; blocks then run where it puts them, weights
    mapped to "disk" are read from `offload_folder` while their block runs (docs/adapters.md, "Big
    checkpoints"). A model object already placed by accelerate is followed as it is.

    >>> from transformers import MambaConfig, MambaForCausalLM
    >>> hf = MambaForCausalLM(MambaConfig(vocab_size=11, hidden_size=8, state_size=2, num_hidden_layers=1))
    >>> model = from_transformers(hf)
    >>> _, cache = model.run_with_cache(torch.tensor([[1, 2, 3]]))
    >>> tuple(cache["blocks.0.mixer.hook_state"].shape)
    (1, 3, 16, 2)
    """
    tokenizer, directory = None, None
    if isinstance(model_or_dir, nn.Module):
        hf_model = model_or_dir
        if device_map is not None:
            raise DeviceMapError("device_map applies when loading from a checkpoint directory; a model object is "
                                 "used where it is: load it with from_pretrained(..., device_map=...) or place it "
                                 "with accelerate.dispatch_model first, then pass it without device_map")
    elif isinstance(model_or_dir, (str, os.PathLike)):
        if not os.fspath(model_or_dir).strip():
            raise EmptyInputError("model_or_dir is empty; expected a transformers model, a local checkpoint "
                                  "directory or a hub id in the local cache")
        directory = _resolve_directory(model_or_dir)
        if device_map is not None:
            check_device_map(device_map, offload_folder)
        hf_model, tokenizer = load_directory(directory, dtype, device_map, offload_folder)
    else:
        raise TypeError(f"expected a transformers model or a checkpoint directory, got {type(model_or_dir).__name__}")
    adapter = _adapter_for(type(hf_model).__name__)
    model = adapter(hf_model.eval(), path=path)
    if tokenizer is not None:
        model.tokenizer = TransformersTokenizer(tokenizer)
    elif directory is not None:
        model.tokenizer_hint = missing_tokenizer_hint(directory)
    return model
