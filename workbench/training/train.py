"""Train a character-level recurrent language model, Karpathy-style, and write a checkpoint.

The training text is cut into `batch_size` contiguous streams; step `s` reads window `s` of every
stream, and the recurrent state is carried from one window to the next (truncated backpropagation
through time), reset only when the streams wrap around to their start. The data a step sees is a
function of the step number alone, so with the saved optimizer, RNG and carried state, resuming
gives exactly the weights an uninterrupted run would.

Losses are reported in bits per character (bpc): cross-entropy in nats divided by ln 2.
"""

from __future__ import annotations

import math
import platform
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from workbench.data.corpora import DEFAULT_CORPUS, DEFAULT_MIN_COUNT, load_corpus
from workbench.data.tokenizer import CharTokenizer
from workbench.threads import torch_threads
from workbench.training.checkpoint import (
    TrainingState,
    is_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

if TYPE_CHECKING:
    from workbench.models.paths import ExecutionPath

__all__ = ["TRAIN_OPTIONS", "TrainConfig", "TrainOption", "evaluate_bpc", "reproduce_command", "train"]

LN2 = math.log(2.0)


@dataclass(frozen=True)
class TrainOption:
    """One field of `TrainConfig` as the command line spells it (shared by the CLI and provenance)."""

    name: str  # field of TrainConfig (keyword argument of train())
    flag: str  # command-line flag
    type: type
    help: str
    # False: does not change the weights (where to write, how often to report), so a resumed run
    # may change it freely, and it is left out of the reproduce command when at its default.
    affects_weights: bool = True

    @property
    def default(self) -> Any:
        """The field's default in `TrainConfig`."""
        return TrainConfig.__dataclass_fields__[self.name].default


TRAIN_OPTIONS: tuple[TrainOption, ...] = (
    TrainOption("corpus", "--corpus", str, "corpus name: python-stdlib or linux"),
    TrainOption("family", "--family", str, "mixer family: elman lstm gru mingru minlstm s6"),
    TrainOption("n_layers", "--layers", int, "number of recurrent blocks"),
    TrainOption("d_model", "--d-model", int, "residual width"),
    TrainOption("d_hidden", "--hidden", int, "recurrent width of each mixer (default d_model)"),
    TrainOption("d_mlp", "--d-mlp", int, "MLP width in each block (0: no MLP)"),
    TrainOption("steps", "--steps", int, "optimizer steps in total"),
    TrainOption("batch_size", "--batch-size", int, "parallel text streams per step"),
    TrainOption("seq_len", "--seq-len", int, "characters per window (TBPTT length)"),
    TrainOption("lr", "--lr", float, "peak learning rate (AdamW)"),
    TrainOption("min_lr_ratio", "--min-lr-ratio", float, "final LR as a fraction of peak"),
    TrainOption("warmup_steps", "--warmup-steps", int, "linear warmup (default steps/20)"),
    TrainOption("weight_decay", "--weight-decay", float, "AdamW weight decay"),
    TrainOption("grad_clip", "--grad-clip", float, "clip the gradient's global norm to this"),
    TrainOption("seed", "--seed", int, "seed for initialisation (same seed, same weights)"),
    TrainOption("max_bytes", "--max-bytes", int, "cap the corpus at this many bytes"),
    TrainOption("min_count", "--min-count", int, "vocabulary: min occurrences"),
    TrainOption("path", "--path", str, "forward path to train on: fused or reference"),
    TrainOption("out", "--out", str, "checkpoint directory", affects_weights=False),
    TrainOption("eval_every", "--eval-every", int, "validate every N (steps/10)", False),
    TrainOption("eval_chars", "--eval-chars", int, "validation characters", False),
    TrainOption("test_chars", "--test-chars", int, "test characters (default all)", False),
    TrainOption("checkpoint_every", "--checkpoint-every", int, "save every N (steps/5)", False),
    TrainOption("weights_dtype", "--weights-dtype", str, "float32 or float16", False),
    TrainOption("device", "--device", str, "cpu or cuda", affects_weights=False),
    TrainOption("threads", "--threads", int, "CPU threads (default: torch's)", False),
)
_OPTIONS_BY_NAME = {option.name: option for option in TRAIN_OPTIONS}


def reproduce_command(args: Mapping[str, Any]) -> str:
    """The `workbench train ...` command line that repeats a run with these arguments."""
    words = ["workbench", "train"]
    for option in TRAIN_OPTIONS:
        value = args.get(option.name, option.default)
        if value is None or (not option.affects_weights and value == option.default):
            continue
        if option.name in ("corpus", "family", "n_layers", "steps", "seed") or value != option.default:
            words += [option.flag, str(value)]
    return shlex.join(words)


# --------------------------------------------------------------------------------------- helpers
def detach_state(state: Any) -> Any:
    """Cut the graph behind a carried recurrent state (a nest of lists/dicts of tensors)."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, Mapping):
        return {key: detach_state(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(detach_state(value) for value in state)
    return state


def _move_state(state: Any, device: torch.device | str) -> Any:
    if isinstance(state, Tensor):
        return state.to(device)
    if isinstance(state, Mapping):
        return {key: _move_state(value, device) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_move_state(value, device) for value in state)
    return state


def learning_rate(step: int, lr: float, steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup to `lr`, then cosine decay to `lr * min_lr_ratio` at `steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _streams(ids: Tensor, n_streams: int) -> Tensor:
    """ids [n] -> [n_streams, n // n_streams]: contiguous slices of the text, one per row."""
    length = ids.shape[0] // n_streams
    return ids[: n_streams * length].view(n_streams, length)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate_bpc(
    model: nn.Module,
    tokenizer: CharTokenizer,
    text: str,
    *,
    batch_size: int = 16,
    seq_len: int = 256,
    max_chars: int | None = None,
    path: ExecutionPath | None = None,
    progress: bool = False,
) -> float:
    """Bits per character of `model` on `text`, predicting every character but each stream's first.

    The text is cut into `batch_size` contiguous streams read `seq_len` characters at a time with
    the state carried across windows, as in training. Characters outside the vocabulary count as
    the unknown token (if the vocabulary has one). `progress`: a tqdm bar over the windows.
    """
    if max_chars is not None:
        text = text[:max_chars]
    unknown = "map" if tokenizer.unknown_token is not None else "error"
    ids = tokenizer.encode(text, unknown=unknown)  # [n]
    if ids.shape[0] < 2:
        raise ValueError("evaluate_bpc needs at least two characters of text")
    n_streams = max(1, min(batch_size, ids.shape[0] // 2))
    data = _streams(ids, n_streams)  # [streams, length]
    device = _model_device(model)
    was_training = model.training
    model.eval()
    total_nats, count, state = 0.0, 0, None
    try:
        starts = range(0, data.shape[1] - 1, seq_len)
        for start in tqdm(starts, desc="evaluate", unit="window", disable=not progress):
            targets = data[:, start + 1 : start + seq_len + 1].to(device)  # [streams, w]
            inputs = data[:, start : start + targets.shape[1]].to(device)  # [streams, w]
            logits, state = model(inputs, initial_state=state, return_state=True, path=path)
            loss = F.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), reduction="sum"
            )  # logits [streams * w, d_vocab]
            total_nats += loss.item()
            count += targets.numel()
    finally:
        model.train(was_training)
    return total_nats / count / LN2


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _check_resumable(saved: Mapping[str, Any], args: Mapping[str, Any], out: Path) -> None:
    """Refuse to resume with arguments that would change the weights (other than `steps`)."""
    different = {
        name: (saved.get(name, option.default), args[name])
        for name, option in _OPTIONS_BY_NAME.items()
        if option.affects_weights and name != "steps" and saved.get(name, option.default) != args[name]
    }
    if different:
        listed = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in different.items())
        raise ValueError(
            f"cannot resume {out} with different settings ({listed}); use the saved settings, "
            "or train into a new --out directory"
        )


# --------------------------------------------------------------------------------------- train
@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a `train` run. The command-line options (`TRAIN_OPTIONS`) are its fields
    with a flag; their defaults are the defaults here. `None` widths and intervals are derived
    from the others by `resolved`."""

    corpus: str = DEFAULT_CORPUS
    family: str = "lstm"
    n_layers: int = 2
    d_model: int = 128
    d_hidden: int | None = None
    d_mlp: int = 0
    steps: int = 2000
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int | None = None
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    out: str | Path | None = None  # checkpoint directory (default runs/<corpus>-<family>-<layers>x<hidden>-seed<seed>)
    resume: bool = False  # continue the training state in `out` (fresh if none)
    overwrite: bool = False  # replace a checkpoint already in `out`
    eval_every: int | None = None
    eval_chars: int | None = 100_000
    test_chars: int | None = None
    checkpoint_every: int | None = None
    stop_at: int | None = None  # end after this step, resumable, as if interrupted
    device: str = "cpu"
    threads: int | None = None
    max_bytes: int | None = None
    min_count: int = DEFAULT_MIN_COUNT
    path: ExecutionPath = "fused"
    weights_dtype: str = "float32"
    keep_training_state: bool = True  # keep the optimizer state in the final checkpoint
    corpus_root: str | Path | None = None  # another corpus source directory or tarball
    progress: bool = True  # tqdm progress bars

    def resolved(self) -> TrainConfig:
        """This config with the derived defaults filled in: d_hidden = d_model, warmup steps/20,
        validation every steps/10, a checkpoint every steps/5, and the default `out`."""
        d_hidden = self.d_model if self.d_hidden is None else self.d_hidden
        steps = self.steps
        default_out = Path("runs") / f"{self.corpus}-{self.family}-{self.n_layers}x{d_hidden}-seed{self.seed}"
        out = default_out if self.out is None else self.out
        return replace(
            self,
            d_hidden=d_hidden,
            warmup_steps=max(1, steps // 20) if self.warmup_steps is None else self.warmup_steps,
            eval_every=max(1, steps // 10) if self.eval_every is None else self.eval_every,
            checkpoint_every=max(1, steps // 5) if self.checkpoint_every is None else self.checkpoint_every,
            out=Path(out),
        )

    def train_args(self) -> dict[str, Any]:
        """The command-line options' values (`out` as text): the checkpoint's `train_args`."""
        args = {option.name: getattr(self, option.name) for option in TRAIN_OPTIONS}
        return {**args, "out": None if self.out is None else str(self.out)}


def train(config: TrainConfig | None = None, /, **settings: Any) -> Path:
    """Train a character-level `HookedRecurrentLM` as `config` says (keyword `settings` replace
    its fields, e.g. `train(family="gru", steps=500)`) and return its checkpoint directory.

    Same seed and corpus give the same weights. `resume=True` continues from the training state in
    `out` (starting fresh if there is none); `stop_at` ends the run after that step with a
    resumable checkpoint, as if interrupted (the LR schedule still targets `steps`). Validation bpc
    is measured every `eval_every` steps on the first `eval_chars` characters of the validation
    split, and the test-split bpc at the end is recorded in `config.json` metrics.
    """
    from workbench.models import HookedRecurrentLM, RecurrentConfig

    given = replace(config or TrainConfig(), **settings)
    # Settings that do not change the weights enter the reproduce command as the user gave them.
    requested = {"eval_every": given.eval_every, "checkpoint_every": given.checkpoint_every}
    config = given.resolved()
    args = config.train_args()
    for name in ("steps", "batch_size", "seq_len", "eval_every", "checkpoint_every"):
        if args[name] <= 0:
            raise ValueError(f"{name} must be positive, got {args[name]}")
    torch_device = torch.device(config.device)

    data_corpus = load_corpus(config.corpus, max_bytes=config.max_bytes, root=config.corpus_root)
    saved = read_checkpoint(config.out) if config.resume and is_checkpoint(config.out) else None
    state_saved = saved.load_training_state() if saved is not None else None
    if config.resume and saved is not None and state_saved is None:
        raise ValueError(f"{config.out} holds a checkpoint without training state; it cannot be resumed")
    if not config.resume and not config.overwrite and is_checkpoint(config.out):
        raise FileExistsError(
            f"{config.out} already holds a checkpoint; pass resume=True (--resume) to continue it or "
            "overwrite=True (--overwrite) to replace it"
        )

    if saved is not None and state_saved is not None:
        _check_resumable(saved.provenance.get("train_args", {}), args, config.out)
        tokenizer = saved.tokenizer
        model = saved.load_model(device="cpu", path=config.path)
        if state_saved.master_weights is not None:
            model.load_state_dict(state_saved.master_weights)
        start_step = state_saved.step
        history = dict(state_saved.extra.get("history", {}))
    else:
        tokenizer = data_corpus.build_tokenizer(min_count=config.min_count)
        torch.manual_seed(config.seed)
        cfg = RecurrentConfig(
            family=config.family, n_layers=config.n_layers, d_model=config.d_model, d_hidden=config.d_hidden,
            d_mlp=config.d_mlp, d_vocab=len(tokenizer),
        )  # fmt: skip
        model = HookedRecurrentLM(cfg)
        start_step = 0
        history = {}
    model.tokenizer = tokenizer
    model.to(torch_device)
    model.set_default_path(config.path)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    carried: Any = None
    if state_saved is not None:
        optimizer.load_state_dict(state_saved.optimizer)
        _set_rng_state(state_saved.rng, torch_device)
        carried = _move_state(state_saved.carried_state, torch_device)

    with torch_threads(config.threads):
        ids = tokenizer.encode(data_corpus.train, unknown="map")  # [n_train]
        data = _streams(ids.to(torch.int32), config.batch_size)  # [batch, stream_len], int32 to save memory
        windows = (data.shape[1] - 1) // config.seq_len
        if windows < 1:
            raise ValueError(
                f"the training split ({ids.shape[0]:,} characters) is too short for batch_size="
                f"{config.batch_size} streams of seq_len={config.seq_len}; lower them or raise max_bytes"
            )
        val_history: list[list[float]] = history.setdefault("validation_bpc", [])
        train_history: list[list[float]] = history.setdefault("train_bpc", [])
        # bpc of the steps since the last report; carried through a resume so reports line up
        recent: list[float] = list(state_saved.extra.get("recent_train_bpc", [])) if state_saved else []
        started = time.time()

        def evaluate(split: str, max_chars: int | None) -> float:
            return evaluate_bpc(
                model, tokenizer, data_corpus.split(split), max_chars=max_chars, path=config.path,
                seq_len=max(config.seq_len, 256),
            )  # fmt: skip

        def checkpoint(step: int, final: bool) -> None:
            metrics: dict[str, Any] = {
                "train_bpc": train_history[-1][1] if train_history else None,
                "validation_bpc": val_history[-1][1] if val_history else None,
                "tokens_seen": step * config.batch_size * config.seq_len,
            }
            if final:
                metrics["test_bpc"] = evaluate("test", config.test_chars)
                metrics["test_chars"] = min(len(data_corpus.test), config.test_chars or len(data_corpus.test))
            metrics["history"] = history
            provenance = {
                "corpus": config.corpus,
                "corpus_source": data_corpus.source,
                "corpus_fingerprint": data_corpus.fingerprint,
                "corpus_chars": data_corpus.char_counts,
                "max_bytes": config.max_bytes,
                "steps": step,
                "seed": config.seed,
                "command": reproduce_command({**args, **requested}),
                "train_args": args,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "platform": sys.platform,
                "train_seconds": round(time.time() - started, 1),
            }
            training_state = None
            if config.keep_training_state or not final:
                training_state = TrainingState(
                    step=step,
                    optimizer=optimizer.state_dict(),
                    rng=_rng_state(torch_device),
                    carried_state=carried,
                    extra={"history": history, "recent_train_bpc": recent},
                )
            save_checkpoint(
                config.out, model, tokenizer, provenance=provenance, metrics=metrics, dtype=config.weights_dtype,
                training_state=training_state,
            )  # fmt: skip

        last_step = config.steps if config.stop_at is None else min(config.steps, config.stop_at)
        bar = tqdm(total=config.steps, initial=start_step, disable=not config.progress, unit="step", desc="train")
        step = start_step
        for step in range(start_step, last_step):
            window = step % windows
            if window == 0:
                carried = None  # the streams wrapped around to their start: a fresh state
            lo = window * config.seq_len
            inputs = data[:, lo : lo + config.seq_len].to(torch_device, torch.long)  # [batch, seq_len]
            targets = data[:, lo + 1 : lo + config.seq_len + 1].to(torch_device, torch.long)  # [batch, seq]
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, config.lr, config.steps, config.warmup_steps, config.min_lr_ratio)
            logits, carried = model(inputs, initial_state=carried, return_state=True, path=config.path)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # logits [b*seq, vocab]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            carried = detach_state(carried)
            bpc = loss.item() / LN2
            if not math.isfinite(bpc):
                raise FloatingPointError(f"loss became {bpc} at step {step + 1}; lower the lr")
            recent.append(bpc)
            done = step + 1
            if done % config.eval_every == 0 or done == config.steps:
                train_history.append([done, sum(recent) / len(recent)])
                recent.clear()
                val_history.append([done, evaluate("validation", config.eval_chars)])
                bar.set_postfix(bpc=f"{bpc:.3f}", val_bpc=f"{val_history[-1][1]:.3f}")
            else:
                bar.set_postfix(bpc=f"{bpc:.3f}", refresh=False)
            bar.update(1)
            if done % config.checkpoint_every == 0 and done < last_step:
                checkpoint(done, final=False)
        bar.close()
        final_step = max(start_step, last_step)
        if final_step > start_step or not is_checkpoint(config.out) or final_step == config.steps:
            checkpoint(final_step, final=final_step == config.steps)
        return config.out
