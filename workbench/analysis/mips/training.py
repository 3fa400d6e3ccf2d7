"""Train the paper's RNNs to exact accuracy and search architectures smallest first (Michaud et al. 2024, Sec. 3.1).

"Exact" means: on every held-out sequence, every rounded output (or arg-max symbol, for the
cross-entropy variant) equals the target. The search is linear recurrences first (linear readout,
then an MLP readout on a linear state), then GRUs, each from the smallest hidden size up, several
seeds, within a budget of work-seconds (`work.py`: deterministic, so a seeded search gives the same
nets on every machine).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from workbench.analysis.mips.clock import cpu_seconds
from workbench.analysis.mips.rnn import MipsRNN, RNNSpec, encode_inputs
from workbench.analysis.mips.tasks import Task, get_task
from workbench.analysis.mips.work import WorkMeter, check_work

__all__ = ["TrainedRNN", "candidate_specs", "predict", "train_rnn"]


@dataclass
class TrainedRNN:
    """A trained network with what is needed to read it: task, spec, output classes, accuracy."""

    task: Task
    spec: RNNSpec
    model: MipsRNN
    classes: np.ndarray | None  # output symbols for the cross-entropy variant, else None
    accuracy: float  # fraction of held-out sequences entirely right
    steps: int
    seconds: float  # CPU seconds the training took (measured; reported, never used to decide)
    history: list[float] = field(default_factory=list)
    stopped_by_budget: bool = False  # training spent its work limit before its step count or exactness
    work: float = 0.0  # work-seconds the training was charged (`work.py`): the same on every machine
    passes: dict[tuple[bool, int], int] = field(default_factory=dict, repr=False)  # (backward, batch) -> count

    @property
    def exact(self) -> bool:
        """Every held-out sequence entirely right."""
        return self.accuracy == 1.0

    def features(self, x: np.ndarray) -> torch.Tensor:
        """Integer inputs `[batch, pos, n_inputs]` -> this network's features `[batch, pos, d_input]`."""
        return encode_inputs(self.task, x, self.spec.encoding)


def predict(trained: TrainedRNN, x: np.ndarray) -> np.ndarray:
    """Integer predictions `[batch, pos, n_outputs]` for integer inputs `[batch, pos, n_inputs]`."""
    with torch.no_grad():
        out = trained.model(trained.features(x))  # [b, p, d_out]
    return _decode(out, trained.classes, trained.task.n_outputs)


def _decode(out: torch.Tensor, classes: np.ndarray | None, n_outputs: int) -> np.ndarray:
    if classes is None:
        return torch.round(out).to(torch.int64).numpy()
    logits = out.reshape(*out.shape[:2], n_outputs, len(classes))  # [b, p, c_out, n_cls]
    return classes[logits.argmax(-1).numpy()]


def candidate_specs(
    task: Task | str, seeds: tuple[int, ...] = (0, 1), max_linear: int = 8
) -> Iterator[RNNSpec]:
    """Architectures smallest first (Sec. 3.1): linear recurrences, then nonlinear ones (GRU, LSTM, Elman).

    Per seed: linear state with a linear readout (sizes 1-3, without then with bias, raw then
    one-hot inputs), linear state with an MLP readout (sizes 1-2; one-hot inputs 2-3), then GRU-4, GRU-16, LSTM-8 and
    Elman (tanh) 16 (the wider nets reach exactness in far fewer steps than GRU-8), larger linear
    nets (4 to `max_linear`: delay lines such as Prev5 or Sum_Last7 need them) and MLP readouts,
    then GRU-8 and GRU-32. Ordered by cost as well as
    size: with more than 20 input symbols (a finite machine would be large, the one-hot input
    wide) the cheap larger linear-readout nets come right after sizes 1-3, before any MLP readout
    and any nonlinear net.
    """
    task = get_task(task)
    n_sym = len(task.alphabet)
    encodings = ["scalar"] + (["onehot"] if 3 <= n_sym <= 20 else [])
    nonlinear_enc = "onehot" if n_sym <= 20 else "scalar"

    def linear(
        sizes: range, seed: int, readout: str = "linear", biases=(False, True), onehot_sizes: Sequence[int] = ()
    ) -> Iterator[RNNSpec]:
        for enc in encodings:
            # one-hot inputs carry their own offset: no bias, and no second pass for a bias-only call
            for bias in biases if enc == "scalar" else (False,) * (False in biases):
                for d in sizes if enc == "scalar" else (onehot_sizes or sizes[:2]):
                    yield RNNSpec("linear", d, readout, enc, "mse", seed, bias)

    def nonlinear(seed: int) -> Iterator[RNNSpec]:
        # a tiny GRU first (it suffices for 2-4 state machines), then the widths that train fast
        yield RNNSpec("gru", 4, "linear", nonlinear_enc, "ce", seed)
        yield RNNSpec("gru", 16, "linear", nonlinear_enc, "ce", seed)
        yield RNNSpec("lstm", 8, "linear", nonlinear_enc, "ce", seed)
        yield RNNSpec("tanh", 16, "linear", nonlinear_enc, "ce", seed)

    for seed in seeds:
        yield from linear(range(1, 4), seed)
        if n_sym > 20:
            # many symbols: a delay line (Sum_Last7, Prev5) or a physics state needs a larger linear
            # state; those nets cost ~1 s when they cannot fit (the loss rules stop them by step 500),
            # the MLP readouts cost up to 30 s each, so the cheap ones come first
            yield from linear(range(4, max_linear + 1), seed, biases=(False,))
            yield from linear(range(4, 6), seed, biases=(True,))
        # one-hot MLP readouts: sizes 2 and 3 first (per-symbol count differences, Majority_0_2 and
        # Majority_0_3), then 1 and 4 with the larger MLP nets below
        yield from linear(range(1, 3), seed, "mlp", onehot_sizes=(2, 3))
        if n_sym <= 20:  # a finite machine over few symbols: small nonlinear nets before larger linear ones
            yield from nonlinear(seed)
            yield from linear(range(4, max_linear + 1), seed, biases=(False,))
            yield from linear(range(4, 6), seed, biases=(True,))
        yield from linear(range(3, 5), seed, "mlp", onehot_sizes=(1, 4))
        if n_sym > 20:
            yield from nonlinear(seed)
        yield RNNSpec("gru", 8, "linear", nonlinear_enc, "ce", seed)
        yield RNNSpec("gru", 32, "linear", nonlinear_enc, "ce", seed)


def train_rnn(
    task: Task | str,
    spec: RNNSpec,
    *,
    n_train: int = 4096,
    n_test: int = 2048,
    max_steps: int | None = None,
    batch: int = 256,
    lr: float | None = None,
    work_limit: float = 30.0,
    data_seed: int = 0,
    progress: bool = False,
) -> TrainedRNN:
    """Train one network on `task` until it is exact on held-out data, or its steps or `work_limit`
    work-seconds run out (MSE or CE loss). The work limit is checked every 100 steps, like exactness."""
    work_limit = check_work("work_limit", work_limit)
    task = get_task(task)
    max_steps = max_steps or (4000 if spec.family == "linear" else 3000)
    x_tr, y_tr = task.generate(n_train, seed=1000 + data_seed)  # [n, T, c]
    x_te, y_te = task.generate(n_test, seed=2000 + data_seed)
    f_tr, f_te = encode_inputs(task, x_tr, spec.encoding), encode_inputs(task, x_te, spec.encoding)
    x_scale = np.maximum(f_tr.abs().amax(dim=(0, 1)).numpy(), 1.0)  # [d_in]
    classes = np.unique(y_tr) if spec.loss == "ce" else None
    if classes is not None:
        d_out = task.n_outputs * len(classes)
        target = torch.as_tensor(np.searchsorted(classes, y_tr))  # [n, T, c_out]
        y_scale = 1.0
    else:
        d_out = task.n_outputs
        target = torch.as_tensor(y_tr, dtype=torch.float64)
        y_scale = float(max(np.abs(y_tr).max(), 1))
    model = MipsRNN(f_tr.shape[-1], d_out, spec, x_scale=x_scale, y_scale=y_scale)
    lr = lr or (1e-2 if spec.family == "linear" else 5e-3)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max_steps, eta_min=lr / 50)
    gen = torch.Generator().manual_seed(spec.seed)
    start, history, step = cpu_seconds(), [], 0
    meter = WorkMeter(spec, f_tr.shape[-1], d_out, f_tr.shape[1])

    def loss_fn(idx: torch.Tensor) -> torch.Tensor:
        meter.charge(len(idx), torch.is_grad_enabled())
        out = model(f_tr[idx])
        if classes is None:
            return ((out - target[idx]) / y_scale).pow(2).mean()
        logits = out.reshape(*out.shape[:2], task.n_outputs, len(classes))
        return torch.nn.functional.cross_entropy(logits.reshape(-1, len(classes)), target[idx].reshape(-1))

    def accuracy() -> float:
        meter.charge(len(f_te), False)
        with torch.no_grad():
            pred = _decode(model(f_te), classes, task.n_outputs)
        return float((pred == y_te).all(axis=(1, 2)).mean())

    with torch.no_grad():
        initial_loss = float(loss_fn(torch.arange(min(n_train, 512))))  # the yardstick for "not learning"
    acc, polished, out_of_time = 0.0, False, False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, desc=f"{task.name} {spec.label()}", leave=False)
    for step in range(1, max_steps + 1):
        idx = torch.randint(0, n_train, (batch,), generator=gen)
        loss = loss_fn(idx)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
        if step % 100 == 0:
            history.append(float(loss.detach()))
            acc = accuracy()
            if spec.readout == "mlp" and acc < 1.0 and not polished and history[-1] < 1e-3:
                polished = True  # Adam stalls near exact on an MLP readout: L-BFGS from here, once
                acc = _polish_lbfgs(model, loss_fn, n_train, accuracy, acc)
            if acc == 1.0 and (classes is not None or step >= 300):
                break
            if meter.work > work_limit:
                out_of_time = True
                break
            if spec.family == "linear" and step >= 300 and history[-1] > 0.3 * initial_loss:
                break
            if spec.family == "linear" and step >= 600 and history[-1] > 0.02 * initial_loss:
                if not (spec.readout == "mlp" and min(history[-2:]) < 0.7 * history[-4]):
                    break  # a linear net that cannot fit does not learn later (an MLP readout still
                    # falling by 30% per 300 steps may: Majority_0_3's linear-3 is exact at ~900)
            if spec.family == "linear" and step >= 500 and history[-1] > 1e-4 and spec.readout == "linear":
                break
    if bar is not None:
        bar.total = bar.n  # stopping early (exact, or given up) is not a failure: no red bar in notebooks
        bar.close()
    if spec.family == "linear" and history and history[-1] < 1e-3:
        # reach the precision rounding needs, and beyond: the lattice reads integer weights off an
        # exact net only when its loss is near zero, not merely below the rounding threshold
        acc = _polish_lbfgs(model, loss_fn, n_train, accuracy, acc)
    return TrainedRNN(task, spec, model, classes, acc, step, cpu_seconds() - start, history, out_of_time, meter.work,
                      meter.passes)


def _polish_lbfgs(model: MipsRNN, loss_fn, n_train: int, accuracy, acc: float, target: float = 1e-14) -> float:
    """Full-batch L-BFGS on a linear net whose loss is already small (the paper's MSE, to high precision).

    Stops at loss `target` or when a round no longer improves; an exact net that the polish would
    make inexact is restored.
    """
    idx = torch.arange(min(n_train, 1024))
    backup = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=50,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-15,  # the defaults stop at once: an exact net's gradients are already ~1e-7
        tolerance_change=1e-20,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn(idx)
        loss.backward()
        return loss

    with torch.no_grad():
        best = float(loss_fn(idx))
    for _ in range(6):
        if best < target:
            break
        opt.step(closure)
        with torch.no_grad():
            now = float(loss_fn(idx))
        if not now < best:
            break  # no progress at all
        slow, best = now > 0.5 * best, now
        if slow and accuracy() == 1.0:
            break  # exact, and further rounds gain little
    new_acc = accuracy()
    if new_acc < acc:
        model.load_state_dict(backup)
        return acc
    return new_acc
