"""Controls for steering claims: equal-norm random directions, and behaviour against fluency cost.

A steering vector added at the size of a typical activation moves the model a long way, so a
behaviour that changes may change only because the model was pushed at all. Two controls separate
the direction from the push: the same sweep with random directions of the vector's norm (a push
of the same size in no chosen direction), and the behaviour read at equal fluency cost (Δ bits per
character on neutral text), not at equal multiplier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from workbench.analysis.steering.evaluation import SteeringSweep, multiplier_sweep
from workbench.analysis.steering.vectors import SteeringVector

if TYPE_CHECKING:
    from workbench.models.protocol import HookedModel

__all__ = ["SteeringTradeoff", "effect_at_cost", "equal_norm_random", "steering_tradeoff"]


def equal_norm_random(vector: SteeringVector, n: int = 8, seed: int = 0) -> list[SteeringVector]:
    """`n` seeded Gaussian directions at the vector's hook with its norm and reference norm."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of random directions, got {n!r}")
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        direction = torch.randn(vector.vector.shape, generator=generator, dtype=torch.float32)
        direction = direction.to(vector.vector.dtype) * (vector.norm / float(direction.norm()))
        out.append(replace(vector, vector=direction, label=f"random {i} ({vector.label or vector.hook})",
                           pair_cosines=None, separation=float("nan")))
    return out


def effect_at_cost(sweep: SteeringSweep, cost: float, column: str = "delta_bpc", sign: int = 1) -> float:
    """The behaviour's change from multiplier 0 where the sweep's fluency cost first reaches `cost`.

    Walks the multipliers away from 0 (upward for `sign` = 1, downward for -1) and interpolates
    linearly in the segment where `column` crosses `cost`; if it never does, the change at the
    farthest multiplier (the cost stayed lower)."""
    if sign not in (1, -1):
        raise ValueError(f"sign must be 1 or -1, got {sign!r}")
    if column not in sweep.table:
        raise KeyError(f"the sweep has no {column!r} column: give multiplier_sweep a neutral_text")
    t = sweep.table[sweep.table.multiplier * sign >= 0]
    t = t.reindex(t.multiplier.abs().sort_values().index)
    if t.empty or float(t.multiplier.iloc[0]) != 0.0:
        raise ValueError("effect_at_cost needs the sweep to include multiplier 0")
    costs, behaviour = t[column].to_numpy(), t.behaviour.to_numpy()
    for k in range(1, len(t)):
        if costs[k] >= cost:
            step = costs[k] - costs[k - 1]
            frac = 1.0 if step <= 0 else float(np.clip((cost - costs[k - 1]) / step, 0.0, 1.0))
            return float(behaviour[k - 1] + frac * (behaviour[k] - behaviour[k - 1]) - behaviour[0])
    return float(behaviour[-1] - behaviour[0])


@dataclass
class SteeringTradeoff:
    """One vector's sweep beside the sweeps of equal-norm random directions, on the same prompts."""

    sweep: SteeringSweep
    random: list[SteeringSweep]

    @property
    def table(self) -> pd.DataFrame:
        """Long table: direction ("vector" or "random i"), multiplier, behaviour, delta_bpc, kl."""
        parts = [self.sweep.table.assign(direction="vector")]
        parts += [s.table.assign(direction=f"random {i}") for i, s in enumerate(self.random)]
        return pd.concat(parts, ignore_index=True)

    def at_cost(self, cost: float, sign: int = 1) -> dict[str, Any]:
        """The vector's behaviour change at fluency cost `cost` (Δ bpc) beside the random
        directions' mean and largest |change| there: the direction beats the push when its
        change is beyond every random one's."""
        random = np.array([effect_at_cost(s, cost, sign=sign) for s in self.random])
        return {"cost": cost, "vector": effect_at_cost(self.sweep, cost, sign=sign),
                "random_mean": float(random.mean()), "random_max_abs": float(np.abs(random).max()),
                "n_random": len(random)}


def steering_tradeoff(
    model: HookedModel, vector: SteeringVector, multipliers: Sequence[float], prompts: Sequence[str],
    targets: str | None = None, *, neutral_text: str, n_random: int = 8, seed: int = 0,
    random_multipliers: Sequence[float] | None = None, **sweep_kwargs: Any,
) -> SteeringTradeoff:
    """Sweep `vector` and `n_random` equal-norm random directions (over `random_multipliers`,
    default the same), each with its behaviour on `prompts` and its fluency cost on
    `neutral_text` (which is required)."""
    if not isinstance(neutral_text, str) or len(neutral_text) < 2:
        raise ValueError("steering_tradeoff needs neutral_text (two or more characters) to measure the cost")
    label = sweep_kwargs.pop("label", "") or vector.label or vector.hook
    main = multiplier_sweep(model, vector, multipliers, prompts, targets, neutral_text=neutral_text,
                            label=label, **sweep_kwargs)
    others = multipliers if random_multipliers is None else random_multipliers
    random = [multiplier_sweep(model, r, others, prompts, targets, neutral_text=neutral_text,
                               label=r.label, **sweep_kwargs)
              for r in equal_norm_random(vector, n_random, seed)]
    return SteeringTradeoff(main, random)
