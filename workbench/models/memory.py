"""The memory guard: what one forward pass holds at its peak, estimated before it runs (DESIGN: Memory budget).

A call holds more than what it records: the logits, the forward's own work (the gates' inputs, the
kernels' buffers, the residual stream), and, while autograd is on, the graph of the whole pass. Each
part is estimated from the sizes in the hook specs and factors measured per family and path
(`benchmarks/bench_memory.py`, `benchmarks/memory_results.md`); a call whose total is over the budget
is refused before anything runs, with the parts and what to pass instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from workbench.errors import MemoryBudgetError, format_bytes
from workbench.models.cache import memory_budget

if TYPE_CHECKING:
    from workbench.models.hooked import HookedRecurrentBase

# Measured peak per position of one forward beyond its recording (benchmarks/bench_memory.py --fit:
# CPU, float32, batch 1, run_with_cache recording one state hook, a fresh process per call), as
# factor x the bytes every hook holds at one position + bytes per layer and position (the per-step
# tensors of the step loops and, with autograd, their graph nodes), fitted through two widths per
# family. Keys (family, path): (factor, step bytes) without autograd, then with it.
PEAK_TERMS: dict[tuple[str, str], tuple[float, float, float, float]] = {
    ("elman", "fused"): (0.223, 746, 0.505, 4630),
    ("elman", "reference"): (0.262, 608, 0.621, 5527),
    ("lstm", "fused"): (0.287, 398, 1.071, 381),
    ("lstm", "reference"): (0.318, 947, 0.916, 16315),
    ("gru", "fused"): (0.257, 761, 1.056, 15285),
    ("gru", "reference"): (0.287, 646, 1.152, 17435),
    ("mingru", "fused"): (0.245, 376, 1.761, 192),
    ("mingru", "reference"): (0.198, 658, 1.207, 3901),
    ("minlstm", "fused"): (0.220, 414, 1.994, 74),
    ("minlstm", "reference"): (0.207, 643, 1.430, 3859),
    ("s6", "fused"): (0.073, 309, 1.665, 3817),
    ("s6", "reference"): (0.185, 1534, 3.153, 18941),
}
# The fit missed a wider model (lstm 2x512, reference, no grad) by 15%; the guard asks for 25% more.
PEAK_MARGIN = 1.25
# Families not measured (adapters, models built elsewhere) take the largest of every term.
UNMEASURED = tuple(max(terms[i] for terms in PEAK_TERMS.values()) for i in range(4))
# Measured (docs/design.md, Memory budget): with incl_bwd=True the peak beyond the recorded values and
# their gradients (the autograd graph, the first pass, the probes), in units of every hook's bytes, was
# at most 4.3 on CPU for the native families (GRU; S6 3.7, LSTM 3.6, the others under 2); 5 leaves a margin.
GRADIENT_GRAPH_FACTOR = 5
# Copies of [batch, pos, d_vocab] a call holds at once: the logits, plus for the loss the shifted copy
# cross_entropy flattens and its log-softmax.
LOGIT_COPIES = {"logits": 1, "loss": 3}
# Windows longer than this gain nothing on CPU kernels and only hold more memory (`model.score`).
MAX_AUTO_WINDOW = 32_768
# Below this estimate the guard does not read /proc/meminfo: one-token generation steps stay cheap.
SMALL_CALL_BYTES = 32 * 2**20

_checked = contextvars.ContextVar("workbench_memory_checked", default=False)


@dataclass(frozen=True)
class MemoryEstimate:
    """The bytes one call holds at its peak, by part (`parts`: name -> bytes), before it runs."""

    batch: int
    pos: int
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def breakdown(self) -> str:
        """`part size, ...`, largest first, e.g. `autograd graph 5.10 GiB, logits 117.49 MiB`."""
        ordered = sorted(self.parts.items(), key=lambda item: -item[1])
        return ", ".join(f"{name} {format_bytes(size)}" for name, size in ordered if size > 0)


@dataclass(frozen=True)
class _Widths:
    """Per-position bytes of one model in one dtype, computed once (hook specs are fixed)."""

    activation: int  # every hook but the output's, per position and batch row
    output: int  # the output hook (logits), per position and batch row
    family: str
    n_layers: int


_widths: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _model_widths(model: HookedRecurrentBase) -> _Widths:
    dtype = next(model.parameters()).dtype
    known = _widths.get(model)
    if known is not None and known[0] == dtype:
        return known[1]
    names = [n for n in model.hook_dict if n != model._output_hook]

    def per_position(hooks: list[str]) -> int:  # bytes at one more position, batch 1
        return model.recording_bytes(1, 2, hooks) - model.recording_bytes(1, 1, hooks)

    widths = _Widths(per_position(names), per_position([model._output_hook]),
                     str(getattr(model.cfg, "family", "")), len(model.blocks))
    _widths[model] = (dtype, widths)
    return widths


def _per_position(widths: _Widths, path: str, grad: bool) -> float:
    """Bytes per position (batch row) of the forward's working set, with the graph when `grad`."""
    terms = PEAK_TERMS.get((widths.family, path), UNMEASURED)
    factor, step = (terms[2], terms[3]) if grad else (terms[0], terms[1])
    return PEAK_MARGIN * (factor * widths.activation + step * widths.n_layers)


def grad_will_record(model: HookedRecurrentBase, initial_state: Sequence | None = None) -> bool:
    """Whether a forward now builds an autograd graph: grad mode on and a parameter or state needs it."""
    if not torch.is_grad_enabled():
        return False
    if any(p.requires_grad for p in model.parameters()):
        return True
    states = initial_state or ()
    return any(t.requires_grad for layer in states for t in getattr(layer, "values", lambda: ())())


def estimate_call(
    model: HookedRecurrentBase, batch: int, pos: int, *, recorded: Sequence[str] = (),
    incl_bwd: bool = False, grad: bool = False, return_type: str | None = "logits",
    path: str = "fused", output_hooked: bool = False,
) -> MemoryEstimate:
    """The peak of one forward over [batch, pos] recording `recorded`, by part.

    `grad`: autograd records the graph; `incl_bwd`: `run_with_cache(incl_bwd=True)` (values, their
    gradients, graph and probes); `output_hooked`: the output is computed for a hook even when
    `return_type` is None.
    """
    widths = _model_widths(model)
    rows = batch * pos
    n_recorded = len(recorded)  # the output hook's recording is the logits, counted below
    recorded = [n for n in recorded if n != model._output_hook]
    recording = model.recording_bytes(batch, pos, recorded) if recorded else 0
    copies = LOGIT_COPIES.get(return_type or "", 1 if output_hooked else 0)
    work = _per_position(widths, path, grad=False)
    logits = "logits" if copies <= 1 else f"logits and loss ({copies} x [batch, pos, d_vocab])"
    parts = {
        f"recording ({n_recorded} hook{'' if n_recorded == 1 else 's'})": recording,
        logits: copies * rows * widths.output,
        "forward work buffers": int(rows * work),
    }
    if incl_bwd:
        every = widths.activation + widths.output
        parts["recorded gradients"] = recording
        parts["autograd graph and gradient probes"] = GRADIENT_GRAPH_FACTOR * rows * every
    elif grad:
        graph = max(0.0, _per_position(widths, path, grad=True) - work)
        parts["autograd graph"] = int(rows * graph + (copies > 0) * rows * widths.output)
    return MemoryEstimate(batch, pos, parts)


def fitting_window(
    model: HookedRecurrentBase, batch: int, budget: int, recorded: Sequence[str] = (), path: str = "fused",
) -> int:
    """The most positions per window that fit `budget` when streamed under no_grad (at least 1)."""
    one = estimate_call(model, batch, 1, recorded=recorded, return_type="loss", path=path).total
    return max(1, int(budget // max(one, 1)))


def check_estimate(
    model: HookedRecurrentBase, estimate: MemoryEstimate, budget: int | None, *, what: str,
    recorded: Sequence[str] = (), path: str = "fused", device: torch.device | str | None = None,
) -> None:
    """Raise `MemoryBudgetError` when `estimate` is over `budget` (None: `memory_budget()`), naming the
    large parts and what to pass instead."""
    if budget is None:
        if estimate.total <= SMALL_CALL_BYTES:
            return
        budget = memory_budget(device or model.device)
    if estimate.total <= budget:
        return
    raise MemoryBudgetError(
        estimate.total, budget, what=f"{what} over {estimate.batch} x {estimate.pos:,} positions",
        hint=_advice(model, estimate, budget, recorded, path), parts=estimate.parts,
    )


def _advice(
    model: HookedRecurrentBase, estimate: MemoryEstimate, budget: int, recorded: Sequence[str], path: str,
) -> str:
    """What to pass instead, for the parts that are large (a quarter of the total or more)."""
    large = [name for name, size in estimate.parts.items() if size * 4 >= estimate.total]
    tips = []
    if any(name.startswith("recording") for name in large):
        tips.append("record fewer hooks (names_filter=...)")
        tips.append("or record them to disk in shards, memory bounded by one shard: "
                    "workbench.record(model, corpus_files, out_dir, hooks=[...]) (docs/activation_store.md)")
    if any("autograd" in name or "gradients" in name for name in large):
        tips.append("run under torch.no_grad() (or torch.inference_mode()) unless you need gradients")
    if any(name.startswith("logits") for name in large):
        tips.append("pass return_type=None (the [batch, pos, d_vocab] logits are then not computed)")
    window = min(MAX_AUTO_WINDOW, fitting_window(model, estimate.batch, budget, recorded, path))
    tips.append(
        f"or stream the input in windows with the state carried: model.score(tokens, window={window:,}"
        + (", names_filter=..., sink=...)" if recorded else ")")
        + " scores it (loss, per-token log-probs) in bounded memory"
    )
    tips.append("or raise the budget (memory_budget_bytes=..., workbench.set_memory_budget)")
    return "; ".join(tips)


def is_checked() -> bool:
    """Whether a caller (run_with_cache, score) has already checked the call now running."""
    return _checked.get()


@contextlib.contextmanager
def checked_by_caller() -> Iterator[None]:
    """Within this block the forward pass skips its own check: the caller checked a larger estimate."""
    token = _checked.set(True)
    try:
        yield
    finally:
        _checked.reset(token)
