"""The budget MIPS searches are counted in: work-seconds, a deterministic estimate of training cost.

A budget on a clock (wall or CPU) stops training at a step that depends on the machine and its load,
so the same seeded search gives different nets on different workers, and a fan-out could not equal
the serial run. Work-seconds count what the training did instead: every batched pass through a net
(T recurrence steps of `batch` sequences, forward only or forward and backward) is charged by a fitted
cost model, so one work-second is about one CPU second of one core of the reference machine (the 2-core
VM the published tables ran on; `benchmarks/calibrate_mips_work.py` fits the constants and prints how
close the model comes), and the same search stops at the same step on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from workbench.analysis.mips.rnn import D_MLP, RNNSpec

__all__ = ["COSTS", "PassCosts", "WorkMeter", "check_work", "pass_cost", "per_position_work"]


@dataclass(frozen=True)
class PassCosts:
    """Fitted seconds of the reference machine: per recurrence step (Python and dispatch overhead, per
    family) and per multiply-add of a batched step (the arithmetic), forward-only and forward+backward."""

    step_forward: dict[str, float]  # family -> s per recurrence step, no gradient
    step_backward: dict[str, float]  # family -> s per recurrence step, forward and backward
    flop_forward: float  # s per multiply-add, no gradient
    flop_backward: float  # s per multiply-add, forward and backward
    output_forward: float  # s per output unit per position (the loss or decoding over it), no gradient
    output_backward: float  # s per output unit per position, forward and backward
    optimizer_step: float  # s per forward+backward pass beyond its steps: clipping, Adam, scheduler
    call: float  # s per training call: data generation, model set-up


# fitted by benchmarks/calibrate_mips_work.py on the reference machine (torch 2.13.0+cpu, one thread);
# how close they come: benchmarks/mips_work_calibration.md. They fit the search's mix of passes only.
COSTS = PassCosts(
    step_forward={"linear": 1.06e-2, "tanh": 1.94e-2, "gru": 5.10e-3, "lstm": 4.37e-2},
    step_backward={"linear": 2.76e-5, "tanh": 0.0, "gru": 3.99e-4, "lstm": 0.0},
    flop_forward=0.0,
    flop_backward=5.05e-10,
    output_forward=1.45e-7,
    output_backward=0.0,
    optimizer_step=0.0,
    call=0.242,
)


def check_work(name: str, value: object, finite: bool = False) -> float:
    """`value` as a positive number of work-seconds (infinity too unless `finite`), else a ValueError
    naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or (
        finite and not math.isfinite(value)
    ):
        raise ValueError(f"{name} must be a positive number of work-seconds{', and finite' if finite else ''}, "
                         f"got {value!r}")
    return float(value)


def per_position_work(spec: RNNSpec, d_input: int, d_output: int, d_mlp: int = D_MLP) -> int:
    """Multiply-adds of one sequence at one position: the recurrence's matrices and the readout."""
    gates = {"gru": 3, "lstm": 4}.get(spec.family, 1)
    d = spec.d_hidden
    readout = d * d_output if spec.readout == "linear" else d * d_mlp + d_mlp * d_mlp + d_mlp * d_output
    return gates * d * (d + d_input) + readout


def pass_cost(
    spec: RNNSpec, d_input: int, d_output: int, seq_len: int, batch: int, backward: bool, costs: PassCosts = COSTS
) -> float:
    """Work-seconds of one batched pass of `batch` sequences of length `seq_len`."""
    step = (costs.step_backward if backward else costs.step_forward)[spec.family]
    flop = costs.flop_backward if backward else costs.flop_forward
    output = costs.output_backward if backward else costs.output_forward
    fixed = costs.optimizer_step if backward else 0.0
    return fixed + seq_len * (step + batch * (per_position_work(spec, d_input, d_output) * flop + d_output * output))


class WorkMeter:
    """Counts the passes one training run makes and what they cost in work-seconds."""

    def __init__(self, spec: RNNSpec, d_input: int, d_output: int, seq_len: int, costs: PassCosts = COSTS):
        self.spec, self.d_input, self.d_output, self.seq_len, self.costs = spec, d_input, d_output, seq_len, costs
        self.passes: dict[tuple[bool, int], int] = {}  # (backward, batch) -> passes made

    def charge(self, batch: int, backward: bool) -> None:
        """One pass of `batch` sequences (forward only, or forward and backward)."""
        self.passes[(backward, batch)] = self.passes.get((backward, batch), 0) + 1

    @property
    def work(self) -> float:
        """Work-seconds so far: the per-call cost and every pass made (a handful of kinds)."""
        return self.costs.call + sum(
            count * pass_cost(self.spec, self.d_input, self.d_output, self.seq_len, batch, backward, self.costs)
            for (backward, batch), count in self.passes.items()
        )
