"""The tuned lens (Belrose et al. 2023, *Eliciting Latent Predictions from Transformers with the
Tuned Lens*, eq. 3), applied to recurrent models as in Paulo, Marshall & Belrose 2024.

For each read-out `l` but the last, an affine translator h -> A_l h + b_l, initialised to the
identity, maps the residual stream to the final layer's, and the model's own final norm and
unembedding decode it. The translators minimise KL(final distribution || lens distribution).

Default optimiser and schedule are the original work's: SGD with Nesterov momentum 0.9, learning
rate 1.0 in the momentum-normalised convention (PyTorch lr = 1.0 * (1 - 0.9)), weight decay 1e-3,
gradient-norm clipping at 1, linear decay to zero over 250 steps without warm-up. Only the tokens
per step are ours (8 streams x 128 characters, against the paper's 2**18 tokens for models ~1000x
larger).

>>> from workbench.analysis.cells import planted_lstm
>>> model = planted_lstm(n_layers=2)
>>> lens = TunedLens.from_model(model)          # identity translators: equals the logit lens
>>> lens.layers
['embed', 0, 1]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from workbench.analysis.lens.logit_lens import (
    Layer,
    Unembedding,
    collect_hooks,
    model_name,
    readout_hook,
    readout_layers,
    resolve_readout,
)
from workbench.analysis.lens.streaming import corpus_text, encode_corpus, streams, windows
from workbench.errors import CheckpointError
from workbench.files import atomic_directory
from workbench.threads import torch_threads

if TYPE_CHECKING:
    from workbench.distributed import Executor
    from workbench.models.protocol import HookedModel

__all__ = ["FORMAT", "LensMismatchError", "Translator", "TunedLens", "fit_translators", "kl_divergence"]

FORMAT = "workbench-tuned-lens"
VERSION = 1
CONFIG_FILENAME = "config.json"
WEIGHTS_FILENAME = "lens.safetensors"
SAVE_FORMATS = ("workbench", "tuned-lens")  # ours; the tuned-lens package's (tuned_lens_package.py)
LN2 = math.log(2.0)


class LensMismatchError(ValueError):
    """A tuned lens applied to a model other than the one it was trained for."""


def kl_divergence(target_log_probs: Tensor, log_probs: Tensor) -> Tensor:
    """KL(p || q) in nats per position, [..., d_vocab] log-probabilities -> [...] (Belrose eq. 4)."""
    return (target_log_probs.exp() * (target_log_probs - log_probs)).sum(-1)


class Translator(nn.Module):
    """One layer's affine translator, h -> h + W h + b, with W, b zero: the identity at init (eq. 3)."""

    def __init__(self, d_model: int, device: Any = None, dtype: Any = None):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d_model, d_model, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(d_model, device=device, dtype=dtype))

    def forward(self, h: Tensor) -> Tensor:
        """h [..., d_model] -> translated h [..., d_model]."""
        return h + F.linear(h, self.weight, self.bias)

    def matrix(self) -> Tensor:
        """The full affine map's matrix A = I + W [d_model, d_model] (translated = A h + b)."""
        return (
            torch.eye(self.weight.shape[0], dtype=self.weight.dtype, device=self.weight.device) + self.weight
        )


class TunedLens(nn.Module):
    """Per-layer affine translators into the final residual stream, decoded by the model's own
    final norm and unembedding (Belrose et al. 2023). `from_model`, `fit`, `save`, `load`.

    Learned attributes end in `_`: `history_` (one dict per step: step, lr, KL per read-out in bits),
    `training_` (the settings and data of the last `fit`). The lens keeps a reference to its model
    (not a submodule: its state dict holds the translators only).
    """

    name = "tuned lens"

    def __init__(self, model: HookedModel, *, name: str | None = None):
        super().__init__()
        self.__dict__["model"] = model  # a reference, not a registered submodule
        self.unembedding = Unembedding(model)  # a plain object: not registered either
        self.model_name = name or model_name(model)
        self.unembedding_hash = self.unembedding.fingerprint()
        self.family = model.cfg.family
        self.d_model = model.cfg.d_model
        self.d_vocab = model.cfg.d_vocab
        self.n_layers = len(model.blocks)
        param = next(model.parameters())
        # Translators for every read-out but the last, whose residual *is* the final one.
        self.translators = nn.ModuleList(
            Translator(self.d_model, param.device, param.dtype) for _ in range(self.n_layers)
        )
        self.history_: list[dict[str, Any]] = []
        self.training_: dict[str, Any] = {}

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_model(cls, model: HookedModel, *, name: str | None = None) -> TunedLens:
        """A lens for `model` with identity translators (equal to the logit lens until fitted)."""
        return cls(model, name=name)

    @property
    def layers(self) -> list[Layer]:
        return readout_layers(self.model)

    @property
    def translated_layers(self) -> list[Layer]:
        """Read-outs that have a translator: all but the last block (`embed`, 0, ..., n_layers - 2)."""
        return self.layers[:-1]

    # ----------------------------------------------------------------------------- applying
    def translate(self, resid: Tensor, layer: Layer) -> Tensor:
        """resid [..., d_model] at `layer` -> its estimate of the final residual [..., d_model]."""
        index = resolve_readout(self.model, layer)
        return resid if index == self.n_layers else self.translators[index](resid)

    def hooks(self) -> dict[Layer, str]:
        """Read-out -> the hook it decodes."""
        return {layer: readout_hook(layer) for layer in self.layers}

    def forward(self, resid: Tensor, layer: Layer) -> Tensor:
        """resid [..., d_model] at `layer` -> tuned-lens logits [..., d_vocab] (eq. 3)."""
        return self.unembedding(self.translate(resid, layer))

    def check_model(self, model: HookedModel) -> None:
        """Raise `LensMismatchError` unless `model` has the unembedding this lens was trained for."""
        found = Unembedding(model).fingerprint()
        cfg = model.cfg
        if (
            found != self.unembedding_hash
            or cfg.d_model != self.d_model
            or len(model.blocks) != self.n_layers
        ):
            raise LensMismatchError(
                f"this tuned lens was trained for model {self.model_name!r} ({self.family}, "
                f"{self.n_layers} layers, d_model={self.d_model}, unembedding {self.unembedding_hash}); "
                f"the given model {model_name(model)!r} ({cfg.family}, {len(model.blocks)} layers, "
                f"d_model={cfg.d_model}) has unembedding {found}. Train a lens for it: "
                "TunedLens.from_model(model).fit(text)"
            )

    # ----------------------------------------------------------------------------- training
    def fit(
        self,
        text: Any,
        *,
        steps: int = 250,
        batch_size: int = 8,
        seq_len: int = 128,
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 1e-3,
        grad_clip: float | None = 1.0,
        threads: int | None = None,
        progress: bool = True,
        memory_budget_bytes: int | None = None,
        executor: Executor | None = None,
    ) -> TunedLens:
        """Train the translators on `text` (a str, or a `Corpus`: its train split) and return self.

        Streams the text as `batch_size` contiguous streams read `seq_len` tokens per step with the
        recurrent state carried (wrapping around, state reset, when the text runs out), minimising
        the sum over read-outs of KL(final || lens) with SGD + Nesterov momentum and a linear decay
        to zero (Belrose et al. 2023, appendix: lr 1 after dividing out PyTorch's 1 / (1 - momentum)).
        `threads` sets torch's CPU threads for the run. The model's weights are never changed.
        `executor` (e.g. `workbench.distributed.RayExecutor()`) fits one translator per unit, each
        clipping its own gradient (`lens/per_layer.py`); its units' threads replace `threads`.
        """
        self.check_model(self.model)
        if executor is not None:
            from workbench.analysis.lens.per_layer import fit_per_layer

            return fit_per_layer(
                self, text, executor, steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr,
                momentum=momentum, weight_decay=weight_decay, grad_clip=grad_clip, progress=progress,
                memory_budget_bytes=memory_budget_bytes,
            )  # fmt: skip
        self.history_, self.training_ = fit_translators(
            self, text, self.translated_layers, steps=steps, batch_size=batch_size, seq_len=seq_len,
            lr=lr, momentum=momentum, weight_decay=weight_decay, grad_clip=grad_clip, threads=threads,
            progress=progress, memory_budget_bytes=memory_budget_bytes,
        )  # fmt: skip
        return self

    def fit_from_store(
        self,
        store: Any,
        *,
        steps: int = 250,
        tokens_per_step: int = 1024,
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 1e-3,
        grad_clip: float | None = 1.0,
        threads: int | None = None,
        progress: bool = True,
    ) -> TunedLens:
        """Train the translators on residual streams recorded in an activation store (`workbench.record`
        of `hook_embed` and every `blocks.{l}.hook_resid_post`) instead of running the model.

        Each step reads the next `tokens_per_step` corpus positions (wrapping round at the end); the
        target is the model's own decoding of the stored final residual. Same optimiser as `fit`.
        """
        from workbench.analysis.lens.from_store import store_batches

        self.check_model(self.model)
        for key, value in {"steps": steps, "tokens_per_step": tokens_per_step}.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
        batches, store = store_batches(self, store, self.translated_layers, steps, tokens_per_step)
        with torch_threads(threads), _frozen(self.model):
            self.history_ = train_translators(self, batches, self.translated_layers, steps=steps, lr=lr,
                                              momentum=momentum, weight_decay=weight_decay, grad_clip=grad_clip,
                                              progress=progress)
        self.training_ = {
            "steps": steps, "tokens_per_step": tokens_per_step, "lr": lr, "momentum": momentum,
            "nesterov": momentum > 0, "weight_decay": weight_decay, "grad_clip": grad_clip,
            "schedule": "linear decay to 0, no warm-up", "optimizer": "SGD",
            "loss": "KL(final || lens), summed over read-outs", "tokens_seen": steps * tokens_per_step,
            "store": str(store.directory), "corpus_sha256": store.plan["corpus"]["sha256"],
        }  # fmt: skip
        return self

    def history_frame(self) -> Any:
        """`history_` as a DataFrame: one row per step, a column of KL (bits) per read-out."""
        import pandas as pd

        return pd.DataFrame(self.history_)

    # ----------------------------------------------------------------------------- files
    def config(self) -> dict[str, Any]:
        """The JSON document saved beside the weights (see docs/tuned_lens_format.md)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_name": self.model_name,
            "unembedding_sha256": self.unembedding_hash,
            "family": self.family,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "d_vocab": self.d_vocab,
            "readouts": [str(layer) for layer in self.layers],
            "translated": [str(layer) for layer in self.translated_layers],
            "translation": "h_final ≈ h + h @ weight.T + bias",
            "decoder": "logits = unembed(final_norm(h_final))",
            "training": self.training_,
        }

    def save(self, directory: str | os.PathLike[str], *, format: str = "workbench") -> Path:
        """Write `lens.safetensors` (translators.{i}.weight/bias, float32) and `config.json`, atomically.

        `format="tuned-lens"` writes the tuned-lens package's directory instead (`config.json`,
        `params.pt`, plus our `workbench.json`), which their `TunedLens.from_model_and_pretrained` reads.
        """
        if format not in SAVE_FORMATS:
            raise ValueError(f"format must be one of {', '.join(map(repr, SAVE_FORMATS))}, got {format!r}")
        if format == "tuned-lens":
            from workbench.analysis.lens.tuned_lens_package import save_package_lens

            return save_package_lens(self, directory)
        tensors = {
            f"translators.{i}.{part}": getattr(t, part).detach().to("cpu", torch.float32).contiguous()
            for i, t in enumerate(self.translators)
            for part in ("weight", "bias")
        }
        target = Path(directory)
        with atomic_directory(target, marker=CONFIG_FILENAME) as staging:
            save_file(tensors, str(staging / WEIGHTS_FILENAME), metadata={"format": FORMAT})
            document = {**self.config(), "history": self.history_}
            (staging / CONFIG_FILENAME).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str], model: HookedModel) -> TunedLens:
        """Read a saved lens for `model`; a model with another unembedding raises `LensMismatchError`.

        Reads our format and the tuned-lens package's (`config.json` + `params.pt`, the weights with
        `torch.load(weights_only=True)` only), whichever the directory holds.
        """
        from workbench.analysis.lens.tuned_lens_package import is_package_lens, load_package_lens

        directory = Path(directory)
        if is_package_lens(directory):
            return load_package_lens(directory, model)
        config_path, weights_path = directory / CONFIG_FILENAME, directory / WEIGHTS_FILENAME
        for path in (config_path, weights_path):
            if not path.is_file():
                raise CheckpointError(f"no tuned lens at {directory}: {path.name} is missing")
        document = json.loads(config_path.read_text(encoding="utf-8"))
        if document.get("format") != FORMAT:
            raise CheckpointError(f"{config_path} is not a tuned lens (format {document.get('format')!r})")
        if document.get("version", 0) > VERSION:
            raise CheckpointError(
                f"{config_path} has format version {document['version']}; "
                f"this workbench reads up to {VERSION}"
            )
        lens = cls(model, name=document["model_name"])
        lens.unembedding_hash = document["unembedding_sha256"]
        lens.family, lens.n_layers = document["family"], document["n_layers"]
        lens.d_model, lens.d_vocab = document["d_model"], document["d_vocab"]
        lens.check_model(model)
        with safe_open(str(weights_path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        expected = {k: tuple(v.shape) for k, v in lens.state_dict().items()}
        for key, shape in expected.items():
            if key not in tensors:
                raise CheckpointError(f"{weights_path} lacks tensor {key!r}")
            if tuple(tensors[key].shape) != shape:
                raise CheckpointError(
                    f"{weights_path}", tensor=key, expected=shape, actual=tuple(tensors[key].shape)
                )
        param = next(model.parameters())
        lens.load_state_dict({k: tensors[k].to(param.device, param.dtype) for k in expected}, strict=True)
        lens.history_ = document.get("history", [])
        lens.training_ = document.get("training", {})
        return lens

    def extra_repr(self) -> str:
        fitted = f"fitted {self.training_['steps']} steps" if self.training_ else "not fitted"
        return f"model={self.model_name!r}, layers={self.layers}, {fitted}"


def train_translators(
    lens: Any, batches: Iterator[tuple[dict[str, Tensor], Tensor]], layers: list[Layer], *, steps: int,
    lr: float, momentum: float, weight_decay: float, grad_clip: float | None, progress: bool,
) -> list[dict[str, Any]]:
    """The optimisation (Belrose et al. 2023 recipe) over `steps` batches of (hook -> activations
    [..., d_model], the final log-probabilities [..., d_vocab]); returns the history."""
    from tqdm.auto import tqdm

    parameters = [p for p in lens.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(
        parameters, lr=lr * (1 - momentum), momentum=momentum, nesterov=momentum > 0,
        weight_decay=weight_decay,
    )  # fmt: skip
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0 - step / steps)
    hooks = lens.hooks()
    names = [hooks[layer] for layer in layers]
    labels = [str(layer) for layer in layers]
    history: list[dict[str, Any]] = []
    bar = tqdm(batches, total=steps, desc=lens.name, disable=not progress)
    for step, (cache, target) in enumerate(bar):
        losses = torch.stack(
            [
                kl_divergence(target, lens(cache[name], layer).float().log_softmax(-1)).mean()
                for name, layer in zip(names, layers, strict=True)
            ]
        )  # [n_layers] nats
        optimiser.zero_grad(set_to_none=True)
        losses.sum().backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        row = {"step": step, "lr": optimiser.param_groups[0]["lr"] / (1 - momentum)}
        optimiser.step()
        schedule.step()
        bits = (losses.detach() / LN2).tolist()
        row.update(zip(labels, bits, strict=True))
        history.append(row)
        bar.set_postfix(mean_kl_bits=f"{sum(bits) / len(bits):.3f}")
    return history


def fit_translators(
    lens: Any,
    text: Any,
    layers: list[Layer],
    *,
    steps: int = 250,
    batch_size: int = 8,
    seq_len: int = 128,
    lr: float = 1.0,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
    grad_clip: float | None = 1.0,
    threads: int | None = None,
    progress: bool = True,
    memory_budget_bytes: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train a lens's parameters (Belrose et al. 2023 recipe) so that `lens(activation, layer)` matches
    the model's final distribution at each of `layers`; returns (history, training settings).

    `lens` has `.model`, `.hooks()` (layer -> hook name) and parameters; the activations come from
    the model's hooks over windows of the streamed text, the state carried across windows.
    """
    for key, value in {"steps": steps, "batch_size": batch_size, "seq_len": seq_len}.items():
        if value <= 0:
            raise ValueError(f"{key} must be positive, got {value}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
    model = lens.model
    source = corpus_text(text, "train")
    ids = encode_corpus(model.tokenizer, source)  # [n]
    data = streams(ids, batch_size, seq_len)  # [batch, length]
    hooks = lens.hooks()
    names = [hooks[layer] for layer in layers]

    def batches() -> Iterator[tuple[dict[str, Tensor], Tensor]]:
        state = None
        for window, reset in windows(data, seq_len, steps):
            if reset:
                state = None
            cache, logits, state = collect_hooks(
                model, window.to(model.device), names, state, memory_budget_bytes=memory_budget_bytes
            )  # cache: hook -> [batch, seq, ...], logits [batch, seq, d_vocab]
            yield cache, logits.float().log_softmax(-1)

    with torch_threads(threads), _frozen(model):
        history = train_translators(lens, batches(), layers, steps=steps, lr=lr, momentum=momentum,
                                    weight_decay=weight_decay, grad_clip=grad_clip, progress=progress)
    training = {
        "steps": steps, "batch_size": data.shape[0], "seq_len": seq_len, "lr": lr,
        "momentum": momentum, "nesterov": momentum > 0, "weight_decay": weight_decay,
        "grad_clip": grad_clip, "schedule": "linear decay to 0, no warm-up",
        "optimizer": "SGD", "loss": "KL(final || lens), summed over read-outs",
        "tokens_seen": steps * data.shape[0] * seq_len, "text_chars": len(source),
        "corpus": getattr(text, "name", None), "corpus_fingerprint": getattr(text, "fingerprint", None),
    }  # fmt: skip
    return history, training


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Turn off the model's gradients for a while (the lens decodes through them), then restore."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
