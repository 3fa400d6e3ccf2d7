"""Fit the MIPS work-second cost model (`workbench/analysis/mips/work.py`) to measured CPU seconds.

Trains the search's own candidates (one of each kind: family, readout, encoding, size) on a spread of
tasks (short and long sequences, few and many symbols, regression and classification), each under a
small work limit, counts the passes each run made and times the whole call (data generation
included, as the search pays it), and fits the cost constants by non-negative least squares. Prints
how close the current constants, constants fitted on half the runs (tested on the other half) and
constants fitted on all runs come to the clock; paste the last into `work.py`. Within the search's
own mix of passes the fit predicts well; a constant on its own (forward against backward, per family)
is not identified, since every run evaluates every 100 steps.

    OMP_NUM_THREADS=1 python benchmarks/calibrate_mips_work.py [--limit 2] [--tasks 14]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.optimize import nnls

from workbench.analysis.mips.rnn import FAMILIES
from workbench.analysis.mips.tasks import get_task
from workbench.analysis.mips.training import TrainedRNN, candidate_specs, train_rnn
from workbench.analysis.mips.work import COSTS, PassCosts, per_position_work

TASKS = ("Parity_All", "Add_Mod_3", "Sum_Last2", "Majority_0_2", "Prev5", "Sum_Last7", "Base_3_Addition",
         "Max_Seen", "Bit_Palindrome", "Dithering", "Abs_Diff", "Evens_Counter", "Div_3", "Newton_Freebody")


def features(trained: TrainedRNN) -> np.ndarray:
    """The run's cost drivers, in the order `pack` lists the constants."""
    row = np.zeros(2 * len(FAMILIES) + 6)
    spec, model = trained.spec, trained.model
    fam, seq_len = FAMILIES.index(spec.family), trained.task.seq_len
    ppw = per_position_work(spec, model.d_input, model.d_output)
    for (backward, batch), count in trained.passes.items():
        row[fam + len(FAMILIES) * backward] += count * seq_len
        row[2 * len(FAMILIES) + backward] += count * seq_len * batch * ppw
        row[2 * len(FAMILIES) + 2 + backward] += count * seq_len * batch * model.d_output
        row[2 * len(FAMILIES) + 4] += count * backward
    row[-1] = 1.0
    return row


def pack(c: PassCosts) -> np.ndarray:
    return np.array([*(c.step_forward[f] for f in FAMILIES), *(c.step_backward[f] for f in FAMILIES),
                     c.flop_forward, c.flop_backward, c.output_forward, c.output_backward, c.optimizer_step, c.call])


def fit(a: np.ndarray, b: np.ndarray) -> PassCosts:
    """Non-negative least squares of CPU seconds `b` on cost drivers `a` (columns scaled to 1 first)."""
    scale = np.where(a.max(axis=0) > 0, a.max(axis=0), 1.0)
    x = nnls(a / scale, b)[0] / scale
    n = len(FAMILIES)
    return PassCosts(
        step_forward={f: float(v) for f, v in zip(FAMILIES, x[:n], strict=True)},
        step_backward={f: float(v) for f, v in zip(FAMILIES, x[n : 2 * n], strict=True)},
        flop_forward=float(x[2 * n]),
        flop_backward=float(x[2 * n + 1]),
        output_forward=float(x[2 * n + 2]),
        output_backward=float(x[2 * n + 3]),
        optimizer_step=float(x[2 * n + 4]),
        call=float(x[-1]),
    )


def report(title: str, a: np.ndarray, b: np.ndarray, costs: PassCosts, labels: list[str]) -> None:
    pred = a @ pack(costs)
    ratio = pred / b
    print(f"{title}: {len(b)} training runs, {b.sum():.1f} CPU-s measured, {pred.sum():.1f} work-s "
          f"(total ratio {pred.sum() / b.sum():.3f}); per-run work/CPU ratio median {np.median(ratio):.3f}, "
          f"10th-90th percentile {np.percentile(ratio, 10):.3f}-{np.percentile(ratio, 90):.3f}")
    for i in np.argsort(np.abs(np.log(ratio)))[-3:]:
        print(f"  furthest: {labels[i]}: {b[i]:.2f} CPU-s, {pred[i]:.2f} work-s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=2.0, help="work-seconds per training run")
    parser.add_argument("--tasks", type=int, default=len(TASKS), help="how many of the spread of tasks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, seconds, labels = [], [], []
    for name in TASKS[: args.tasks]:
        task = get_task(name)
        # one candidate of each kind the search tries (family, readout, encoding, size), seed 0
        kinds = {(s.family, s.readout, s.encoding, s.d_hidden): s for s in candidate_specs(task, (0,))}
        for spec in kinds.values():
            t0 = time.process_time()  # the whole call, data generation included, as the search pays it
            trained = train_rnn(task, spec, work_limit=args.limit)
            seconds.append(time.process_time() - t0)
            rows.append(features(trained))
            labels.append(f"{name} {spec.label()}")
    a, b = np.array(rows), np.array(seconds)
    report("current constants (work.py)", a, b, COSTS, labels)
    half = fit(a[::2], b[::2])
    report("fitted on the even runs, on the odd ones (held out)", a[1::2], b[1::2], half, labels[1::2])
    fitted = fit(a, b)
    report("fitted on all runs", a, b, fitted, labels)
    print("fitted:", fitted)


if __name__ == "__main__":
    main()
